"""A live demo shop: real services, real telemetry, real alerts, faults by flag; its recorder
(:mod:`.record`, `correlator demo record`) writes scenario bundles from it.

``correlator demo up`` starts, on 127.0.0.1 and without containers, a small
shop of Python services (:mod:`correlator.demo.shop`) instrumented with the
OpenTelemetry SDK, a PostgreSQL they query, a load generator, a Prometheus
that scrapes them and evaluates alerting rules, an Alertmanager that routes
the alerts to ``correlator serve``. ``correlator demo fault`` turns on one of
the faults in :mod:`correlator.demo.faults`, in the services' own code paths.

Layout of the state directory (``--state-dir``, default
``$CORRELATOR_DEMO_DIR`` or ``~/.local/state/correlator/demo``):

* ``state.json``: URLs, ports and PIDs of everything running (see :mod:`.state`).
* ``flags.json``: the faults active now; services and the load generator poll it.
* ``faults.jsonl``: the truth log: one line per injected fault, one more when cleared.
* ``otlp/<service>-<instance>.{traces,logs}.otlp.jsonl``: OTLP/JSON of each process.
* ``logs/``: each process's stdout and stderr.
"""

from __future__ import annotations

__all__ = ["FAULT_CAUSES"]

#: Fault kind -> the cause name the investigator should find.
FAULT_CAUSES: dict[str, str] = {
    "exception": "code_fault",
    "wrong_return": "code_fault",
    "latency": "network_delay",
    "cpu_hog": "cpu_saturation",
    "memory_leak": "memory_leak",
    "db_lock": "db_overload",
    "bad_deploy": "deployment",
    "traffic_spike": "traffic_spike",
    "dependency_down": "dependency_failure",
}
