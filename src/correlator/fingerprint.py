"""Alertmanager's alert fingerprint, computed as Alertmanager computes it.

Alertmanager identifies an alert by ``model.LabelSet.Fingerprint()`` from
prometheus/common: FNV-1a (64 bit) over the label names in sorted order, each
name and value followed by the separator byte 0xff, printed as 16 hex digits.
Computing it the same way means an id from a bundle still works after the
bundle's alerts are posted to a real Alertmanager.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["alert_fingerprint"]

_OFFSET64 = 14695981039346656037
_PRIME64 = 1099511628211
_MASK64 = (1 << 64) - 1
_SEPARATOR = 0xFF


def _add(h: int, data: bytes) -> int:
    for byte in data:
        h ^= byte
        h = (h * _PRIME64) & _MASK64
    return h


def alert_fingerprint(labels: Mapping[str, str]) -> str:
    """The 16-hex-digit fingerprint Alertmanager gives an alert with these labels."""
    h = _OFFSET64
    for name in sorted(labels):
        h = _add(h, name.encode("utf-8"))
        h = _add(h, bytes([_SEPARATOR]))
        h = _add(h, labels[name].encode("utf-8"))
        h = _add(h, bytes([_SEPARATOR]))
    return f"{h:016x}"
