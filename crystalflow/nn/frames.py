"""Per-molecule orientation frames read from the atoms, and coordinates in a frame.

Every molecule of a cluster has the same atom order, so a rotation F_i can be read from its atoms
alone: the proper Kabsch fit of a fixed, atom-indexed anchor point set W onto the centred atoms
(F_i W_a ≈ x_a − c_i). It turns with the molecule (F_i → Q F_i under a rotation Q of the input), so
for rigid copies x_i = R_i p + c_i one gets F_i = R_i F_p. It is undefined for molecules whose atoms
are collinear or a single atom (the frame about the axis is arbitrary).
"""
from __future__ import annotations

import torch
from torch import Tensor

from crystalflow.data.dataset import Batch
from crystalflow.nn.graph import segment_mean
from crystalflow.nn.rigid import fit_rotations


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
