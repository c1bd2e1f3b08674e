"""The Alertmanager webhook receiver behind ``correlator serve``.

Modules: :mod:`~correlator.service.payload` (webhook validation),
:mod:`~correlator.service.store` (durable store, leases),
:mod:`~correlator.service.worker` (background investigations),
:mod:`~correlator.service.isolate` (worker processes),
:mod:`~correlator.service.server` (connection limits and timeouts),
:mod:`~correlator.service.auth`, :mod:`~correlator.service.notify`,
:mod:`~correlator.service.obs` (metrics, traces, logs),
:mod:`~correlator.service.app` (the ASGI app) and
:mod:`~correlator.service.cli` (the ``serve`` command).
"""

from __future__ import annotations

from correlator.service.app import ServiceConfig, create_app
from correlator.service.auth import Authenticator
from correlator.service.isolate import ProcessSpec
from correlator.service.server import ConnectionLimits, make_server
from correlator.service.store import open_store
from correlator.service.worker import InvestigateFn, WorkerSettings

__all__ = [
    "Authenticator",
    "ConnectionLimits",
    "InvestigateFn",
    "ProcessSpec",
    "ServiceConfig",
    "WorkerSettings",
    "create_app",
    "make_server",
    "open_store",
]
