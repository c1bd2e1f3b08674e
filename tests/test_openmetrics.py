"""OpenMetrics reader and writer."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from correlator import openmetrics
from correlator.openmetrics import (
    Family,
    NameFilter,
    OpenMetricsError,
    format_sample,
    parse_labels,
    parse_openmetrics,
    read_openmetrics,
    render,
)

T0 = 1772442000


def test_types_help_unit_and_eof() -> None:
    text = (
        "# TYPE req counter\n# UNIT req requests\n# HELP req Requests served \\\\ total\n"
        f'req_total{{service="a"}} 1 {T0}\nreq_total{{service="a"}} 3 {T0 + 15}\n# EOF\n'
    )
    m = parse_openmetrics(text)
    assert m.types == {"req": "counter"}
    assert m.units == {"req": "requests"}
    assert m.help["req"] == "Requests served \\ total"
    (s,) = m.series
    assert s.name == "req_total" and dict(s.labels) == {"service": "a"}
    assert s.ts.tolist() == [T0, T0 + 15] and s.values.tolist() == [1, 3]


def test_escaped_label_values_and_spaces() -> None:
    text = (
        f'm{{a="x \\"q\\" y",b="back\\\\slash",c="line\\nbreak",d="has # hash"}} 1 {T0}\n'
        f'm{{a="x \\"q\\" y",b="back\\\\slash",c="line\\nbreak",d="has # hash"}} 2 {T0 + 1}\n'
        "# EOF\n"
    )
    (s,) = parse_openmetrics(text).series
    assert dict(s.labels) == {
        "a": 'x "q" y',
        "b": "back\\slash",
        "c": "line\nbreak",
        "d": "has # hash",
    }
    assert s.values.tolist() == [1, 2]


def test_nan_inf_and_fractional_timestamps() -> None:
    text = f"a NaN {T0}.25\na +Inf {T0 + 1}.5\na -Inf {T0 + 2}\nb 1.5e3 {T0}.125\n# EOF\n"
    by = parse_openmetrics(text).by_name()
    a = by["a"][0]
    assert math.isnan(a.values[0]) and a.values[1] == math.inf and a.values[2] == -math.inf
    assert a.ts.tolist() == [T0 + 0.25, T0 + 1.5, T0 + 2]
    assert by["b"][0].values.tolist() == [1500.0] and by["b"][0].ts[0] == T0 + 0.125


def test_interleaved_series_are_grouped_and_time_sorted() -> None:
    lines = [f'x{{k="{i % 3}"}} {i} {T0 + 100 - i}\n' for i in range(30)]
    m = parse_openmetrics("".join(lines) + "# EOF\n")
    assert len(m.series) == 3
    for s in m.series:
        assert np.all(np.diff(s.ts) > 0) and len(s.ts) == 10


def test_exemplars_are_skipped() -> None:
    text = f'h_bucket{{le="1"}} 3 {T0} # {{trace_id="abc"}} 0.5 {T0}\n# EOF\n'
    (s,) = parse_openmetrics(text).series
    assert s.values.tolist() == [3] and s.ts.tolist() == [T0]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (f"a 1 {T0}\nb 2\n# EOF\n", 2, "no timestamp"),
        (f'a 1 {T0}\nb{{x="1 2"}} 2\n# EOF\n', 2, "timestamp"),
        (f"a 1 {T0}\na 2 {T0 * 1000}\n# EOF\n", 2, "milliseconds"),
        (f"a 1 {T0}\n", 1, "missing '# EOF'"),
        (f"a 1 {T0}\n# EOF\na 2 {T0 + 1}\n", 3, "after '# EOF'"),
        (f"a 1 {T0}\na x {T0}\n# EOF\n", 2, "bad value"),
        (f'a{{x="1}} 1 {T0}\n# EOF\n', 1, "label"),
    ],
)
def test_errors_name_the_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(OpenMetricsError) as info:
        parse_openmetrics(text)
    assert info.value.line == line
    assert needle in info.value.problem


def test_parse_labels_rejects_duplicates() -> None:
    assert parse_labels('a="1", b="2",') == {"a": "1", "b": "2"}
    with pytest.raises(OpenMetricsError, match="twice"):
        parse_labels('a="1",a="2"')


def test_writer_round_trip_and_order() -> None:
    hist = Family(
        "lat_seconds",
        "histogram",
        tuple(
            (f"lat_seconds{suffix}", {"service": "a", **({"le": le} if le else {})}, T0 + t, v)
            for t in (15, 0)
            for suffix, le, v in (
                ("_sum", "", 1.5),
                ("_bucket", "+Inf", 4),
                ("_bucket", "0.5", 2),
                ("_count", "", 4),
            )
        ),
        help='Latency "of" requests',
    )
    text = "".join(render([hist]))
    lines = text.splitlines()
    assert lines[0] == "# TYPE lat_seconds histogram"
    assert lines[-1] == "# EOF"
    # All samples at T0 (buckets by le, then count, sum) come before T0+15.
    assert lines[2].startswith('lat_seconds_bucket{service="a",le="0.5"} 2 1772442000')
    assert lines[3].startswith('lat_seconds_bucket{service="a",le="+Inf"} 4')
    assert lines[4].startswith("lat_seconds_count") and lines[5].startswith("lat_seconds_sum")
    m = parse_openmetrics(text)
    assert m.sample_count == 8
    assert (
        format_sample("x", {"v": 'a"b\n'}, T0 + 0.5, math.nan) == f'x{{v="a\\"b\\n"}} NaN {T0}.5\n'
    )


def test_to_frame() -> None:
    m = parse_openmetrics(f'a{{x="1"}} 1 {T0}\nb 2 {T0}\n# EOF\n')
    frame = m.to_frame()
    assert list(frame.columns) == ["name", "labels", "ts", "value"]
    assert set(frame["labels"]) == {(("x", "1"),), ()}


def test_tabs_and_control_characters_in_label_values() -> None:
    text = (
        f'm{{a="x\ty",b="bell\x07"}} 1 {T0}\n'
        f'm{{a="x\ty",b="bell\x07"}} 2 {T0 + 15}\n'
        f'm{{a="plain",b=""}} 3 {T0}\n'
        "# EOF\n"
    )
    m = parse_openmetrics(text)
    assert [dict(x) for x in m.labels] == [{"a": "x\ty", "b": "bell\x07"}, {"a": "plain", "b": ""}]
    assert m.values[0].tolist() == [1, 2] and m.times[0].tolist() == [T0, T0 + 15]


def test_family_skipping_only_sees_comments_at_line_starts() -> None:
    # A '#' inside a label value is not a comment: the family it sits in is still skipped
    # as a whole, and the wanted family after it is read.
    lines = ["# TYPE junk gauge\n"]
    lines += [f'junk{{a="#{i} # TYPE up gauge"}} {i} {T0 + i}\n' for i in range(30)]
    lines += ["# TYPE up gauge\n", f'up{{job="x"}} 1 {T0}\n', f'up{{job="#"}} 0 {T0}\n']
    data = ("".join(lines) + "# EOF\n").encode()
    keep = NameFilter(frozenset({"up"}))
    for block in (64, 200, 1 << 20):
        m = read_openmetrics(io.BytesIO(data), keep=keep, block_size=block)
        assert m.names == ("up", "up")
        assert [dict(x) for x in m.labels] == [{"job": "x"}, {"job": "#"}]
    assert parse_openmetrics(data).index["junk"][0] == 0


@pytest.mark.parametrize("slab", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("block", [48, 300, 1 << 20])
def test_values_are_the_same_whatever_the_slabs(
    monkeypatch: pytest.MonkeyPatch, slab: int, block: int
) -> None:
    # Series one after the other (a series split between blocks is one slice of a slab),
    # interleaved by time (parts joined), and out of time order (sorted on the way out).
    lines = ["# TYPE a gauge\n"]
    lines += [f'a{{i="{i}"}} {i * 10 + t} {T0 + 15 * t}\n' for i in range(4) for t in range(9)]
    lines += ["# TYPE b gauge\n"]
    lines += [f'b{{i="{i}"}} {i * 10 + t} {T0 + 15 * t}\n' for t in range(9) for i in range(4)]
    lines += [f'c{{i="0"}} {t} {T0 + 15 * (8 - t)}\n' for t in range(9)]
    data = ("".join(lines) + "# EOF\n").encode()
    monkeypatch.setattr(openmetrics, "_SLAB", slab)
    m = read_openmetrics(io.BytesIO(data), block_size=block, threads=2)
    assert m.names == ("a",) * 4 + ("b",) * 4 + ("c",)
    for k in range(8):
        assert m.values[k].tolist() == [(k % 4) * 10 + t for t in range(9)]
        assert m.times[k].tolist() == [T0 + 15 * t for t in range(9)]
        assert not m.values[k].flags.writeable
    assert m.values[8].tolist() == list(range(8, -1, -1))
    assert m.times[8] is m.times[0]
