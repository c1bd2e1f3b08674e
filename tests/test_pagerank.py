"""correlator.pagerank gives exactly what networkx.pagerank gives, without scipy."""

from __future__ import annotations

import random
import subprocess
import sys

import networkx as nx
import pytest

from correlator.pagerank import pagerank

pytest.importorskip("scipy")  # networkx's own pagerank needs it


def _graph(seed: int) -> tuple[nx.DiGraph, dict[str, float] | None]:
    rng = random.Random(seed)
    n = rng.randint(1, 60)
    g = nx.gnp_random_graph(n, rng.random() * 0.2, seed=seed, directed=True)
    order = list(g.nodes)
    rng.shuffle(order)
    h = nx.DiGraph()
    h.add_nodes_from(f"s{i}" for i in order)  # node order is not sorted
    for u, v in g.edges:
        h.add_edge(f"s{u}", f"s{v}", weight=rng.random() * 3 + 1e-3)
    for x in list(h.nodes)[: n // 3]:
        h.add_edge(x, x, weight=rng.random())
    pers = {x: rng.random() + 1e-6 for x in h.nodes} if seed % 3 else None
    return h, pers


@pytest.mark.parametrize("seed", range(40))
def test_same_floats_as_networkx(seed: int) -> None:
    g, pers = _graph(seed)
    want = nx.pagerank(g, alpha=0.85, personalization=pers, weight="weight", tol=1e-8)
    got = pagerank(g, alpha=0.85, personalization=pers, weight="weight", tol=1e-8)
    assert list(got) == list(want)
    assert got == want  # bit for bit, not approximately


def test_no_convergence_raises_as_networkx_does() -> None:
    g, pers = _graph(5)
    with pytest.raises(nx.PowerIterationFailedConvergence):
        pagerank(g, personalization=pers, tol=1e-30, max_iter=3)


def test_empty_graph() -> None:
    assert pagerank(nx.DiGraph()) == {}


def test_topology_does_not_import_scipy() -> None:
    code = "import sys, correlator.topology; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
