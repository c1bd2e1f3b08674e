"""``correlator serve``: run the Alertmanager webhook receiver.

The main CLI mounts :data:`serve`; ``python -m correlator.service`` runs it alone.
Secrets are read from environment variables or files, never from options.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import click

from correlator.config import Settings, load_settings
from correlator.errors import ConfigError, CorrelatorError
from correlator.model import Alert
from correlator.service.auth import Authenticator, read_secret
from correlator.service.notify import NotifySettings
from correlator.service.payload import Limits
from correlator.service.worker import InvestigateFn, WorkerSettings

__all__ = ["engine_investigator", "load_investigator", "main", "serve"]

log = logging.getLogger("correlator.service")


def engine_investigator(settings: Settings) -> InvestigateFn:
    """The real investigation: the engine over the configured sources.

    Sources are built once and shared by the worker threads: they are
    immutable and keep no per-call state, and each investigation reads its own
    view of them, bound to its alert.
    """
    from correlator.api import build_sources, catalog_for
    from correlator.engine import investigate

    sources = build_sources(settings)
    catalog = catalog_for(settings)

    def run(alert: Alert) -> Any:
        # Binding never changes the shared sources (a bundle backend gives a view
        # of the alert's bundle), so concurrent investigations cannot mix.
        return investigate(alert, sources.bind(alert), settings, catalog)

    return run


def load_investigator(spec: str, settings: Settings) -> InvestigateFn:
    """Import ``module:factory`` and call ``factory(settings)`` for the investigate callable."""
    return find_factory(spec)(settings)


def find_factory(spec: str) -> Callable[[Settings], InvestigateFn]:
    """Import ``module:factory`` and return the factory (not called yet)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--investigator {spec!r}: write module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"--investigator {spec!r}: cannot import {module_name} ({err})") from None
    factory: Callable[[Settings], InvestigateFn] | None = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"--investigator {spec!r}: {module_name} has no callable {attr}")
    return factory


def _authenticator(
    no_auth: bool,
    token_env: str,
    token_file: str | None,
    basic_user: str | None,
    password_env: str,
    password_file: str | None,
) -> Authenticator:
    token = read_secret(token_env, token_file, "token")
    password = read_secret(password_env, password_file, "password") if basic_user else None
    if basic_user and password is None:
        raise ConfigError(
            f"--basic-user {basic_user} needs a password: set {password_env} or --password-file"
        )
    auth = Authenticator(token=token, username=basic_user, password=password)
    if auth.open and not no_auth:
        raise ConfigError(
            f"no credentials configured: set {token_env} (bearer token) or --token-file, or "
            "--basic-user with a password; pass --no-auth to accept anyone (local testing only)"
        )
    if not auth.open and no_auth:
        raise ConfigError("--no-auth contradicts the credentials that are set; drop one of them")
    return auth


@click.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (as for `correlator investigate`); also CORRELATOR_CONFIG.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9097, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--store",
    "store_target",
    envvar="CORRELATOR_SERVE_STORE",
    default="correlator-store.db",
    show_default=True,
    help="SQLite file path, or a postgresql:// URL to share work between replicas "
    "(also CORRELATOR_SERVE_STORE).",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Investigations run at once by this replica.",
)
@click.option(
    "--deadline",
    default=None,
    type=click.FloatRange(min=0.1),
    help="Seconds one investigation may take [default: the config's deadline + 30].",
)
@click.option(
    "--lease",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds before work of a dead replica is taken over.",
)
@click.option(
    "--poll",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds between looks for work from other replicas.",
)
@click.option("--max-attempts", default=3, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--isolation",
    type=click.Choice(["process", "thread"]),
    default="process",
    show_default=True,
    help="Run investigations in worker processes (the webhook stays fast while the engine "
    "works) or in threads of the serving process.",
)
@click.option(
    "--retention-days",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Delete finished investigations received longer ago than this (0 keeps all).",
)
@click.option(
    "--max-connections",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Open connections at once; more are answered 503 with Retry-After "
    "(capped below the open-files limit).",
)
@click.option(
    "--max-pending",
    default=256,
    show_default=True,
    type=click.IntRange(1),
    help="Webhook requests handled at once; more are answered 503 with Retry-After.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a request's headers may take to arrive (then 408 and close).",
)
@click.option(
    "--body-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a webhook body may take to arrive in full (then 408).",
)
@click.option("--replica-id", default=None, help="This replica's name in leases and logs.")
@click.option(
    "--token-env",
    default="CORRELATOR_SERVE_TOKEN",
    show_default=True,
    help="Variable holding the bearer token.",
)
@click.option(
    "--token-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="File holding the bearer token.",
)
@click.option("--basic-user", default=None, help="Username for basic auth.")
@click.option(
    "--password-env",
    default="CORRELATOR_SERVE_PASSWORD",
    show_default=True,
    help="Variable holding the basic-auth password.",
)
@click.option("--password-file", default=None, type=click.Path(dir_okay=False))
@click.option("--no-auth", is_flag=True, help="Accept requests without credentials (testing).")
@click.option(
    "--max-body",
    default=4 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1024),
    help="Bytes accepted in one webhook request.",
)
@click.option(
    "--max-alerts",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Alerts accepted in one webhook request.",
)
@click.option(
    "--notify-url",
    default=None,
    envvar="CORRELATOR_SERVE_NOTIFY_URL",
    help="POST each finished investigation here (also CORRELATOR_SERVE_NOTIFY_URL).",
)
@click.option(
    "--notify-format", type=click.Choice(["json", "slack"]), default="json", show_default=True
)
@click.option("--public-url", default="", help="URL of this service, for links in notifications.")
@click.option(
    "--otlp-endpoint",
    default=None,
    envvar="CORRELATOR_SERVE_OTLP_ENDPOINT",
    help="OTLP/HTTP endpoint for traces, e.g. http://tempo:4318 (off when unset).",
)
@click.option(
    "--investigator",
    default="correlator.service.cli:engine_investigator",
    show_default=True,
    help="module:factory returning the investigate callable.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    config_path: str | None,
    host: str,
    port: int,
    store_target: str,
    workers: int,
    deadline: float | None,
    lease: float,
    poll: float,
    max_attempts: int,
    isolation: str,
    retention_days: float,
    max_connections: int,
    max_pending: int,
    header_timeout: float,
    body_timeout: float,
    replica_id: str | None,
    token_env: str,
    token_file: str | None,
    basic_user: str | None,
    password_env: str,
    password_file: str | None,
    no_auth: bool,
    max_body: int,
    max_alerts: int,
    notify_url: str | None,
    notify_format: str,
    public_url: str,
    otlp_endpoint: str | None,
    investigator: str,
    log_level: str,
) -> None:
    """Receive Alertmanager webhooks and investigate every alert in the background."""
    from correlator.service.app import ServiceConfig, create_app
    from correlator.service.isolate import ProcessSpec
    from correlator.service.obs import SECRETS, configure_logging, make_tracer_provider
    from correlator.service.server import ConnectionLimits, make_server, raise_fd_limit
    from correlator.service.store import open_store, url_secrets

    SECRETS.secrets.update(url_secrets(store_target))
    configure_logging(log_level)
    open_files = raise_fd_limit()
    # Room for the store, the worker pipes and the backends' own connections.
    connections = max(1, min(max_connections, open_files - 64 - 8 * workers))
    if connections < max_connections:
        log.warning(
            "--max-connections lowered to fit the open-files limit",
            extra={"asked": max_connections, "used": connections, "open_files": open_files},
        )
    settings = load_settings(config_path)
    auth = _authenticator(no_auth, token_env, token_file, basic_user, password_env, password_file)
    replica = replica_id or f"{socket.gethostname()}-{os.getpid()}"
    try:
        notify = NotifySettings(notify_url, notify_format) if notify_url else None
    except ValueError as err:
        raise ConfigError(f"--notify-url: {err}") from None
    config = ServiceConfig(
        store=store_target,
        auth=auth,
        workers=WorkerSettings(
            concurrency=workers,
            deadline=deadline if deadline is not None else settings.deadline + 30.0,
            lease=lease,
            poll=poll,
            max_attempts=max_attempts,
            owner=replica,
            retention_days=retention_days,
        ),
        limits=Limits(max_alerts=max_alerts),
        max_body=max_body,
        notify=notify,
        public_url=public_url,
        body_timeout=body_timeout,
        max_pending=max_pending,
    )
    investigate: InvestigateFn | ProcessSpec
    if isolation == "process":
        find_factory(investigator)  # a wrong name fails here, not in every child
        investigate = ProcessSpec(investigator, settings)
    else:
        investigate = load_investigator(investigator, settings)
    # Opened here, so an unreachable store is one clear error, not a traceback.
    store = open_store(store_target)
    provider = make_tracer_provider(otlp_endpoint, replica=replica)
    app = create_app(config, investigate, store=store, tracer_provider=provider)
    server = make_server(
        app,
        host,
        port,
        ConnectionLimits(
            max_connections=connections,
            header_timeout=header_timeout,
            retry_after=config.retry_after,
        ),
        graceful=config.shutdown_grace,
    )
    log.info(
        "listening",
        extra={
            "host": host,
            "port": port,
            "replica": replica,
            "auth": "none" if auth.open else "required",
            "isolation": isolation,
            "max_connections": connections,
        },
    )
    server.run()
    if not server.started:
        raise CorrelatorError(
            f"the service did not start on {host}:{port}; see the log above (port in use? "
            "store unreachable?)"
        )


def main(argv: list[str] | None = None) -> int:
    """Run ``serve`` alone (``python -m correlator.service``)."""
    try:
        serve.main(args=argv, prog_name="correlator serve", standalone_mode=False)
    except CorrelatorError as err:
        click.echo(f"error: {err}", err=True)
        return err.exit_code
    except click.ClickException as err:
        err.show()
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
