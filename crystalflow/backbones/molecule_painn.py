"""The ``molecule-painn`` backbone: an SO(3)-equivariant network over a cluster's molecules that outputs rigid poses.

Equivariance is built in rather than learned. Expressing the cluster in its central molecule's frame
would make every input invariant, but under the ``solution`` noise that frame is a uniformly random
rotation of the crystal's: the lattice of centres would arrive at a random orientation and the
network would have to learn rotation equivariance from data. Instead:

- **Nodes** are the molecules of a cluster (17 in COD-Cluster17): scalar features s_i (the molecule's
  shape seen in its own frame, atom types, time, whether it is the central one) and F vector channels v_i.
- **Starting vectors from the lattice.** A polar sum Σ_j w(d_ij) r̂_ij over the neighbours vanishes
  wherever they are centrosymmetric about the molecule — and every lattice is — although a triclinic
  lattice still fixes a proper orientation. So each molecule gets second moments of its neighbour
  directions, A_k = Σ_j w_k(d_ij) r̂_ij r̂_ijᵀ with learned radial weights, taken in pairs: the
  commutator A_k B_k − B_k A_k is an axial vector, which survives inversion, and A_k applied to it a
  polar one. On a toy triclinic crystal (tests/backbones/test_molecule_painn.py, random input orientations) the network
  turns unseen inputs to about 25° within 500 steps; without these starting vectors it stays at the
  random level (two seeds each).
- **Axes.** Each molecule's frame P_i is read from its atoms (:func:`molecule_axes`): principal axes of
  its atom cloud where they are well defined, their signs fixed by the third moment; the atom-indexed
  anchor frame of :func:`crystalflow.nn.frames.molecule_frames` where they are not (degenerate
  eigenvalues, symmetric projections). Principal axes are geometric, so "long axis along the shortest
  neighbour vector" reads the same for every molecule; rigid copies of one conformer get rotated copies
  of one frame. The axes place the output and define the shape features.
- **Orientation inputs** (``orientation_inputs``, on by default): the molecules' current orientations enter as
  vector channels (their axes, mixed) and as pair invariants (P_iᵀP_j and the pair direction in both
  frames). Where the input orientations are uniformly random (the ``solution`` preset) they are pure
  noise at t = 0, and a network that has to learn to ignore them learns the lattice less reliably (on
  the toy crystal one seed of two stays at the random level for 500 steps): switch them off there. Where they are
  kept to some degree (``melt``) they carry the information: neighbours that should be parallel
  vote on a common orientation.
- **Messages** over all molecule pairs of a cluster mix invariants (centre distance, projections of
  both molecules' vector channels on the pair direction, and the orientation invariants) into gates of
  three equivariant terms: r̂_ij, the neighbour's channels v_j and their cross products v_j × r̂_ij.
  The update adds channel cross products (u × w) too: the network is SO(3)- but not O(3)-equivariant,
  as it must be (a mirrored cluster is another crystal).
- **Output.** Per molecule a centre shift and two vectors that Gram–Schmidt turns into the new
  orientation F̂_i of its axes — with orientation inputs added to its current first two axes (zero
  output: stand still), without them on their own (the lattice alone decides); the molecule is placed
  at ĉ_i with its atoms F̂_i P_iᵀ(x − c_i) about it, returned as a rigid per-atom displacement. Meant
  for ``prediction='endpoint'`` (lerp, rigid) and gnn-md.

Exactly rotation-equivariant (tests), translation-invariant, equivariant under reordering the
neighbours (the first molecule is the central one); x_w is not an input (use ``condition_on_input``
false, or gnn-md, which gives it x_w as x).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from crystalflow.data.dataset import Batch
from crystalflow.nn.blocks import (
    OUTPUT_LENGTH_SCALE,
    EquivariantNorm,
    GaussianRBF,
    ShapeEmbedding,
    TimeEmbedding,
    mlp,
    vector_norm,
)
from crystalflow.nn.frames import gram_schmidt, in_frame, molecule_frames
from crystalflow.nn.graph import NORM_EPS, molecule_pairs, segment_mean

if TYPE_CHECKING:
    from crystalflow.backbones.registry import BackboneConfig

#: centre offsets are divided by this length (Å) before entering the network
LENGTH_SCALE = 10.0
#: centre distances are expanded in radial features up to this distance (Å)
CENTRE_RBF_MAX = 30.0
#: principal axes whose eigenvalue gap is below this fraction of the largest eigenvalue are not used
AXIS_GAP = 0.02
#: an axis whose normalised third moment is below this takes its sign from the anchor frame
AXIS_SKEW = 0.05
#: pairs of neighbour-direction tensors whose commutators give each molecule's axial starting vectors
TENSOR_PAIRS = 8


@torch.no_grad()
def molecule_axes(x: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """Per-molecule proper frames P [G, 3, 3] (columns: axes) and centres c [G, 3] of positions ``x`` [N, 3].

    Principal axes of the centred atoms (largest spread first), each sign chosen so the third moment
    along it is positive; the third axis is the cross product of the first two. Where an axis sign is
    ambiguous (small third moment) it is taken from the anchor frame; where the eigenvalues are
    (nearly) degenerate the anchor frame is used whole.
    """
    g = batch.num_molecules
    anchor, c = molecule_frames(x, batch)
    r = x - c[batch.mol]
    cov = x.new_zeros(g, 3, 3).index_add_(0, batch.mol, r[:, :, None] * r[:, None, :])
    lam, vec = torch.linalg.eigh(cov)  # ascending
    lam, vec = lam.flip(-1), vec.flip(-1)  # largest spread first
    proj = torch.einsum("nij,ni->nj", vec[batch.mol], r)  # [N, 3] coordinates along the axes
    m2, m3 = segment_mean(proj**2, batch.mol, g), segment_mean(proj**3, batch.mol, g)
    skew = m3 / m2.clamp(min=NORM_EPS) ** 1.5
    anchor_sign = torch.sign((vec * anchor).sum(1))  # agreement of each axis with the anchor frame's
    anchor_sign = torch.where(anchor_sign == 0, torch.ones_like(anchor_sign), anchor_sign)
    sign = torch.where(skew.abs() >= AXIS_SKEW, torch.sign(skew), anchor_sign)
    e1, e2 = vec[:, :, 0] * sign[:, :1], vec[:, :, 1] * sign[:, 1:2]
    axes = torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=-1)
    gap = torch.minimum(lam[:, 0] - lam[:, 1], lam[:, 1] - lam[:, 2]) / lam[:, 0].clamp(min=NORM_EPS)
    return torch.where((gap >= AXIS_GAP)[:, None, None], axes, anchor), c


def commutator_axial(a: Tensor, b: Tensor) -> Tensor:
    """The axial vector of AB − BA for symmetric 3×3 tensors ``a``, ``b`` [..., 3, 3]: vee of the commutator."""
    c = a @ b - b @ a
    return torch.stack([c[..., 2, 1], c[..., 0, 2], c[..., 1, 0]], dim=-1)


class MoleculePaiNN(nn.Module):
    """The ``molecule-painn`` backbone (see the module docstring). ``hidden`` features, ``layers`` passes."""

    #: the output is a rigid displacement per molecule (endpoint prediction or gnn-md only)
    rigid_output = True

    #: per-pair invariants of the orientations: P_iᵀP_j (9) and the pair direction in both frames (3 + 3)
    N_ORIENTATION_INVARIANTS = 15

    def __init__(self, cfg: BackboneConfig, time: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        f, n = cfg.hidden, cfg.n_rbf
        self.shapes = ShapeEmbedding(f)
        self.central = nn.Parameter(torch.zeros(f))
        self.time = TimeEmbedding(f) if time else None
        self.axes_in = nn.Linear(3, f, bias=False) if cfg.orientation_inputs else None
        self.rbf = GaussianRBF(n, CENTRE_RBF_MAX)
        self.tensor_weights = mlp(n, f, 2 * TENSOR_PAIRS)
        self.tensor_vectors = nn.Linear(2 * TENSOR_PAIRS, f, bias=False)
        n_pair = 4 * f + n + 1 + (self.N_ORIENTATION_INVARIANTS if cfg.orientation_inputs else 0)
        self.messages = nn.ModuleList(mlp(n_pair, f, 4 * f) for _ in range(cfg.layers))
        self.mix = nn.ModuleList(nn.Linear(f, 3 * f, bias=False) for _ in range(cfg.layers))
        self.gates = nn.ModuleList(mlp(2 * f, f, 4 * f) for _ in range(cfg.layers))
        self.norms = nn.ModuleList(EquivariantNorm(f) for _ in range(cfg.layers))
        self.out_vectors = nn.Linear(f, 3, bias=False)
        self.out_gates = mlp(f, f, 3)
        with torch.no_grad():  # start near "stand still"
            self.out_gates[-1].weight.mul_(0.1)
            self.out_gates[-1].bias.zero_()

    def forward(self, x: Tensor, x_w: Tensor, t: Tensor | None, batch: Batch) -> Tensor:
        """One rigid displacement [N, 3] per atom (see the module docstring); ``x_w`` is not used."""
        f = self.cfg.hidden
        mol, mg = batch.mol, batch.mol_graph
        axes, c = molecule_axes(x, batch)
        r_atom = x - c[mol]

        # scalars: shape in the molecule's own frame, pooled; central flag; time
        s = self.shapes(axes, r_atom, batch)
        central = torch.arange(batch.num_molecules, device=x.device) == batch.central[mg]
        s = s + central[:, None].to(x.dtype) * self.central
        if self.time is not None:
            if t is None:
                raise ValueError("this backbone embeds time: pass t")
            s = s + self.time(t)[mg]

        gi, gj = molecule_pairs(mg)  # messages j -> i
        rel = (c[gj] - c[gi]) / LENGTH_SCALE
        d = torch.sqrt((rel * rel).sum(-1) + NORM_EPS)
        unit = rel / d[:, None]
        rbf = self.rbf(d * LENGTH_SCALE)
        count = (batch.n_mol[mg] - 1).clamp(min=1).to(x.dtype)[:, None]  # neighbours per molecule

        # starting vectors from the lattice alone: commutators of paired neighbour-direction tensors (axial)
        # and the first tensor of each pair applied to them (polar); see the module docstring
        weight = self.tensor_weights(rbf) / count[gi]
        outer = unit[:, :, None] * unit[:, None, :]  # [P, 3, 3]
        tensors = torch.einsum("pk,pij->pkij", weight, outer)
        tensors = tensors.new_zeros(batch.num_molecules, *tensors.shape[1:]).index_add_(0, gi, tensors)
        t_a, t_b = tensors.split(TENSOR_PAIRS, dim=1)
        axial = commutator_axial(t_a, t_b)  # [G, K, 3]
        polar = torch.einsum("gkij,gkj->gki", t_a, axial)
        v = self.tensor_vectors(torch.cat([axial, polar], 1).transpose(1, 2))  # [G, 3, F]
        if self.cfg.orientation_inputs:
            v = v + self.axes_in(axes)
        geometry = [d[:, None], rbf]
        if self.cfg.orientation_inputs:
            geometry += [(axes[gi].transpose(1, 2) @ axes[gj]).flatten(1), in_frame(axes[gi], unit),
                         in_frame(axes[gj], unit)]
        geometry = torch.cat(geometry, -1)
        for message, mix, gate, norm in zip(self.messages, self.mix, self.gates, self.norms):
            proj_i = (v[gi] * unit[:, :, None]).sum(1)  # [P, F] channels along the pair direction
            proj_j = (v[gj] * unit[:, :, None]).sum(1)
            ds, g_r, g_v, g_x = message(torch.cat([s[gi], s[gj], proj_i, proj_j, geometry], -1)).split(f, -1)
            vj = v[gj]
            dv = (unit[:, :, None] * g_r[:, None, :] + vj * g_v[:, None, :]
                  + torch.linalg.cross(vj, unit[:, :, None].expand_as(vj), dim=1) * g_x[:, None, :])
            s = s + torch.zeros_like(s).index_add_(0, gi, ds) / count
            v = v + torch.zeros_like(v).index_add_(0, gi, dv) / count[:, :, None]
            u, w, y = mix(v).split(f, -1)
            a_vv, a_sv, a_ss, a_x = gate(torch.cat([s, vector_norm(w)], -1)).split(f, -1)
            s = s + a_sv * (u * w).sum(1) + a_ss
            v = v + a_vv[:, None, :] * u + a_x[:, None, :] * torch.linalg.cross(u, y, dim=1)
            s, v = norm(s, v)

        out = self.out_vectors(v) * self.out_gates(s)[:, None, :]  # [G, 3, 3]: shift, two axis vectors
        shift = out[:, :, 0] * OUTPUT_LENGTH_SCALE
        # the new orientation F̂_i of the axes: with orientation inputs a correction of the current one (zero
        # output = no turn), without them read off the lattice alone
        a, b = out[:, :, 1], out[:, :, 2]
        if self.cfg.orientation_inputs:
            a, b = axes[:, :, 0] + a, axes[:, :, 1] + b
        turn = gram_schmidt(a, b) @ axes.transpose(1, 2)
        return shift[mol] + torch.einsum("nij,nj->ni", turn[mol], r_atom) - r_atom
