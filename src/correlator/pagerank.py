"""PageRank in numpy alone: ``networkx.pagerank`` without importing scipy.

networkx computes PageRank with scipy's sparse matrices, and importing scipy
costs a CLI run about 0.15 s. :func:`pagerank` is the same power iteration
on the same sparse layout, and adds in the same order (each row's weights
summed by ``np.add.reduceat`` in column order; each node's inflow summed in
the order of its callers), so it returns the very floats networkx returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx
import numpy as np

__all__ = ["pagerank"]


def pagerank(
    graph: nx.DiGraph,
    alpha: float = 0.85,
    personalization: Mapping[Any, float] | None = None,
    weight: str = "weight",
    tol: float = 1e-6,
    max_iter: int = 100,
) -> dict[Any, float]:
    """``networkx.pagerank(graph, alpha, personalization, max_iter, tol, weight=weight)``.

    Raises ``networkx.PowerIterationFailedConvergence`` as networkx does.
    """
    nodes = list(graph)
    n = len(nodes)
    if n == 0:
        return {}
    index = {node: i for i, node in enumerate(nodes)}
    edges = [(index[u], index[v], float(d.get(weight, 1))) for u, v, d in graph.edges(data=True)]
    # The CSR layout networkx builds: rows in node order, columns sorted within a row.
    edges.sort(key=lambda e: (e[0], e[1]))
    rows = np.array([e[0] for e in edges], dtype=np.intp)
    cols = np.array([e[1] for e in edges], dtype=np.intp)
    data = np.array([e[2] for e in edges], dtype=float)
    out_sum = np.zeros(n)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else rows
    if len(rows):
        out_sum[rows[starts]] = np.add.reduceat(data, starts)
    inv = out_sum.copy()
    inv[inv != 0] = 1.0 / inv[inv != 0]
    data = inv[rows] * data
    x = np.repeat(1.0 / n, n)
    if personalization is None:
        p = np.repeat(1.0 / n, n)
    else:
        p = np.array([personalization.get(node, 0) for node in nodes], dtype=float)
        if p.sum() == 0:
            raise ZeroDivisionError
        p /= p.sum()
    dangling_weights = p
    is_dangling = np.where(out_sum == 0)[0]
    for _ in range(max_iter):
        xlast = x
        inflow = np.zeros(n)
        np.add.at(inflow, cols, data * x[rows])  # callers in row order, as scipy adds them
        x = alpha * (inflow + sum(x[is_dangling]) * dangling_weights) + (1 - alpha) * p
        err = np.absolute(x - xlast).sum()
        if err < n * tol:
            return dict(zip(nodes, map(float, x), strict=True))
    raise nx.PowerIterationFailedConvergence(max_iter)
