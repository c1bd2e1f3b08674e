"""detect.series_index: what pandas' groupby indices give, from codes in one sort."""

from __future__ import annotations

import numpy as np
import pandas as pd
from correlator.detect import series_index


def _frame(categorical: bool) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    n = 5000
    frame = pd.DataFrame(
        {
            "role": rng.choice(["latency", "cpu", "series:x_total"], n),
            "service": rng.choice(["a", "b", "c", "d"], n).astype(object),
            "peer": rng.choice(["", "a", "db"], n),
            "ts": rng.integers(0, 100, n).astype(float),
            "value": rng.random(n),
        }
    )
    frame.loc[rng.random(n) < 0.02, "service"] = None  # a missing key: left out
    if categorical:
        for col in ("role", "service", "peer"):
            frame[col] = frame[col].astype("category")
    return frame


def test_series_index_matches_groupby_indices() -> None:
    for categorical in (False, True):
        frame = _frame(categorical)
        want = frame.groupby(["role", "service", "peer"], sort=False, observed=True).indices
        got = series_index(frame)
        assert set(got) == {tuple(str(x) for x in k) for k in want}
        for key, rows in want.items():
            np.testing.assert_array_equal(got[tuple(str(x) for x in key)], rows)
    assert series_index(frame.iloc[0:0]) == {}
