"""The Alertmanager webhook receiver behind ``correlator serve``.

Modules: :mod:`~correlator.service.payload` (webhook validation),
:mod:`~correlator.service.store` (durable store, leases),
:mod:`~correlator.service.worker` (background investigations),
:mod:`~correlator.service.auth`, :mod:`~correlator.service.notify`,
:mod:`~correlator.service.obs` (metrics, traces, logs),
:mod:`~correlator.service.app` (the ASGI app) and
:mod:`~correlator.service.cli` (the ``serve`` command).
"""

from __future__ import annotations

from correlator.service.app import ServiceConfig, create_app
from correlator.service.auth import Authenticator
from correlator.service.store import open_store
from correlator.service.worker import InvestigateFn, WorkerSettings

__all__ = [
    "Authenticator",
    "InvestigateFn",
    "ServiceConfig",
    "WorkerSettings",
    "create_app",
    "open_store",
]
