"""Tests of crystalflow.nn.graph: pair search and segment means."""
from __future__ import annotations

import pytest
import torch
from toys import MOL_A, MOL_B, Z_A, Z_B, toy_cluster

from crystalflow.data.dataset import collate
from crystalflow.nn.graph import intra_pairs, molecule_pairs, radius_pairs, segment_mean

#: tiny tensors: one torch thread avoids OpenMP synchronisation costs (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")


def two_clusters():
    return [toy_cluster(MOL_A, Z_A, 7, seed=1), toy_cluster(MOL_B, Z_B, 5, seed=2)]


def test_radius_pairs_match_brute_force():
    batch = collate(two_clusters())
    x, ptr = batch.x_s.double(), batch.ptr
    cutoff = 4.0
    d = torch.cdist(x, x)
    same_cluster = batch.graph[:, None] == batch.graph[None, :]
    other_mol = batch.mol[:, None] != batch.mol[None, :]
    expect = (d < cutoff) & same_cluster & ~torch.eye(len(x), dtype=torch.bool)
    i, j = radius_pairs(x, ptr, cutoff)
    got = torch.zeros_like(expect)
    got[i, j] = True
    assert torch.equal(got, expect) and len(i) == int(expect.sum())
    i, j = radius_pairs(x, ptr, cutoff, mol=batch.mol, directed=False)
    assert bool((i < j).all())
    got = torch.zeros_like(expect)
    got[i, j] = True
    assert torch.equal(got | got.T, expect & other_mol)


def test_radius_pairs_cap_keeps_each_atoms_nearest_contacts():
    batch = collate(two_clusters())
    x = batch.x_s.double() * 0.5  # squeezed: many contacts per atom
    cutoff, k = 4.0, 3
    full_i, full_j = radius_pairs(x, batch.ptr, cutoff, mol=batch.mol)
    i, j = radius_pairs(x, batch.ptr, cutoff, mol=batch.mol, max_neighbours=k)
    n = len(x)
    full = torch.zeros(n, n, dtype=torch.bool)
    full[full_i, full_j] = True
    got = torch.zeros_like(full)
    got[i, j] = True
    assert int(full.sum(1).max()) > k  # the cap is active
    assert torch.equal(got, got.T) and bool((got <= full).all()) and len(i) <= 2 * n * k
    d = torch.cdist(x, x).masked_fill(~full, float("inf"))
    for a in range(n):  # every atom keeps its k nearest contacts (or all it has)
        nearest = d[a].argsort()[: min(k, int(full[a].sum()))]
        assert bool(got[a, nearest].all())
    # undirected output: the same pairs, each once
    ui, uj = radius_pairs(x, batch.ptr, cutoff, mol=batch.mol, directed=False, max_neighbours=k)
    assert bool((ui < uj).all()) and 2 * len(ui) == len(i)


def test_intra_pairs_match_brute_force():
    batch = collate(two_clusters())
    x = batch.x_w.double()
    d = torch.cdist(x, x)
    expect = torch.triu((d < 2.5) & (batch.mol[:, None] == batch.mol[None, :]), diagonal=1)
    i, j = intra_pairs(x, batch, 2.5)
    got = torch.zeros_like(expect)
    got[i, j] = True
    assert torch.equal(got, expect) and len(i) == int(expect.sum())


def test_molecule_pairs_stay_in_cluster():
    batch = collate(two_clusters())
    g, h = molecule_pairs(batch.mol_graph)
    assert len(g) == 7 * 6 + 5 * 4
    assert bool((batch.mol_graph[g] == batch.mol_graph[h]).all()) and bool((g != h).all())


def test_segment_mean_counts_or_takes_the_given_counts():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]], dtype=torch.float64)
    seg = torch.tensor([0, 0, 2])
    expect = torch.tensor([[2.0, 3.0], [0.0, 0.0], [10.0, 0.0]], dtype=torch.float64)  # segment 1 is empty: 0
    torch.testing.assert_close(segment_mean(x, seg, 3), expect, atol=0, rtol=0)
    given = segment_mean(x[:2], seg[:2], 1, count=torch.tensor([2]))
    torch.testing.assert_close(given, expect[:1], atol=0, rtol=0)
    v = torch.randn(3, 3, 4, dtype=torch.float64)  # trailing dimensions are kept
    assert segment_mean(v, seg, 3).shape == (3, 3, 4)
