"""Tests of endpoint prediction, the central target frame and fresh noise draws."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from toys import toy_cluster

from crystalflow.data.dataset import collate
from crystalflow.flow.model import ModelConfig, align_to_central, build_model
from crystalflow.nn.frames import molecule_frames

pytestmark = pytest.mark.usefixtures("single_thread")

MOL = np.array([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [2.1, 1.2, 0.0], [-0.7, 1.1, 0.3], [0.3, -0.9, 0.9]])
Z = np.array([6, 6, 8, 7, 1])


def batch64(n_mol: int = 7, seed: int = 1):
    return collate([toy_cluster(MOL, Z, n_mol, seed=seed), toy_cluster(MOL[:4], Z[:4], 5, seed=seed + 1)]).to(
        "cpu", torch.float64)


def angle_deg(r: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.arccos(((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)))


def test_align_to_central_turns_the_cluster_rigidly_onto_the_central_orientation():
    b = batch64()
    aligned = align_to_central(b.x_w, b.x_s, b)
    for g in range(b.num_graphs):  # a rigid motion of each cluster: all distances kept, centroid kept
        m = b.graph == g
        torch.testing.assert_close(torch.cdist(aligned[m], aligned[m]), torch.cdist(b.x_s[m], b.x_s[m]))
        torch.testing.assert_close(aligned[m].mean(0), b.x_s[m].mean(0))
    f_w, _ = molecule_frames(b.x_w, b)
    f_a, _ = molecule_frames(aligned, b)
    central = torch.tensor([0, 7])  # first molecule of each cluster: x_w's orientation (toy noise is proper)
    assert float(angle_deg(f_w[central].transpose(1, 2) @ f_a[central]).max()) < 1e-5
    other = torch.tensor([1, 8])
    assert float(angle_deg(f_w[other].transpose(1, 2) @ f_a[other]).min()) > 1.0  # the others still have to turn


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
    model.path.prior_sample = lambda x_w, graph, num, gen=None: x_w.clone()  # no prior noise: exact check
    out = model.predict(b, steps=steps)
    assert float((out - b.x_s).norm(dim=-1).max()) < tol


def test_endpoint_loss_is_zero_for_the_oracle():
    b = batch64()
    for method in ("lerp", "rigid"):
        model = build_model(ModelConfig(method=method, prediction="endpoint")).double()
        model.backbone = _Oracle(b.x_s - model.centres(b))
        assert float(model.loss(b)) < 1e-12


def test_prediction_and_target_frame_options_validated():
    with pytest.raises(ValueError, match="endpoint"):
        ModelConfig(method="ve", prediction="endpoint")
    with pytest.raises(ValueError, match="prediction"):
        ModelConfig(prediction="noise")
    with pytest.raises(ValueError, match="target_frame"):
        ModelConfig(target_frame="lab")


def test_fresh_noise_dataset_draws_rigid_copies_per_epoch(tmp_path):
    import shutil

    import crystalflow
    from crystalflow.common.errors import UserError
    from crystalflow.data.build import build_dataset
    from crystalflow.data.dataset import ClusterDataset, FreshNoiseDataset, dataset_noise
    from crystalflow.data.noise import noise_model
    from crystalflow.data.pipeline import BuildSettings

    cifs = tmp_path / "cifs"
    cifs.mkdir()
    shutil.copy(f"{crystalflow.embedded_cif_dir()}/2100348-benzene.cif", cifs)
    build_dataset(str(cifs), str(tmp_path / "d"), BuildSettings(noise=noise_model("solution", inversion=True)),
                  workers=1, progress=False)
    noise = dataset_noise(str(tmp_path / "d"))
    assert noise == noise_model("solution", inversion=True)
    base = ClusterDataset(str(tmp_path / "d"), "all")
    fresh = FreshNoiseDataset(base, noise, seed=3)
    a = fresh[0]
    np.testing.assert_array_equal(fresh[0].x_w, a.x_w)  # a function of (seed, epoch, index)
    np.testing.assert_array_equal(a.x_s, base[0].x_s)
    assert not np.allclose(a.x_w, base[0].x_w)
    fresh.set_epoch(1)
    assert not np.allclose(fresh[0].x_w, a.x_w)
    for m in range(a.x_s.shape[0]):  # every molecule is a rigid (or mirrored) copy of its crystal pose
        d_w = np.linalg.norm(a.x_w[m][:, None] - a.x_w[m][None], axis=-1)
        d_s = np.linalg.norm(a.x_s[m][:, None] - a.x_s[m][None], axis=-1)
        np.testing.assert_allclose(d_w, d_s, atol=1e-4)
    (tmp_path / "d" / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="noise settings"):
        dataset_noise(str(tmp_path / "d"))
