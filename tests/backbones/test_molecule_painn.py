"""Tests of the molecule PaiNN backbone: molecule axes, rigid outputs, SO(3) (not O(3)) equivariance, learning."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from toys import toy_cluster

from crystalflow.backbones.molecule_painn import molecule_axes
from crystalflow.backbones.registry import BackboneConfig, build_backbone
from crystalflow.data.dataset import collate
from crystalflow.data.shards import ClusterRecord
from crystalflow.flow.model import ModelConfig, build_model
from crystalflow.nn.frames import molecule_frames

pytestmark = pytest.mark.usefixtures("single_thread")

#: an asymmetric molecule (distinct principal moments, skewed along every axis)
MOL = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.3, 1.3, 0.0], [-0.8, 1.0, 0.4], [0.2, -1.1, 1.0], [3.4, 1.5, 0.6]])
Z = np.array([6, 6, 8, 7, 1, 1])
#: a regular hexagon: two equal principal moments, no third moment (the anchor frame must take over)
HEXAGON = np.array([[np.cos(a), np.sin(a), 0.0] for a in np.arange(6) * np.pi / 3]) * 1.4
SMALL = BackboneConfig(variant="molecule-painn", hidden=16, layers=2, n_rbf=8)
MOLECULE_PAINN = BackboneConfig(variant="molecule-painn")


def tiny_net(**overrides):
    """A seeded float64 molecule-painn backbone (SMALL with ``overrides``)."""
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(**{**SMALL.__dict__, **overrides})).double()


def batch64(template=MOL, z=Z, n_mol: int = 7, seed: int = 1):
    return collate([toy_cluster(template, z, n_mol, seed=seed)]).to("cpu", torch.float64)


def test_axes_are_proper_and_turn_with_rigid_copies():
    b = batch64()
    axes, c = molecule_axes(b.x_s, b)
    eye = torch.eye(3, dtype=torch.float64).expand(len(axes), 3, 3)
    torch.testing.assert_close(axes.transpose(1, 2) @ axes, eye)
    torch.testing.assert_close(torch.linalg.det(axes), torch.ones(len(axes), dtype=torch.float64))
    # every molecule is a rigid copy of the first: in its own axes it has the same coordinates
    local = torch.einsum("nji,nj->ni", axes[b.mol], b.x_s - c[b.mol]).reshape(7, len(Z), 3)
    torch.testing.assert_close(local, local[:1].expand_as(local), atol=1e-5, rtol=0)  # float32 data
    # the principal axes (not the atom-indexed anchor frame) are used for this molecule: largest spread first
    spread = local[0].square().sum(0)
    assert bool(spread[0] > spread[1] > spread[2])
    anchor, _ = molecule_frames(b.x_s, b)
    assert not torch.allclose(axes, anchor, atol=1e-3)
    q = torch.tensor(Rotation.random(random_state=4).as_matrix())
    moved, _ = molecule_axes(b.x_s @ q.T - 2.0, b)
    torch.testing.assert_close(moved, q @ axes, atol=1e-9, rtol=0)


def test_axes_fall_back_to_the_anchor_frame_for_symmetric_tops():
    b = batch64(HEXAGON, np.full(6, 6))
    axes, _ = molecule_axes(b.x_s, b)
    anchor, _ = molecule_frames(b.x_s, b)
    torch.testing.assert_close(axes, anchor)


def test_outputs_are_rigid_displacements_and_zero_output_stands_still():
    net = tiny_net()
    b = batch64()
    x = b.x_w + 0.4 * (b.x_s - b.x_w)
    t = torch.tensor([0.3], dtype=torch.float64)
    with torch.no_grad():
        end = x + net(x, b.x_w, t, b)
        assert (end - x).abs().max() > 1e-3
        for g in range(b.num_molecules):  # each molecule moved as a rigid body
            m = b.mol == g
            torch.testing.assert_close(torch.cdist(end[m], end[m]), torch.cdist(x[m], x[m]), atol=1e-9, rtol=0)
        net.out_vectors.weight.zero_()
        torch.testing.assert_close(net(x, b.x_w, t, b), torch.zeros_like(x), atol=1e-12, rtol=0)


def test_x_w_is_not_an_input():
    net = tiny_net()
    b = batch64()
    x = b.x_w + 0.5 * (b.x_s - b.x_w)
    t = torch.tensor([0.5], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x, b.x_w, t, b), net(x, b.x_s, t, b))


def test_without_orientation_inputs_the_prediction_ignores_how_molecules_are_turned():
    net = tiny_net(orientation_inputs=False)
    b = batch64()
    t = torch.tensor([0.2], dtype=torch.float64)
    c = torch.stack([b.x_w[b.mol == g].mean(0) for g in range(b.num_molecules)])
    rots = torch.tensor(Rotation.random(b.num_molecules, random_state=6).as_matrix())
    turned = torch.einsum("nij,nj->ni", rots[b.mol], b.x_w - c[b.mol]) + c[b.mol]
    with torch.no_grad():
        end = b.x_w + net(b.x_w, b.x_w, t, b)
        end_turned = turned + net(turned, turned, t, b)
    torch.testing.assert_close(end_turned, end, atol=1e-9, rtol=0)


def centrosymmetric_cluster() -> ClusterRecord:
    """A central molecule and three pairs of neighbours related by inversion through the central centre."""
    body = MOL - MOL.mean(0)
    rots = Rotation.random(3, random_state=5).as_matrix()
    shifts = np.array([[4.5, 0.3, 0.0], [0.2, 5.0, 1.0], [-1.0, 0.5, 6.0]])
    mols = [body] + [m for r, s in zip(rots, shifts) for m in (body @ r.T + s, -(body @ r.T + s))]
    x = np.stack(mols)
    return ClusterRecord(x_s=x, x_w=x, z=Z)


def test_inversion_of_the_input_is_not_an_equivariance():
    """SO(3), not O(3): a mirrored cluster is another crystal, and cross products let the network tell them apart."""
    net = tiny_net()
    b = collate([centrosymmetric_cluster()]).to("cpu", torch.float64)
    t = torch.tensor([0.0], dtype=torch.float64)
    with torch.no_grad():
        out = net(b.x_s, b.x_w, t, b)
        mirrored = net(-b.x_s, -b.x_w, t, b)
    # an O(3)-equivariant network would give exactly -out for the inverted input
    assert float((mirrored + out).abs().max()) > 1e-3


def test_config_requires_endpoint_prediction():
    with pytest.raises(ValueError, match="molecule-painn backbone"):
        ModelConfig(method="rigid", backbone=MOLECULE_PAINN)
    ModelConfig(method="gnn-md", backbone=MOLECULE_PAINN)
    ModelConfig(method="lerp", backbone=MOLECULE_PAINN, prediction="endpoint")


#: a triclinic lattice (Å): no proper rotation maps it onto itself, so it fixes an orientation
LATTICE = np.array([[5.0, 0.0, 0.0], [1.2, 6.1, 0.0], [0.7, 1.5, 7.3]])


def test_learns_to_turn_every_molecule_to_the_crystal_orientation():
    """One crystal (copies of one molecule in one orientation on a triclinic lattice), random orientations
    drawn anew every step: the lattice alone (no orientation inputs) turns unseen inputs far closer to the
    crystal within 500 steps. Without the commutator starting vectors this stays at the random level."""
    torch.manual_seed(0)
    net = BackboneConfig(variant="molecule-painn", hidden=32, layers=2, n_rbf=8, orientation_inputs=False)
    cfg = ModelConfig(method="gnn-md", backbone=net)
    model = build_model(cfg).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    body = MOL - MOL.mean(0)
    cells = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3) @ LATTICE
    centres = cells[np.argsort(np.linalg.norm(cells, axis=1), kind="stable")[:9]]
    x_s = body[None] + centres[:, None]

    def draw(seed: int):
        rng = np.random.default_rng(seed)
        rot = Rotation.random(9, random_state=seed).as_matrix()
        x_w = np.einsum("mij,nj->mni", rot, body) + (centres + rng.normal(0, 0.3, centres.shape))[:, None]
        return collate([ClusterRecord(x_s=x_s, x_w=x_w, z=Z)]).to("cpu", torch.float64)

    def angle(batch) -> float:
        with torch.no_grad():
            pred = model.regress(batch).reshape(9, len(Z), 3)
        p = (pred - pred.mean(1, keepdim=True)).numpy()
        return float(np.degrees(np.mean([Rotation.align_vectors(q, body)[0].magnitude() for q in p])))

    test = [draw(10_000 + k) for k in range(4)]
    before = np.mean([angle(b) for b in test])
    for step in range(500):
        loss = model.loss(draw(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = np.mean([angle(b) for b in test])
    assert before > 90.0 and after < 0.5 * before, (before, after)
