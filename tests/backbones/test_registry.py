"""Tests of the backbones (crystalflow.backbones): E(3) equivariance, molecule permutation, cluster isolation, time."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from toys import toy_cluster

from crystalflow.backbones.registry import BACKBONES, RIGID_OUTPUT_VARIANTS, BackboneConfig, build_backbone
from crystalflow.data.dataset import collate
from crystalflow.data.shards import ClusterRecord
from crystalflow.nn.graph import intra_pairs, radius_pairs

#: tiny tensors: one torch thread avoids OpenMP synchronisation costs (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")

#: two small made-up molecules (Å) with atomic numbers
MOL_A = np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [2.1, 1.2, 0.0], [-0.7, 1.1, 0.3], [0.3, -0.9, 0.9]])
Z_A = np.array([6, 6, 8, 7, 1])
MOL_B = np.array([[0.0, 0.0, 0.0], [1.2, 0.3, 0.0], [-0.4, 1.1, -0.2]])
Z_B = np.array([8, 1, 1])
TOL = 1e-5
EXACT = 1e-10

SMALL = {"hidden": 16, "layers": 2, "n_rbf": 8}
VARIANTS = {
    "reference": BackboneConfig(variant="reference", cutoff=5.0, **SMALL),
    "fast": BackboneConfig(variant="fast", intra_cutoff=3.0, contact_cutoff=4.0, mol_cutoff=30.0, **SMALL),
    "molecule-painn": BackboneConfig(variant="molecule-painn", **SMALL),
    "molecule-painn-lattice": BackboneConfig(variant="molecule-painn", orientation_inputs=False, **SMALL),
}
PAINN = ("reference", "fast")


def two_clusters():
    return [toy_cluster(MOL_A, Z_A, 7, seed=1), toy_cluster(MOL_B, Z_B, 5, seed=2)]


def run(model, batch, x, x_w, t):
    with torch.no_grad():
        return model(x, x_w, t, batch)


def midpoint(batch, frac=0.6):
    return batch.x_w + frac * (batch.x_s - batch.x_w)


@pytest.fixture(params=list(VARIANTS))
def model(request):
    torch.manual_seed(0)
    return build_backbone(VARIANTS[request.param]).double()


def test_rotation_and_translation_equivariance(model):
    batch = collate(two_clusters()).to("cpu", torch.float64)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    x = midpoint(batch)
    rot = torch.tensor(Rotation.random(random_state=7).as_matrix())
    shift = torch.tensor([4.0, -3.0, 11.0], dtype=torch.float64)
    out = run(model, batch, x, batch.x_w, t)
    out_moved = run(model, batch, x @ rot.T + shift, batch.x_w @ rot.T + shift, t)
    assert out.abs().max() > 1e-6  # not trivially zero
    torch.testing.assert_close(out_moved, out @ rot.T, atol=TOL, rtol=0)
    out_shifted = run(model, batch, x + shift, batch.x_w + shift, t)
    torch.testing.assert_close(out_shifted, out, atol=TOL, rtol=0)


def test_fast_variant_uses_contacts_and_intra_pairs():
    batch = collate(two_clusters()).to("cpu", torch.float64)
    i, j = intra_pairs(batch.x_w, batch, 3.0)
    assert len(i) > 0 and bool((batch.mol[i] == batch.mol[j]).all())
    ci, cj = radius_pairs(batch.x_s, batch.ptr, 4.0, mol=batch.mol, directed=False)
    assert len(ci) > 0 and bool((batch.mol[ci] != batch.mol[cj]).all())


@pytest.mark.parametrize("perm", [[0, 3, 6, 1, 5, 2, 4], [3, 0, 6, 1, 5, 2, 4]], ids=["neighbours", "all"])
def test_molecule_permutation_permutes_output(model, perm):
    if perm[0] != 0 and model.cfg.variant == "molecule-painn":
        pytest.skip(f"{model.cfg.variant} marks the first molecule as the central one: only its neighbours are "
                    "interchangeable")
    rec = toy_cluster(MOL_A, Z_A, 7, seed=3)
    perm = np.array(perm)
    permuted = ClusterRecord(x_s=rec.x_s[perm], x_w=rec.x_w[perm], z=rec.z)
    b1 = collate([rec]).to("cpu", torch.float64)
    b2 = collate([permuted]).to("cpu", torch.float64)
    t = torch.tensor([0.5], dtype=torch.float64)
    out1 = run(model, b1, midpoint(b1), b1.x_w, t).reshape(7, len(Z_A), 3)
    out2 = run(model, b2, midpoint(b2), b2.x_w, t).reshape(7, len(Z_A), 3)
    torch.testing.assert_close(out2, out1[torch.as_tensor(perm)], atol=EXACT, rtol=0)


def test_clusters_in_a_batch_do_not_interact(model):
    a, b = two_clusters()
    # put cluster B on top of cluster A: any cross-cluster edge would change A's output
    b = ClusterRecord(x_s=b.x_s + 0.5, x_w=b.x_w - 0.5, z=b.z)
    alone = collate([a]).to("cpu", torch.float64)
    both = collate([a, b]).to("cpu", torch.float64)
    t_alone = torch.tensor([0.4], dtype=torch.float64)
    t_both = torch.tensor([0.4, 0.9], dtype=torch.float64)
    out_alone = run(model, alone, midpoint(alone), alone.x_w, t_alone)
    out_both = run(model, both, midpoint(both), both.x_w, t_both)
    torch.testing.assert_close(out_both[: len(out_alone)], out_alone, atol=EXACT, rtol=0)
    # and the other order
    both_rev = collate([b, a]).to("cpu", torch.float64)
    out_rev = run(model, both_rev, midpoint(both_rev), both_rev.x_w, t_both.flip(0))
    torch.testing.assert_close(out_rev[-len(out_alone):], out_alone, atol=EXACT, rtol=0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_float32_gradients_finite_with_coincident_atoms(variant):
    torch.manual_seed(0)
    net = build_backbone(VARIANTS[variant])
    batch = collate(two_clusters())
    x = batch.x_w.clone()
    x[1] = x[0]  # two atoms on top of each other
    out = net(x, batch.x_w, torch.tensor([0.0, 1.0]), batch)
    assert out.dtype == torch.float32 and out.shape == x.shape
    out.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_time_embedding_matters_and_is_required():
    torch.manual_seed(0)
    net = build_backbone(VARIANTS["fast"]).double()
    batch = collate(two_clusters()).to("cpu", torch.float64)
    x = midpoint(batch)
    a = run(net, batch, x, batch.x_w, torch.tensor([0.1, 0.1], dtype=torch.float64))
    b = run(net, batch, x, batch.x_w, torch.tensor([0.9, 0.9], dtype=torch.float64))
    assert (a - b).abs().max() > 1e-8
    with pytest.raises(ValueError):
        run(net, batch, x, batch.x_w, None)
    no_time = build_backbone(BackboneConfig(variant="fast", **SMALL), time=False).double()
    assert run(no_time, batch, x, batch.x_w, None).shape == x.shape


def test_registry_and_unknown_or_removed_variants():
    assert set(BACKBONES) == {"fast", "reference", "molecule-painn"} and RIGID_OUTPUT_VARIANTS == ("molecule-painn",)
    assert all(isinstance(build_backbone(cfg), BACKBONES[cfg.variant]) for cfg in VARIANTS.values())
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        BackboneConfig(variant="nope")
    with pytest.raises(ValueError, match="frames backbone was removed"):
        BackboneConfig(variant="frames")
    cfg = BackboneConfig(variant="reference", hidden=8, cutoff=6.0)
    assert BackboneConfig.from_dict(cfg.to_dict()) == cfg and BackboneConfig.from_dict({}) == BackboneConfig()
    with pytest.raises(ValueError, match="unknown backbone keys: size"):
        BackboneConfig.from_dict({"size": 8})
    with pytest.raises(TypeError, match="hidden must be an integer"):
        BackboneConfig.from_dict({"hidden": "8"})


@pytest.mark.slow
@pytest.mark.parametrize("variant", PAINN)
def test_compiled_layers_match_eager(variant, request):
    """torch.compile warm-up takes minutes: runs only when asked for with ``-m slow``."""
    if "slow" not in request.config.getoption("markexpr", ""):
        pytest.skip("slow: run with -m slow")
    torch.manual_seed(0)
    eager = build_backbone(VARIANTS[variant])
    cfg = VARIANTS[variant]
    compiled = build_backbone(BackboneConfig(**{**cfg.__dict__, "compile": True}))
    compiled.load_state_dict(eager.state_dict())
    batch = collate(two_clusters())
    t = torch.tensor([0.2, 0.7])
    for x in (midpoint(batch), midpoint(batch, 0.3)):  # two edge counts: exercises dynamic shapes
        torch.testing.assert_close(compiled(x, batch.x_w, t, batch), eager(x, batch.x_w, t, batch), atol=1e-4, rtol=1e-4)


def test_model_deepcopies():
    import copy

    net = build_backbone(VARIANTS["fast"])
    clone = copy.deepcopy(net)
    batch = collate(two_clusters())
    t = torch.tensor([0.2, 0.7])
    torch.testing.assert_close(clone(batch.x_w, batch.x_w, t, batch), net(batch.x_w, batch.x_w, t, batch))


@pytest.mark.parametrize("variant", PAINN)
def test_readout_skip_carries_input_vectors_and_old_checkpoints_load(variant):
    torch.manual_seed(0)
    net = build_backbone(VARIANTS[variant])
    batch = collate(two_clusters())
    t = torch.tensor([0.2, 0.7])
    x = midpoint(batch)
    base = net(x, batch.x_w, t, batch)
    # a checkpoint from before the skip (no readout.skip.*) loads as a zero skip: the same function
    legacy = {k: v for k, v in net.state_dict().items() if ".skip." not in k}
    fresh = build_backbone(VARIANTS[variant])
    fresh.load_state_dict(legacy)
    torch.testing.assert_close(fresh(x, batch.x_w, t, batch), base)
    # a bias of 1 on the first input vector (x_w − x) adds exactly x_w − x to every output
    with torch.no_grad():
        net.readout.skip.bias[0] = 1.0
    torch.testing.assert_close(net(x, batch.x_w, t, batch), base + (batch.x_w - x), atol=1e-5, rtol=1e-5)
