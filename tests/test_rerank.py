"""rrid.reranking: k-reciprocal re-ranking against the paper's equations written out in float64,
against fast-reid's ``re_ranking`` when fastreid is installed, on ties, odd sizes and small budgets."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import rrid
import rrid.evaluation
import rrid.reranking
from rrid.errors import UserError
from rrid.reranking import RerankMemoryError, rerank

# d* lies in [0, 1 + λ]. rerank works in float32: its distances, exponentials and sums of at most
# n terms are off by a few float32 rounding steps (eps32 ≈ 1.2e-7); 1e-5 is ~80 of them. A wrong
# neighbour set or a wrong equation moves d* by 1e-2 or more. The data below keep float32 and
# float64 on the same neighbour sets: either integer features (exact distances, exact ties) or
# random ones whose sorted distances are further apart than float32's error (`assert_no_near_ties`).
TOL = dict(atol=1e-5, rtol=1e-5)


def rerank_direct(q, g, k1, k2, lam):
    """Zhong et al. 2017, written from the equations with plain loops and sets, in float64."""
    x = torch.cat([q, g]).double()
    n, nq = len(x), len(q)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    d = (d / d.max(dim=1, keepdim=True).values).tolist()
    order = [sorted(range(n), key=lambda j: (d[p][j], j)) for p in range(n)]

    def N(p, k):
        return set(order[p][:k + 1])

    def R(p, k):
        return {j for j in N(p, k) if p in N(j, k)}

    half = int(round(k1 / 2))
    V = []
    for p in range(n):
        r_star = set(R(p, k1))
        for c in R(p, k1):
            rc = R(c, half)
            if len(R(p, k1) & rc) > 2 / 3 * len(rc):
                r_star |= rc
        w = [np.exp(-d[p][j]) if j in r_star else 0.0 for j in range(n)]
        V.append(np.array(w) / sum(w))
    if k2 > 1:  # the authors' code skips k2 = 1, which differs where a duplicate of p ranks before p
        V = [np.mean([V[j] for j in order[p][:k2]], axis=0) for p in range(n)]
    out = np.zeros((nq, n - nq))
    for i in range(nq):
        for j in range(nq, n):
            jac = 1 - np.minimum(V[i], V[j]).sum() / np.maximum(V[i], V[j]).sum()
            out[i, j - nq] = (1 - lam) * jac + lam * d[i][j]
    return torch.tensor(out)


def clustered(num_q, num_g, dim=5, ids=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(ids, dim, generator=gen)
    q = centres[torch.arange(num_q) % ids] + 0.3 * torch.randn(num_q, dim, generator=gen)
    g = centres[torch.arange(num_g) % ids] + 0.3 * torch.randn(num_g, dim, generator=gen)
    return q, g


def assert_no_near_ties(q, g, first=None):
    """Every gap between a row's ``first`` smallest scaled distances (the ones that decide N(p, k1), N(p, k1/2)
    and the k2 first; default all) exceeds 10 x the float32 error of those distances."""
    x = torch.cat([q, g])
    d64 = torch.cdist(x.double(), x.double()) ** 2
    d64 = d64 / d64.max(1, keepdim=True).values
    d32 = torch.cdist(x, x) ** 2
    error32 = (d32 / d32.max(1, keepdim=True).values - d64).abs().max()
    assert d64.sort(1).values[:, :first].diff(dim=1).min() > 10 * error32, "near-tied distances: pick other data"


def lattice(n, seed, side=5):
    """Integer points of {0..side-1}³: duplicates and many exactly tied distances, exact in float32."""
    x = torch.randint(0, side, (n, 3), generator=torch.Generator().manual_seed(seed)).float()
    copies = torch.unique(x, dim=0, return_counts=True)[1]
    # duplicates, but each point stays in its own N(p, k) (k >= 2), so that no V row is empty
    assert 1 < copies.max() <= 3
    return x


@pytest.mark.parametrize("k1,k2,lam", [(4, 2, 0.3), (6, 3, 0.5), (3, 1, 0.0), (20, 6, 0.3)])
def test_rerank_equals_direct_implementation(k1, k2, lam):
    q, g = clustered(6, 14, seed=k1)
    assert_no_near_ties(q, g)
    torch.testing.assert_close(rerank(q, g, k1, k2, lam).double(), rerank_direct(q, g, k1, k2, lam), **TOL)


@pytest.mark.parametrize("seed,k1,k2", [(1, 4, 3), (2, 6, 1), (4, 2, 2)])
def test_duplicates_and_exact_ties_break_by_index(seed, k1, k2):
    """Ties in the ranking go to the lower index, as a stable sort of each row (the direct version
    sorts by (d, index)); with k1 = 2, 3 copies of a point fill N(p, k1) by index alone."""
    x = lattice(40, seed)
    q, g = x[:10], x[10:]
    expected = rerank_direct(q, g, k1, k2, 0.3)
    torch.testing.assert_close(rerank(q, g, k1, k2, 0.3).double(), expected, **TOL)
    swapped = torch.cat([g[1:2], g[:1], g[2:]])  # the same set, two gallery points renumbered
    torch.testing.assert_close(rerank(q, swapped, k1, k2, 0.3).double(), rerank_direct(q, swapped, k1, k2, 0.3), **TOL)


def test_k1_and_k2_larger_than_the_data():
    """k1 above the gallery size and above n = Q + G, k2 above n: N(p, k) is then every point."""
    q, g = clustered(3, 6, seed=7)
    assert_no_near_ties(q, g)
    for k1, k2 in [(8, 4), (30, 12), (9, 9)]:
        torch.testing.assert_close(rerank(q, g, k1, k2, 0.3).double(), rerank_direct(q, g, k1, k2, 0.3), **TOL)


def test_query_without_reciprocal_neighbour():
    """A query far from every point is in nobody's k-nearest: R*(p) = {p}, V_p = e_p. With k2 = 1
    no V_g holds p, so d_J(p, g) = 1 and d*(p, g) = (1 - λ) + λ d(p, g) for every g."""
    q, g = clustered(4, 16, seed=3)
    q[0] = 50.0  # every distance from q[0] is about the row maximum
    lam = 0.3
    out = rerank(q, g, 6, 1, lam).double()
    d = ((q[0, None].double() - torch.cat([q, g]).double()) ** 2).sum(1)
    d = d / d.max()
    torch.testing.assert_close(out[0], (1 - lam) + lam * d[len(q):], **TOL)
    torch.testing.assert_close(out, rerank_direct(q, g, 6, 1, lam), **TOL)
    torch.testing.assert_close(rerank(q, g, 6, 4, lam).double(), rerank_direct(q, g, 6, 4, lam), **TOL)


def fast_reid_re_ranking():
    """fast-reid's ``re_ranking``, read from its file (importing the package pulls in faiss, cv2...)."""
    spec = importlib.util.find_spec("fastreid")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fastreid is not installed (it pins torch 1.13; `pip install --no-deps fastreid` is enough)")
    path = Path(next(iter(spec.submodule_search_locations))) / "evaluation" / "rerank.py"
    module_spec = importlib.util.spec_from_file_location("fastreid_rerank", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.re_ranking


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (7, 3, 0.5), (5, 1, 0.3)])
def test_rerank_equals_fast_reid(k1, k2, lam):
    """On data without near ties: fast-reid sorts each row with numpy's quicksort, which orders
    exact ties arbitrarily, so tied data (duplicates) can differ there."""
    re_ranking = fast_reid_re_ranking()
    q, g = clustered(30, 120, dim=16, ids=12, seed=0)
    assert_no_near_ties(q, g, first=k1 + 2)
    qd, gd = q.double(), g.double()
    expected = re_ranking(torch.cdist(qd, gd).numpy(), torch.cdist(qd, qd).numpy(), torch.cdist(gd, gd).numpy(),
                          k1, k2, lam)
    torch.testing.assert_close(rerank(q, g, k1, k2, lam).double(), torch.from_numpy(expected).double(), **TOL)


@pytest.mark.parametrize("data", ["clustered", "lattice"])
def test_small_blocks_equal_one_block(data):
    """A budget of 200 kB cuts the distances into 65 x 65 blocks (n = 130) and every later step into
    blocks of a row or a few: the same neighbour lists, index for index, and the same d* up to the
    order of float32 sums (a few eps32 of values below 1.3)."""
    x = clustered(30, 100, dim=8, ids=10, seed=4) if data == "clustered" else lattice(130, 0, side=8).split([30, 100])
    q, g = x
    if data == "clustered":
        assert_no_near_ties(q, g, first=22)
    budget = 200_000
    assert math.isqrt(budget // rrid.reranking._DISTANCE_BYTES) < 130
    x = torch.cat([q, g])  # the distances of both lists are exact (lattice) or have no near ties (clustered)
    big = rrid.reranking._nearest_neighbours(x, 21, torch.empty(30, 100), 2**28)
    small = rrid.reranking._nearest_neighbours(x, 21, torch.empty(30, 100), budget)
    assert torch.equal(big.idx[:, :21], small.idx[:, :21])
    torch.testing.assert_close(rerank(q, g, memory_budget=budget), rerank(q, g), atol=1e-6, rtol=0)


def test_memory_budget_error_comes_before_any_allocation():
    """A million queries and ten million gallery points, as zero-stride views of one row: the (Q, G)
    result alone would need 40 TB, so anything allocated first would fail with torch's own error."""
    q, g = torch.zeros(1, 64).expand(10**6, 64), torch.zeros(1, 64).expand(10**7, 64)
    with pytest.raises(RerankMemoryError, match=r"1,000,000 x 10,000,000.*memory_budget=1\.0 KiB") as err:
        rerank(q, g, memory_budget=1024)
    assert isinstance(err.value, UserError) and isinstance(err.value, MemoryError)
    assert "pass memory_budget >=" in str(err.value)


def test_free_memory_error(monkeypatch):
    q, g = clustered(30, 100)
    monkeypatch.setattr(rrid.reranking, "_free_bytes", lambda device: 10_000)
    with pytest.raises(RerankMemoryError, match=r"result and the features need .* but cpu has 9\.8 KiB free"):
        rerank(q, g)


def test_bad_arguments():
    q, g = clustered(3, 6)
    with pytest.raises(ValueError, match="k1 must be an integer >= 1"):
        rerank(q, g, k1=0)
    with pytest.raises(ValueError, match="k2 must be an integer >= 1, got 1.5"):
        rerank(q, g, k2=1.5)
    with pytest.raises(ValueError, match=r"lambda_ must lie in \[0, 1\]"):
        rerank(q, g, lambda_=1.5)
    with pytest.raises(ValueError, match="same D"):
        rerank(q, g[:, :2])
    with pytest.raises(ValueError, match="NaN or inf"):
        rerank(q, torch.cat([g[:5], torch.full((1, 5), torch.nan)]))
    assert rerank(q[:0], g).shape == (0, 6) and rerank(q, g[:0]).shape == (3, 0)


def test_one_function_under_three_names():
    """The module is rrid.reranking, so that rrid.rerank names the function only."""
    assert rrid.rerank is rrid.reranking.rerank is rrid.evaluation.rerank
