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
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from correlator.errors import ConfigError

__all__ = [
    "FEATURES",
    "REGULARIZATION",
    "Calibration",
    "balanced_weights",
    "fit",
    "load_calibration",
    "rival_gap",
]

#: Feature names, in model order: generic features every finding has (see
#: :func:`correlator.rank.candidate_features`), none tied to a built-in pattern, so a
#: third-party pattern earns an honest confidence without editing this list.
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
    "pattern_top",
    "same_service_rival",
    "onset_first",
    "modalities",
    "evidence_kinds",
    "covers",
    "covered",
    "baseline",
    "crowd",
    "coarse",
    "late",
)


#: Inverse L2 strength of the logistic fit. Weaker regularization (C = 2 or 20) fits the
#: tuning sets' folds better (``scripts/calibration_cv.py``) but ranks the held-out wild
#: suite worse (root AC@1 0.69 at 0.5, 0.67 at 2, 0.65 at 20): the ranking comes first.
REGULARIZATION = 0.5


@dataclass(frozen=True)
class Calibration:
    """Logistic-regression coefficients over :data:`FEATURES`."""

    coef: tuple[float, ...]
    intercept: float
    features: tuple[str, ...] = FEATURES
    fitted_on: int = 0
    stage2: tuple[float, float, float] | None = None
    """``(a, b, c)``: the final probability is ``sigmoid(a*z + b*gap + c)``, where ``z``
    is the first stage's logit and ``gap`` how far it stands above the best rival
    candidate of the same investigation (a clear winner is more often right)."""

    def logits(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The first stage's log-odds for feature rows (missing features count as 0)."""
        if not rows:
            return np.zeros(0)
        x = np.array([[float(r.get(f, 0.0)) for f in self.features] for r in rows])
        out: np.ndarray = x @ np.asarray(self.coef) + self.intercept
        return out

    def predict(
        self, rows: Sequence[Mapping[str, float]], keys: Sequence[object] | None = None
    ) -> np.ndarray:
        """Probabilities for the candidate rows of *one* investigation.

        ``keys`` (one per row, e.g. ``(service, cause)``) say which rows are the
        same answer; the rival of a row is the best row with another key.
        """
        if not rows:
            return np.zeros(0)
        z = self.logits(rows)
        if self.stage2 is not None:
            a, b, c = self.stage2
            z = a * z + b * rival_gap(z, keys) + c
        out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        return out

    def to_json(self) -> dict[str, Any]:
        """The JSON file schema."""
        out: dict[str, Any] = {
            "model": "logistic",
            "features": list(self.features),
            "coef": [round(c, 6) for c in self.coef],
            "intercept": round(self.intercept, 6),
            "fitted_on": self.fitted_on,
        }
        if self.stage2 is not None:
            out["stage2"] = [round(v, 6) for v in self.stage2]
        return out

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
        stage2 = data.get("stage2")
        s2: tuple[float, float, float] | None = None
        if stage2 is not None:
            try:
                a, b, c = (float(v) for v in stage2)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: stage2 must be three numbers ({exc})") from exc
            s2 = (a, b, c)
        return cls(coef, intercept, feats, int(data.get("fitted_on", 0)), s2)


#: Used when no fitted file ships: hand-set, monotone in the obvious directions.
DEFAULT = Calibration(
    coef=(
        *(2.0, 1.0, 1.0, 1.5, 3.0, -0.5, -1.5, 0.2, 0.5),
        *(0.5, -1.0, 0.5, 0.5, 0.2, 0.0, -1.5, 1.0, -0.5, -0.5, -2.0),
    ),
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


def rival_gap(z: np.ndarray, keys: Sequence[object] | None = None) -> np.ndarray:
    """Per row: its logit minus the best logit among rows with a different key (10 if none)."""
    keys = list(range(len(z))) if keys is None else list(keys)
    out = np.full(len(z), 10.0)
    for i, k in enumerate(keys):
        other = [z[j] for j in range(len(z)) if keys[j] != k]
        if other:
            out[i] = min(10.0, float(z[i] - max(other)))
    return out


def balanced_weights(datasets: Sequence[str], groups: Sequence[object]) -> np.ndarray:
    """Per row, a weight that makes every labeled data set count as much as the largest.

    ``datasets``: each row's data set (``name`` or ``name:part``; ``generated`` rows
    keep weight 1); ``groups``: its investigation. A data set of fewer investigations
    (65 real incidents beside 300 generated ones) would otherwise be fitted as an
    afterthought, and its confidences would be the larger set's.
    """
    names = [str(d).split(":", 1)[0] for d in datasets]
    cases: dict[str, set[object]] = {}
    for name, g in zip(names, groups, strict=True):
        if name != "generated":
            cases.setdefault(name, set()).add(g)
    most = max((len(v) for v in cases.values()), default=1)
    per = {name: most / len(v) for name, v in cases.items()}
    return np.array([per.get(name, 1.0) for name in names], dtype=np.float64)


def fit(
    rows: Sequence[Mapping[str, float]],
    labels: Sequence[int],
    c: float = REGULARIZATION,
    groups: Sequence[object] | None = None,
    keys: Sequence[object] | None = None,
    weights: Sequence[float] | None = None,
) -> Calibration:
    """Fit the logistic model on feature rows and 0/1 labels (right or not).

    With ``groups`` (which investigation each row came from) and ``keys`` (which
    answer it names), a second stage is fitted on each row's logit and its gap
    to the best rival answer of the same investigation. ``weights``: per row (see
    :func:`balanced_weights`).
    """
    from sklearn.linear_model import LogisticRegression

    x = np.array([[float(r.get(f, 0.0)) for f in FEATURES] for r in rows])
    y = np.asarray(labels, dtype=int)
    if len(set(y.tolist())) < 2:
        raise ValueError("calibration needs both right and wrong candidates to fit")
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit(x, y, sample_weight=w)
    first = Calibration(
        coef=tuple(float(v) for v in model.coef_[0]),
        intercept=float(model.intercept_[0]),
        fitted_on=len(y),
    )
    if groups is None:
        return first
    z = first.logits(rows)
    gap = np.zeros(len(z))
    group_list = list(groups)
    key_list = list(keys) if keys is not None else list(range(len(z)))
    for g in set(group_list):
        idx = [i for i, gg in enumerate(group_list) if gg == g]
        gap[idx] = rival_gap(z[idx], [key_list[i] for i in idx])
    second = LogisticRegression(C=c, max_iter=2000)
    second.fit(np.column_stack([z, gap]), y, sample_weight=w)
    a, b = (float(v) for v in second.coef_[0])
    return replace(first, stage2=(a, b, float(second.intercept_[0])))
