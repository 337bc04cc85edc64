"""Tests of crystalflow.flow.model: configs (nested and flat), losses, velocities, endpoint prediction, overfitting."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from toys import toy_cluster

from crystalflow.backbones.registry import BackboneConfig
from crystalflow.data.dataset import collate
from crystalflow.data.shards import ClusterRecord
from crystalflow.flow.model import METHODS, ModelConfig, build_model, merge_config_dicts
from crystalflow.flow.solver import integrate

#: tiny tensors: one torch thread avoids OpenMP synchronisation costs (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")

MOL = np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [2.1, 1.2, 0.0], [-0.7, 1.1, 0.3]])
Z = np.array([6, 6, 8, 7])
TINY = {"hidden": 16, "layers": 2, "n_rbf": 8}
#: overfitting: Adam steps, learning rate and the required drop of the loss
OVERFIT_STEPS = 400
OVERFIT_LR = 2e-3
OVERFIT_FACTOR = 100.0


def make_record(n_mol: int, seed: int) -> ClusterRecord:
    """A toy cluster of MOL copies on the 3×3×3 grid (see :func:`toys.toy_cluster`)."""
    return toy_cluster(MOL, Z, n_mol, seed, half_width=1)


def small_batch(dtype=torch.float64):
    return collate([make_record(5, seed=1), make_record(3, seed=2)]).to("cpu", dtype)


def tiny(method: str, backbone: str = "fast", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(method=method, backbone=BackboneConfig(variant=backbone, **TINY), **kw))


def test_config_round_trip_and_validation():
    cfg = ModelConfig(method="ve", backbone=BackboneConfig(variant="reference", hidden=32), ve_sigma_max=15.0)
    d = cfg.to_dict()
    assert d["backbone"]["variant"] == "reference" and d["backbone"]["hidden"] == 32 and "hidden" not in d
    assert ModelConfig.from_dict(d) == cfg and ModelConfig.from_dict(d).to_dict() == d
    assert ModelConfig.from_dict({}) == ModelConfig()
    with pytest.raises(ValueError, match="unknown ModelConfig keys: bogus"):
        ModelConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="unknown backbone keys: bogus"):
        ModelConfig.from_dict({**d, "backbone": {"bogus": 1}})
    with pytest.raises(ValueError):
        ModelConfig(method="diffusion")
    with pytest.raises(ValueError, match="unknown backbone 'huge'"):
        ModelConfig.from_dict({"backbone": "huge"})
    with pytest.raises(TypeError, match="BackboneConfig"):
        ModelConfig(backbone="fast")
    with pytest.raises(TypeError, match="backbone must be an object"):
        ModelConfig.from_dict({"backbone": 3})
    with pytest.raises(TypeError, match="hidden must be an integer"):
        ModelConfig.from_dict({"hidden": "8"})


#: a config.json "model" object in the flat form (backbone fields beside the method's), with the removed options
FLAT = {
    "method": "rigid", "backbone": "molecule-painn", "hidden": 32, "layers": 2, "n_rbf": 8, "cutoff": 5.0,
    "intra_cutoff": 3.0, "contact_cutoff": 4.0, "max_contacts": 16, "mol_cutoff": 40.0, "compile": False,
    "orientation_inputs": False, "lerp_sigma": 0.2, "lerp_sigma_min": 0.001, "lerp_exact_target": False,
    "ve_sigma_min": 0.01, "ve_sigma_max": 20.0, "vp_beta_min": 0.1, "vp_beta_max": 20.0, "vp_scale": 10.0,
    "condition_on_input": False, "target_frame": "input", "prediction": "endpoint",
}


def test_flat_config_reads_as_the_nested_one():
    nested = {
        "method": "rigid", "lerp_sigma": 0.2, "condition_on_input": False, "prediction": "endpoint",
        "backbone": {"variant": "molecule-painn", "hidden": 32, "layers": 2, "n_rbf": 8, "max_contacts": 16,
                     "mol_cutoff": 40.0, "orientation_inputs": False},
    }
    flat, new = ModelConfig.from_dict(FLAT), ModelConfig.from_dict(nested)
    assert flat == new
    assert new.backbone == BackboneConfig(variant="molecule-painn", hidden=32, layers=2, n_rbf=8, max_contacts=16,
                                          mol_cutoff=40.0, orientation_inputs=False)
    assert ModelConfig.from_dict(flat.to_dict()) == flat  # to_dict writes the nested form, which round-trips
    # flat fields beside a nested backbone override its entries (a flat file merged over nested defaults)
    mixed = ModelConfig.from_dict({**ModelConfig().to_dict(), "hidden": 16})
    assert mixed.backbone == BackboneConfig(hidden=16)
    assert merge_config_dicts({"backbone": {"hidden": 8, "layers": 1}}, {"backbone": {"layers": 2}}) == {
        "backbone": {"hidden": 8, "layers": 2}}


@pytest.mark.parametrize("removed,match", [
    ({"target_frame": "central"}, "target_frame option was removed"),
    ({"lerp_exact_target": True}, "lerp_exact_target option was removed"),
    ({"lerp_exact_target": 0}, "lerp_exact_target option was removed"),
    ({"backbone": "frames", "prediction": "endpoint"}, "frames backbone was removed"),
    ({"backbone": {"variant": "frames"}}, "frames backbone was removed"),
])
def test_removed_options_are_named_in_the_error(removed, match):
    with pytest.raises(ValueError, match=match) as info:
        ModelConfig.from_dict({**FLAT, **removed})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("backbone", ["fast", "reference"])
@pytest.mark.parametrize("method", METHODS)
def test_loss_is_finite_scalar_and_translation_invariant(method, backbone):
    model = tiny(method, backbone).double()
    batch = small_batch()
    loss = model.loss(batch, torch.Generator().manual_seed(3))
    assert loss.shape == () and torch.isfinite(loss)
    shift = torch.tensor([7.0, -4.0, 2.5], dtype=torch.float64)
    moved = collate([make_record(5, seed=1), make_record(3, seed=2)]).to("cpu", torch.float64)
    moved.x_w, moved.x_s = moved.x_w + shift, moved.x_s + shift
    moved_loss = model.loss(moved, torch.Generator().manual_seed(3))
    torch.testing.assert_close(moved_loss, loss, atol=1e-9, rtol=1e-9)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("method", ["lerp", "ve", "vp", "rigid"])
def test_velocity_prior_predict(method):
    model = tiny(method).double()
    batch = small_batch()
    x0 = model.prior(batch, torch.Generator().manual_seed(0))
    assert x0.shape == batch.x_w.shape
    v_scalar = model.velocity(x0, 0.3, batch)
    v_vector = model.velocity(x0, torch.full((batch.num_graphs,), 0.3, dtype=torch.float64), batch)
    torch.testing.assert_close(v_scalar, v_vector)
    # the solver's Euler steps are steps of the velocity from the same prior draw
    x = x0.clone()
    dt = model.path.t_max / 4
    with torch.no_grad():
        for k in range(4):
            x = x + dt * model.velocity(x, k * dt, batch)
    pred, _, _ = integrate(model, batch, x0, steps=4, solver="euler")
    torch.testing.assert_close(pred, model.constrain(x, batch))


def test_velocity_is_translation_equivariant_frame_free():
    model = tiny("vp").double()
    batch = small_batch()
    x = batch.x_w + 0.3
    shift = torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)
    v = model.velocity(x, 0.5, batch)
    batch.x_w, batch.x_s = batch.x_w + shift, batch.x_s + shift
    torch.testing.assert_close(model.velocity(x + shift, 0.5, batch), v, atol=1e-10, rtol=0)


def test_lerp_prior_is_noisy_input_and_gnn_md_regresses():
    batch = small_batch()
    model = tiny("lerp", lerp_sigma=0.0)
    torch.testing.assert_close(model.prior(batch), batch.x_w)
    md = tiny("gnn-md").double()
    assert torch.equal(md.prior(batch), batch.x_w)
    pred = md.regress(batch)
    c = md.centres(batch)
    expect = batch.x_w + md.backbone(batch.x_w - c, batch.x_w - c, None, batch)
    torch.testing.assert_close(pred, expect.detach())
    with pytest.raises(ValueError, match="regress"):
        md.velocity(batch.x_w, 0.5, batch)
    with pytest.raises(ValueError, match="regress"):
        integrate(md, batch, batch.x_w)
    with pytest.raises(ValueError, match="flow"):
        model.regress(batch)


def overfit(method: str, **kw) -> tuple[float, float]:
    """First and final loss of a tiny model trained on one fixed 4-molecule cluster."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(method=method, backbone=BackboneConfig(hidden=32, layers=2, n_rbf=8), **kw))
    batch = collate([make_record(4, seed=5)])
    opt = torch.optim.Adam(model.parameters(), lr=OVERFIT_LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, OVERFIT_STEPS)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(OVERFIT_STEPS):
        loss = model.loss(batch, g)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        final = sum(model.loss(batch, g).item() for _ in range(5)) / 5
    return first, final


@pytest.mark.parametrize("method,kw", [("lerp", {"lerp_sigma": 0.0}), ("gnn-md", {}), ("rigid", {"lerp_sigma": 0.0})])
def test_tiny_model_overfits_one_cluster(method, kw):
    first, final = overfit(method, **kw)
    assert final * OVERFIT_FACTOR <= first, (first, final)


@pytest.mark.parametrize("method", ["lerp", "rigid"])
def test_unconditioned_velocity_ignores_x_w_beyond_the_start(method):
    """condition_on_input=False: v_θ(x_t, t) — turning a molecule of x_w about its centre changes nothing."""
    model = tiny(method, condition_on_input=False).double()
    batch = small_batch()
    x = batch.x_w + 0.2
    v = model.velocity(x, 0.4, batch)
    sel = batch.mol == 1
    c = batch.x_w[sel].mean(0)
    rot = torch.tensor(Rotation.from_rotvec([0.0, 0.0, 1.0]).as_matrix())
    batch.x_w[sel] = (batch.x_w[sel] - c) @ rot.T + c
    if method == "lerp":
        torch.testing.assert_close(model.velocity(x, 0.4, batch), v, atol=1e-10, rtol=0)
    conditioned = tiny(method).double()
    assert not torch.allclose(conditioned.velocity(x, 0.4, batch), conditioned.velocity(x, 0.4, small_batch()))
    assert torch.isfinite(model.loss(small_batch(), torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError):
        ModelConfig(method="ve", condition_on_input=False)


# ------------------------------------------------------------------------------- endpoint prediction

#: an asymmetric molecule for the endpoint checks
MOL5 = np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [2.1, 1.2, 0.0], [-0.7, 1.1, 0.3], [0.3, -0.9, 0.9]])
Z5 = np.array([6, 6, 8, 7, 1])


def batch64(n_mol: int = 7, seed: int = 1):
    return collate([toy_cluster(MOL5, Z5, n_mol, seed=seed), toy_cluster(MOL5[:4], Z5[:4], 5, seed=seed + 1)]).to(
        "cpu", torch.float64)


class _Oracle(torch.nn.Module):
    """A 'backbone' that predicts the displacement to a known (centred) crystal exactly."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target

    def forward(self, x, x_w, t, batch):  # noqa: ANN001, ANN201 - backbone signature
        return self.target - x


@pytest.mark.parametrize("method,steps,tol", [("lerp", 5, 1e-9), ("rigid", 40, 0.05)])
def test_endpoint_velocity_integrates_to_the_predicted_crystal(method, steps, tol):
    b = batch64()
    model = build_model(ModelConfig(method=method, prediction="endpoint", condition_on_input=False)).double()
    c = model.centres(b)
    model.backbone = _Oracle(b.x_s - c)
    out, _, _ = integrate(model, b, b.x_w.clone(), steps=steps, solver="euler")  # no prior noise: exact check
    assert float((out - b.x_s).norm(dim=-1).max()) < tol


def test_endpoint_loss_is_zero_for_the_oracle():
    b = batch64()
    for method in ("lerp", "rigid"):
        model = build_model(ModelConfig(method=method, prediction="endpoint")).double()
        model.backbone = _Oracle(b.x_s - model.centres(b))
        assert float(model.loss(b)) < 1e-12


def test_prediction_options_validated():
    with pytest.raises(ValueError, match="endpoint"):
        ModelConfig(method="ve", prediction="endpoint")
    with pytest.raises(ValueError, match="prediction"):
        ModelConfig(prediction="noise")
