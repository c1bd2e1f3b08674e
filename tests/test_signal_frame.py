"""The compact signal frame: categorical text columns sharing one dtype (model.compact_signals)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from correlator.model import SIGNAL_COLUMNS, SIGNAL_TEXT_COLUMNS, compact_signals, empty_frame


def _raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "role": ["node_ready", "node_ready", "cpu", "version"],
            "service": ["n-b", "n-a", "api", "api"],
            "ts": [1.0, 2.0, 3.0, 4.0],
            "value": [1.0, 0.0, 0.5, 1.0],
            "peer": [None, None, None, None],
            "pod": [None, None, "api-7d9-x", np.nan],
            "node": ["n-b", None, None, None],
            "zone": ["eu-1b", "eu-1a", None, None],
            "version": [None, None, None, "1.2.3"],
            "detail": [None, None, None, None],
        },
        columns=list(SIGNAL_COLUMNS),
    )


def test_text_columns_share_one_sorted_dtype_and_keep_their_values() -> None:
    raw = _raw()
    c = compact_signals(raw)
    assert list(c.columns) == list(SIGNAL_COLUMNS)
    dtype = c["role"].dtype
    assert isinstance(dtype, pd.CategoricalDtype)
    assert all(c[col].dtype == dtype for col in SIGNAL_TEXT_COLUMNS)
    assert list(dtype.categories) == sorted(dtype.categories)
    for col in SIGNAL_TEXT_COLUMNS:
        want = [None if pd.isna(v) else v for v in raw[col]]
        got = [None if pd.isna(v) else v for v in c[col].astype(object)]
        assert got == want, col
    assert c["ts"].dtype == np.float64 and c["value"].tolist() == raw["value"].tolist()


def test_columns_fill_compare_and_group_as_text() -> None:
    c = compact_signals(_raw())
    # One dtype: a column fills from another (the az_failure node key does this).
    assert c["node"].fillna(c["service"]).tolist() == ["n-b", "n-a", "api", "api"]
    assert c["peer"].fillna("").tolist() == ["", "", "", ""]
    assert (c["role"] == "node_ready").tolist() == [True, True, False, False]
    assert (c["role"] == "no such role").sum() == 0
    # Only observed values, in text order.
    assert c.groupby("zone")["value"].sum().index.tolist() == ["eu-1a", "eu-1b"]


def test_compact_frames_pass_through_and_empty_ones_work() -> None:
    c = compact_signals(_raw())
    assert compact_signals(c) is c
    e = compact_signals(empty_frame(SIGNAL_COLUMNS))
    assert e.empty and list(e.columns) == list(SIGNAL_COLUMNS)
    assert isinstance(e["role"].dtype, pd.CategoricalDtype)
    partial = compact_signals(_raw().drop(columns=["detail"]))
    assert partial["detail"].isna().all()
