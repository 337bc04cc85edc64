"""Tests of crystalflow.nn: pair search and segment means (graph), molecule frames, shared blocks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from toys import toy_cluster

from crystalflow.data.dataset import collate
from crystalflow.data.shards import ClusterRecord
from crystalflow.nn.blocks import ShapeEmbedding
from crystalflow.nn.frames import anchor_points, gram_schmidt, in_frame, molecule_frames
from crystalflow.nn.graph import intra_pairs, molecule_pairs, radius_pairs, segment_mean

#: tiny tensors: one torch thread avoids OpenMP synchronisation costs (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")

#: two small made-up molecules (Å) with atomic numbers
MOL_A = np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [2.1, 1.2, 0.0], [-0.7, 1.1, 0.3], [0.3, -0.9, 0.9]])
Z_A = np.array([6, 6, 8, 7, 1])
MOL_B = np.array([[0.0, 0.0, 0.0], [1.2, 0.3, 0.0], [-0.4, 1.1, -0.2]])
Z_B = np.array([8, 1, 1])


def two_clusters():
    return [toy_cluster(MOL_A, Z_A, 7, seed=1), toy_cluster(MOL_B, Z_B, 5, seed=2)]


def batch64(n_mol: int = 7, seed: int = 1):
    return collate([toy_cluster(MOL_A, Z_A, n_mol, seed=seed), toy_cluster(MOL_A[:4], Z_A[:4], 5, seed=seed + 1)]).to(
        "cpu", torch.float64)


# ------------------------------------------------------------------------------------------- graph


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


# ------------------------------------------------------------------------------------------ frames


@pytest.mark.parametrize("n", [3, 4, 5, 12, 60, 200])
def test_anchor_points_span_space(n):
    w = anchor_points(torch.arange(n), torch.float64)
    sv = torch.linalg.svdvals(w - w.mean(0))
    # a unique best rotation needs rank >= 2 (three centred points are always planar); never near-degenerate
    assert sv[: min(n - 1, 3)].min() > 0.1 * np.sqrt(n)


def test_frames_of_rigid_copies_give_identical_local_coordinates_and_rotate_with_input():
    b = batch64()
    frames, c = molecule_frames(b.x_s, b)
    torch.testing.assert_close(torch.linalg.det(frames), torch.ones(len(frames), dtype=torch.float64))
    local = in_frame(frames[b.mol], b.x_s - c[b.mol])
    first = local[b.mol == 0]
    for g in range(1, 7):  # every molecule of the first cluster is a rigid copy of the first one
        torch.testing.assert_close(local[b.mol == g], first, atol=1e-5, rtol=0)  # float32 data
    q = torch.tensor(Rotation.random(random_state=3).as_matrix())
    moved, _ = molecule_frames(b.x_s @ q.T + 5.0, b)
    torch.testing.assert_close(moved, q @ frames, atol=1e-9, rtol=0)


def test_gram_schmidt_gives_rotations_along_the_first_vector():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(10, 3, generator=g, dtype=torch.float64)
    r = gram_schmidt(a, b)
    torch.testing.assert_close(r.transpose(1, 2) @ r, torch.eye(3, dtype=torch.float64).expand(10, 3, 3))
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(10, dtype=torch.float64))
    torch.testing.assert_close(r[:, :, 0], a / a.norm(dim=-1, keepdim=True))
    normal = torch.linalg.cross(a, b)  # the second column lies in the (a, b) plane
    torch.testing.assert_close((r[:, :, 1] * normal).sum(-1), torch.zeros(10, dtype=torch.float64), atol=1e-12, rtol=0)
    q = torch.tensor(Rotation.random(random_state=1).as_matrix())
    torch.testing.assert_close(gram_schmidt(a @ q.T, b @ q.T), q @ r)  # equivariant


# ------------------------------------------------------------------------------------------ blocks


def test_shape_embedding_ignores_turns_of_molecules_but_sees_mirrors():
    torch.manual_seed(0)
    net = ShapeEmbedding(16).double()
    rec = toy_cluster(MOL_A, Z_A, 4, seed=5)

    def embed(x_s: np.ndarray) -> torch.Tensor:
        b = collate([ClusterRecord(x_s=x_s, x_w=x_s, z=Z_A)]).to("cpu", torch.float64)
        frames, c = molecule_frames(b.x_s, b)
        with torch.no_grad():
            return net(frames, b.x_s - c[b.mol], b)

    h = embed(rec.x_s)
    assert h.shape == (4, 16)
    torch.testing.assert_close(h, h[:1].expand_as(h), atol=1e-5, rtol=0)  # rigid copies look alike (float32 data)
    rot = Rotation.random(4, random_state=2).as_matrix()
    centres = rec.x_s.mean(1, keepdims=True)
    turned = np.einsum("mij,mnj->mni", rot, rec.x_s - centres) + centres
    turn_change = float((embed(turned) - h).abs().max())
    mirror_change = float((embed(-rec.x_s) - h).abs().max())
    assert turn_change < 1e-8 and mirror_change > 1e-4  # float64 inputs: turns change nothing
