"""Run one instance of one shop service: ``python -m correlator.demo.shop`` (settings from
``DEMO_*`` variables, see :class:`correlator.demo.shop.runtime.Env`)."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from correlator.demo import telemetry
from correlator.demo.shop import SERVICES
from correlator.demo.shop.runtime import env


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    """Set up telemetry, build the service's app and serve it on 127.0.0.1 until SIGTERM."""
    me = env()
    framework = SERVICES[me.service][0]
    telemetry.setup(
        service=me.service,
        instance=me.instance,
        version=me.version,
        otlp_dir=me.otlp_dir,
        metrics_port=me.metrics_port,
        otlp_endpoint=me.otlp_endpoint,
    )
    signal.signal(signal.SIGTERM, _stop)
    try:
        if framework == "starlette":
            import uvicorn

            from correlator.demo.shop.asgi_apps import make_app as asgi_app

            uvicorn.run(
                asgi_app(me), host="127.0.0.1", port=me.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=3,
            )  # fmt: skip
        else:
            from werkzeug.serving import make_server

            if framework == "flask":
                from correlator.demo.shop.flask_apps import make_app as flask_app

                app: Any = flask_app(me)
            else:
                from correlator.demo.shop.wsgi_apps import make_app as wsgi_app

                app = wsgi_app(me)
            make_server("127.0.0.1", me.port, app, threaded=True).serve_forever()
    finally:
        telemetry.shutdown()


if __name__ == "__main__":
    main()
