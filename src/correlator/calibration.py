"""Calibrated confidence: features of a candidate finding -> probability it is right.

"Right" means the right service *and* the right cause. The model is a
logistic regression over a few features (see :data:`FEATURES`), fitted by
``scripts/fit_calibration.py`` on generated, labeled scenarios and shipped as
plain JSON coefficients in ``correlator/data/calibration.json`` (no pickle).
A confidence of 0.8 should then be right about 80% of the time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from correlator.errors import ConfigError

__all__ = ["FEATURES", "Calibration", "fit", "load_calibration"]

#: Feature names, in model order.
FEATURES: tuple[str, ...] = (
    "root",
    "root_top",
    "root_rank_inv",
    "root_margin",
    "pattern",
    "unknown",
    "best_other_pattern",
    "service_patterns",
    "strength",
)


@dataclass(frozen=True)
class Calibration:
    """Logistic-regression coefficients over :data:`FEATURES`."""

    coef: tuple[float, ...]
    intercept: float
    features: tuple[str, ...] = FEATURES
    fitted_on: int = 0

    def predict(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Probabilities for feature rows (missing features count as 0)."""
        if not rows:
            return np.zeros(0)
        x = np.array([[float(r.get(f, 0.0)) for f in self.features] for r in rows])
        z = x @ np.asarray(self.coef) + self.intercept
        out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON file schema."""
        return {
            "model": "logistic",
            "features": list(self.features),
            "coef": [round(c, 6) for c in self.coef],
            "intercept": round(self.intercept, 6),
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "calibration") -> Calibration:
        """Parse the JSON schema, with a clear error when it does not fit."""
        try:
            feats = tuple(str(f) for f in data["features"])
            coef = tuple(float(c) for c in data["coef"])
            intercept = float(data["intercept"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{where}: not a calibration file ({exc}); refit with scripts/fit_calibration.py"
            ) from exc
        if len(feats) != len(coef) or not all(math.isfinite(c) for c in coef):
            raise ConfigError(f"{where}: features and coef differ in length or are not finite")
        return cls(coef, intercept, feats, int(data.get("fitted_on", 0)))


#: Used when no fitted file ships: hand-set, monotone in the obvious directions.
DEFAULT = Calibration(
    coef=(2.0, 1.0, 1.0, 1.5, 3.0, -0.5, -1.5, 0.2, 0.5),
    intercept=-3.5,
)


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The shipped calibration (or the file at ``path``); the default when none ships."""
    if path is not None:
        p = Path(path)
        try:
            return Calibration.from_json(json.loads(p.read_text(encoding="utf-8")), str(p))
        except FileNotFoundError:
            raise ConfigError(f"calibration file {p} does not exist") from None
    try:
        text = resources.files("correlator").joinpath("data/calibration.json").read_text("utf-8")
    except FileNotFoundError:
        return DEFAULT
    return Calibration.from_json(json.loads(text), "correlator/data/calibration.json")


def fit(rows: Sequence[Mapping[str, float]], labels: Sequence[int], c: float = 1.0) -> Calibration:
    """Fit the logistic model on feature rows and 0/1 labels (right or not)."""
    from sklearn.linear_model import LogisticRegression

    x = np.array([[float(r.get(f, 0.0)) for f in FEATURES] for r in rows])
    y = np.asarray(labels, dtype=int)
    if len(set(y.tolist())) < 2:
        raise ValueError("calibration needs both right and wrong candidates to fit")
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(x, y)
    return Calibration(
        coef=tuple(float(v) for v in model.coef_[0]),
        intercept=float(model.intercept_[0]),
        fitted_on=len(y),
    )
