"""correlator: ranked, calibrated, evidence-backed probable causes for an alert.

In a notebook::

    import correlator
    correlator.alerts()                     # what can be investigated
    inv = correlator.investigate("<id>")    # an Investigation, shown richly in Jupyter
    inv.findings[0], inv.anomalies_frame(), inv.plot_topology()

``correlator.investigate`` is :func:`correlator.notebook.investigate`: the
plain-data :class:`~correlator.model.Investigation` of
:func:`correlator.api.investigate`, with notebook methods (see
:mod:`correlator.notebook`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Alert", "Finding", "Investigation", "__version__", "alerts", "investigate"]

if TYPE_CHECKING:
    from correlator.api import alerts
    from correlator.model import Alert, Finding, Investigation
    from correlator.notebook import investigate


def __getattr__(name: str) -> Any:
    # Lazy, so `import correlator` stays cheap for the CLI and plugins.
    if name == "investigate":
        from correlator import notebook

        return notebook.investigate
    if name == "alerts":
        from correlator import api

        return api.alerts
    if name in ("Alert", "Finding", "Investigation"):
        from correlator import model

        return getattr(model, name)
    raise AttributeError(f"module 'correlator' has no attribute {name!r}")
