"""Molecule-frame backbone: orientations as first-class features, for packings whose molecules must turn.

PaiNN (:mod:`crystalflow.backbones.painn`) sees a cluster through atom-pair distances and directions; to
learn how molecule j must turn relative to molecule i it has to assemble both orientations from
vector features first, and in practice it does not (orientation errors stay at the random level,
≈ 126°). This backbone gives every molecule an orientation frame and describes the cluster by the
*relative poses* of its molecules, so "turn parallel to your neighbour" is a function of the inputs,
not something to discover:

- **Frames.** Every molecule of a cluster has the same atom order, so a rotation F_i can be read
  from its atoms alone: the proper Kabsch fit of a fixed, atom-indexed anchor point set W onto the
  centred atoms (F_i W_a ≈ x_a − c_i). It turns with the molecule (F_i → Q F_i under a rotation Q of
  the input), so for rigid copies x_i = R_i p + c_i one gets F_i = R_i F_p and the relative rotation
  F_iᵀ F_j is the copies' relative orientation in a fixed basis.
- **Central frame.** The cluster is expressed in its central molecule's frame (F_0, c_0; the
  central molecule is the first of its cluster, as in every COD-Cluster17 file). Per molecule: its
  centre F_0ᵀ(c_i − c_0) and orientation F_0ᵀF_i, the same for x_w, its atoms in its own frame
  F_iᵀ(x_a − c_i) (shape, and handedness: a mirrored copy looks different), whether it is the central
  molecule, and the time. Per ordered pair (i, j): the centre offsets (x and x_w) in the central
  frame, F_iᵀF_j and radial features of both centre distances. All of these are invariant.
- **Network.** Gated message passing over all molecule pairs of a cluster (17 molecules: 272 pairs).
- **Output.** Per molecule a centre shift u_i and a turn G_i about its centre (6-d representation,
  Zhou et al. 2019; zero output = no turn), both expressed in the central frame, returned as the
  rigid per-atom displacement F_0u_i + (F_0 G_i F_0ᵀ − 1)(x_a − c_i) — a finite rotation, so an
  endpoint model (``prediction='endpoint'``) can turn a molecule by 180° with a smooth output.

The output is exactly rotation-equivariant and translation-invariant, and reordering the neighbours
(molecules after the first) reorders it. It is not reflection-equivariant (a mirrored cluster is a
different crystal), and it is undefined for molecules whose atoms are collinear or a single atom (the
frame about the axis is arbitrary); those are not molecular crystals this package builds. Every
output is a rigid displacement: meant for ``prediction='endpoint'`` (lerp or rigid) and for gnn-md.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crystalflow.backbones.painn import (
    MAX_Z,
    OUTPUT_LENGTH_SCALE,
    BackboneConfig,
    GaussianRBF,
    TimeEmbedding,
    molecule_pairs,
)
from crystalflow.data.dataset import Batch
from crystalflow.nn.rigid import fit_rotations, segment_mean

#: positions are divided by this length (Å) before entering the network
LENGTH_SCALE = 10.0
#: centre distances are expanded in radial features up to this distance (Å)
CENTRE_RBF_MAX = 30.0


def anchor_points(index: Tensor, dtype: torch.dtype) -> Tensor:
    """Fixed, non-degenerate points W [N, 3] for atom indices ``index`` [N] (the same in every molecule).

    A closed form (no random generator) so that frames are identical on every platform and version.
    """
    a = index.to(dtype)[:, None]
    phase = torch.tensor([0.3, 1.7, 2.9], dtype=dtype, device=index.device)
    freq = torch.tensor([1.13, 2.31, 3.77], dtype=dtype, device=index.device)
    return torch.sin(phase + freq * (a + 1.0))


def molecule_frames(x: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
    """Per-molecule frames F [G, 3, 3] (proper rotations) and centres c [G, 3] of positions ``x`` [N, 3].

    F_i is the rotation taking the centred anchor points of the molecule's atoms onto its centred atoms.
    """
    g = batch.num_molecules
    c = segment_mean(x, batch.mol, g)
    w = anchor_points(batch.atom_in_mol, x.dtype)
    w = w - segment_mean(w, batch.mol, g)[batch.mol]
    return fit_rotations(w, x - c[batch.mol], batch.mol, g, proper=True), c


def in_frame(frames: Tensor, v: Tensor) -> Tensor:
    """Fᵀ v for frames [K, 3, 3] and vectors [K, 3]."""
    return torch.einsum("kji,kj->ki", frames, v)


def gram_schmidt(a: Tensor, b: Tensor) -> Tensor:
    """Proper rotations [K, 3, 3] whose first column is along ``a`` [K, 3] and second in the (a, b) plane."""
    e1 = a / a.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    e2 = b - (e1 * b).sum(-1, keepdim=True) * e1
    e2 = e2 / e2.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    return torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=-1)


def rotation_6d(a: Tensor, b: Tensor) -> Tensor:
    """Rotations [K, 3, 3] from two 3-vectors per row (Gram–Schmidt of e_x + a, e_y + b; zero = identity)."""
    return gram_schmidt(a + a.new_tensor([1.0, 0.0, 0.0]), b + b.new_tensor([0.0, 1.0, 0.0]))


#: atom coordinates in their molecule's own frame are divided by this (Å) before the shape embedding
SHAPE_SCALE = 5.0


class ShapeEmbedding(nn.Module):
    """Per-molecule features of its shape: its atoms (type and position in the molecule's own frame),
    embedded and pooled. Invariant to how the molecule is turned; a mirrored copy looks different."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.z = nn.Embedding(MAX_Z, hidden)
        self.atom = mlp(4, hidden, hidden)
        self.shape = mlp(hidden, hidden, hidden)

    def forward(self, frames: Tensor, r: Tensor, batch: Batch) -> Tensor:
        """[G, F] from per-molecule frames [G, 3, 3] and atom positions relative to their centre ``r`` [N, 3]."""
        local = in_frame(frames[batch.mol], r) / SHAPE_SCALE
        atoms = self.z(batch.z) + self.atom(torch.cat([local, local.norm(dim=-1, keepdim=True)], -1))
        return self.shape(segment_mean(atoms, batch.mol, batch.num_molecules))


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Linear, SiLU, linear."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


class MoleculeFrameNet(nn.Module):
    """The ``frames`` backbone (see the module docstring). ``hidden`` features, ``layers`` message passes."""

    #: per-molecule inputs: centre and orientation in the central frame, for x and x_w (3 + 9, twice), central flag
    N_MOL_FEATS = 25
    #: per-pair inputs: centre offsets in the central frame (x, x_w: 3 + 3), relative rotation (9)
    N_PAIR_FEATS = 15

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f, n = cfg.hidden, cfg.n_rbf
        self.shapes = ShapeEmbedding(f)
        self.mol_in = mlp(self.N_MOL_FEATS, f, f)
        self.time = TimeEmbedding(f) if cfg.time else None
        self.rbf = GaussianRBF(n, CENTRE_RBF_MAX)
        self.pair_in = mlp(self.N_PAIR_FEATS + 2 * n, f, f)
        self.messages = nn.ModuleList(mlp(3 * f, f, 2 * f) for _ in range(cfg.layers))
        self.updates = nn.ModuleList(mlp(2 * f, f, f) for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(f) for _ in range(cfg.layers))
        self.out = mlp(f, f, 9)
        with torch.no_grad():  # start near "stand still"
            self.out[-1].weight.mul_(0.1)
            self.out[-1].bias.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN202 - torch hook
        for key in [k for k in state_dict if k.startswith(tuple(f"{prefix}{n}." for n in ("z", "atom", "shape")))]:
            state_dict[f"{prefix}shapes.{key[len(prefix):]}"] = state_dict.pop(key)  # before ShapeEmbedding
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor, x_w: Tensor, t: Tensor | None, batch: Batch) -> Tensor:
        """One rigid displacement [N, 3] per atom (equivariant; see the module docstring)."""
        mol, mg = batch.mol, batch.mol_graph
        frames, c = molecule_frames(x, batch)
        frames_w, c_w = molecule_frames(x_w, batch)
        first = batch.central
        central = (torch.arange(batch.num_molecules, device=x.device) == first[mg]).to(x.dtype)
        f0, c0 = frames[first][mg], c[first][mg]  # the central frame, per molecule

        # shape: every atom in its own molecule's frame, embedded and pooled per molecule
        h = self.shapes(frames, x - c[mol], batch)

        pos, pos_w = in_frame(f0, c - c0), in_frame(f0, c_w - c0)  # centres in the central frame
        orient, orient_w = f0.transpose(1, 2) @ frames, f0.transpose(1, 2) @ frames_w
        mol_feats = torch.cat([pos / LENGTH_SCALE, orient.flatten(1), pos_w / LENGTH_SCALE, orient_w.flatten(1),
                               central[:, None]], -1)
        h = h + self.mol_in(mol_feats)
        if self.time is not None:
            if t is None:
                raise ValueError("this backbone embeds time: pass t")
            h = h + self.time(t)[mg]

        gi, gj = molecule_pairs(mg)  # messages j -> i
        d, d_w = pos[gj] - pos[gi], pos_w[gj] - pos_w[gi]
        pair_feats = torch.cat([
            d / LENGTH_SCALE, d_w / LENGTH_SCALE, (frames[gi].transpose(1, 2) @ frames[gj]).flatten(1),
            self.rbf(d.norm(dim=-1)), self.rbf(d_w.norm(dim=-1)),
        ], -1)
        e = self.pair_in(pair_feats)
        count = (batch.n_mol[mg] - 1).clamp(min=1).to(x.dtype)[:, None]
        f = self.cfg.hidden
        for message, update, norm in zip(self.messages, self.updates, self.norms):
            m, gate = message(torch.cat([h[gi], h[gj], e], -1)).split(f, dim=-1)
            agg = torch.zeros_like(h).index_add_(0, gi, torch.sigmoid(gate) * m) / count
            h = norm(h + update(torch.cat([h, agg], -1)))

        # per molecule: a shift and a turn about its centre, both expressed in the central frame
        u, a, b = self.out(h).split(3, dim=-1)
        shift = torch.einsum("gij,gj->gi", f0, u) * OUTPUT_LENGTH_SCALE
        turn = f0 @ rotation_6d(a, b) @ f0.transpose(1, 2)  # the same turn in the lab frame
        r = x - c[mol]
        return shift[mol] + torch.einsum("nij,nj->ni", turn[mol], r) - r
