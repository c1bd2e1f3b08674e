"""Calibration: JSON round trip, fitting, monotonicity, and the shipped file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from correlator.calibration import FEATURES, Calibration, fit, load_calibration
from correlator.errors import ConfigError


def test_fit_learns_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for _ in range(600):
        pattern = float(rng.uniform())
        root = float(rng.uniform())
        p = 1 / (1 + np.exp(-(6 * pattern + 3 * root - 5)))
        rows.append({"pattern": pattern, "root": root})
        labels.append(int(rng.uniform() < p))
    cal = fit(rows, labels)
    assert cal.fitted_on == 600
    coef = dict(zip(cal.features, cal.coef, strict=True))
    assert coef["pattern"] > 1.0 and coef["root"] > 0.5
    # Calibrated on its own data: mean prediction close to the base rate.
    assert abs(float(cal.predict(rows).mean()) - np.mean(labels)) < 0.03
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.to_json()))
    again = load_calibration(path)
    assert np.allclose(again.predict(rows[:5]), cal.predict(rows[:5]), atol=1e-4)


def test_bad_files_and_degenerate_labels() -> None:
    with pytest.raises(ConfigError, match="refit"):
        Calibration.from_json({"coef": [1.0]})
    with pytest.raises(ConfigError, match="does not exist"):
        load_calibration("/nonexistent/cal.json")
    with pytest.raises(ValueError, match="both right and wrong"):
        fit([{"root": 1.0}], [1])


def test_shipped_calibration_is_sane() -> None:
    cal = load_calibration()
    assert set(cal.features) == set(FEATURES)
    weak = {"pattern": 0.1, "root": 0.1}
    strong = {
        "pattern": 0.95,
        "root": 0.9,
        "root_top": 1.0,
        "root_rank_inv": 1.0,
        "root_margin": 0.4,
        "strength": 0.9,
    }
    p = cal.predict([weak, strong])
    assert 0.0 <= p[0] < p[1] <= 1.0
    assert cal.predict([]).size == 0


def test_second_stage_rewards_a_clear_winner(tmp_path: Path) -> None:
    """Fitted with groups, the model learns that a candidate far above its rivals is
    more often right than the same logit in a close race; the stage survives JSON."""
    rng = np.random.default_rng(1)
    rows, labels, groups, keys = [], [], [], []
    for g in range(300):
        # Three candidates per investigation; the right one (if any) has the top score,
        # and it is right more often when it stands out.
        scores = sorted(rng.uniform(0, 1, 3), reverse=True)
        margin = scores[0] - scores[1]
        right_top = rng.uniform() < 0.2 + 0.75 * min(1.0, margin / 0.4)
        for i, sc in enumerate(scores):
            rows.append({"pattern": float(sc)})
            labels.append(int(i == 0 and right_top))
            groups.append(g)
            keys.append(("svc", f"cause{i}"))
    cal = fit(rows, labels, groups=groups, keys=keys)
    assert cal.stage2 is not None and cal.stage2[1] > 0.0
    close = cal.predict([{"pattern": 0.8}, {"pattern": 0.78}], keys=["a", "b"])[0]
    clear = cal.predict([{"pattern": 0.8}, {"pattern": 0.2}], keys=["a", "b"])[0]
    assert clear > close + 0.1
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(cal.to_json()))
    again = load_calibration(path)
    assert again.stage2 is not None
    assert np.allclose(
        again.predict(rows[:3], keys[:3]), cal.predict(rows[:3], keys[:3]), atol=1e-4
    )
    with pytest.raises(ConfigError, match="stage2"):
        Calibration.from_json({**cal.to_json(), "stage2": [1.0, "x"]})


def test_every_labeled_data_set_weighs_as_much_as_the_largest() -> None:
    from correlator.calibration import balanced_weights

    datasets = ["wild:a"] * 4 + ["wild:b"] * 2 + ["petshop:high"] * 3 + ["generated"] * 2
    groups = ["w1", "w1", "w2", "w3", "w4", "w4", "p1", "p1", "p2", "g1", "g2"]
    w = balanced_weights(datasets, groups)
    # 4 wild investigations, 2 PetShop ones: each PetShop row counts twice; generated once.
    assert list(w) == [1.0] * 6 + [2.0] * 3 + [1.0] * 2
    # Weighted, the small set moves the fit: its candidates' confidences follow it.
    rows = [{"root": 1.0}] * 20 + [{"root": 1.0, "coarse": 1.0}] * 4
    labels = [1] * 16 + [0] * 4 + [0, 0, 0, 1]
    sets = ["wild:x"] * 20 + ["petshop:y"] * 4
    cases = [f"w{i}" for i in range(20)] + [f"p{i}" for i in range(4)]
    plain = fit(rows, labels)
    balanced = fit(rows, labels, weights=balanced_weights(sets, cases))
    coarse = {"root": 1.0, "coarse": 1.0}
    assert balanced.predict([coarse])[0] < plain.predict([coarse])[0]
