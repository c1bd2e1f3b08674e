"""correlator: ranked, calibrated, evidence-backed probable causes for an alert."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
