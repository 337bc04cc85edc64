"""Layers shared by the backbones: radial and time features, PaiNN blocks (Schütt et al. 2021), norms, readouts.

Features are scalars s [N, F] and vectors v [N, 3, F] (the spatial axis is dim 1); every block here is
rotation-equivariant in v and invariant in s. Conditioning of the atom-level PaiNNs
(:class:`InputEmbedding`): scalars start from an embedding of the atomic number, the time embedding
and radial features of the norms of the input vectors; vectors start from a linear map of the input
vectors (:func:`input_vectors`: x_w − x and x − C_w, C_w the cluster's mean of x_w). Each layer is
message → update (CrystalFlow eqs. 1–2) → :class:`EquivariantNorm`; :class:`VectorReadout` is two
gated equivariant blocks plus a skip Σ_k c_k(s)·(input vector k) that lets outputs scale linearly with
the inputs.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from crystalflow.data.dataset import Batch
from crystalflow.nn.frames import in_frame
from crystalflow.nn.graph import NORM_EPS, gather_rows, segment_mean

#: atomic numbers are embedded up to this value (exclusive)
MAX_Z = 119
#: number of Fourier frequencies of the time embedding, geometric from 1 to TIME_FREQ_MAX (rad per unit t)
TIME_FREQS = 16
TIME_FREQ_MAX = 200.0
#: radial basis of the norms of the input vectors spans [0, INPUT_RBF_MAX] Å
INPUT_RBF_MAX = 20.0
#: input vectors are divided by this length (Å) before the linear map, so features start O(1)
INPUT_LENGTH_SCALE = 10.0
#: the readout's vector is multiplied by this length (Å): the network works in units of ~10 Å
OUTPUT_LENGTH_SCALE = 10.0
#: atom coordinates in their molecule's own frame are divided by this (Å) before the shape embedding
SHAPE_SCALE = 5.0


# ----------------------------------------------------------------------------------------- basis


class GaussianRBF(nn.Module):
    """Gaussian radial basis with ``n`` centres evenly spaced on [0, stop]."""

    def __init__(self, n: int, stop: float) -> None:
        super().__init__()
        self.register_buffer("centres", torch.linspace(0.0, stop, n))
        self.width = stop / max(n - 1, 1)

    def forward(self, d: Tensor) -> Tensor:
        return torch.exp(-0.5 * ((d[..., None] - self.centres) / self.width) ** 2)


def cosine_cutoff(d: Tensor, cutoff: float) -> Tensor:
    """½(cos(π d / c) + 1) for d < c, else 0."""
    return 0.5 * (torch.cos(d * (math.pi / cutoff)) + 1.0) * (d < cutoff).to(d.dtype)


class TimeEmbedding(nn.Module):
    """Fourier features of t ∈ [0, 1] followed by a two-layer MLP."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.logspace(0.0, math.log10(TIME_FREQ_MAX), TIME_FREQS))
        self.mlp = nn.Sequential(nn.Linear(2 * TIME_FREQS, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        a = t[:, None] * self.freqs
        return self.mlp(torch.cat([torch.sin(a), torch.cos(a)], dim=-1))


def vector_norm(v: Tensor) -> Tensor:
    """Norm over the spatial axis (dim 1) of [.., 3, F] vectors, safe at zero."""
    return torch.sqrt((v * v).sum(dim=1) + NORM_EPS)


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """Linear, SiLU, linear."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


# ---------------------------------------------------------------------------------- PaiNN blocks


class PaiNNMessage(nn.Module):
    """Message block (eq. 1): φ(s_j) ∘ W(r_ij) split into Δs, a gate of v_j and a gate of r̂_ij."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.phi = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))

    def forward(self, s: Tensor, v: Tensor, dst: Tensor, src: Tensor, filt: Tensor, unit: Tensor) -> tuple[Tensor, Tensor]:
        """Aggregated (Δs [N, F], Δv [N, 3, F]) at ``dst`` from ``src`` (directed edges).

        ``filt`` [E, 3F] is W(r) times the cutoff; ``unit`` [E, 3] points from dst to src.
        """
        x = gather_rows(self.phi(s), src) * filt
        return self._aggregate(s, v, dst, src, x, unit)

    def forward_pairs(self, s: Tensor, v: Tensor, i: Tensor, j: Tensor, filt: Tensor, unit: Tensor) -> tuple[Tensor, Tensor]:
        """As :meth:`forward` for undirected pairs (i, j): one filter [P, 3F] serves both directions.

        ``unit`` [P, 3] points from i to j; the message to j uses −unit.
        """
        dst, src = torch.cat([i, j]), torch.cat([j, i])
        p = i.shape[0]
        x = (gather_rows(self.phi(s), src).view(2, p, -1) * filt).view(2 * p, -1)
        unit2 = (unit * torch.tensor([[[1.0]], [[-1.0]]], dtype=unit.dtype, device=unit.device)).view(2 * p, 3)
        return self._aggregate(s, v, dst, src, x, unit2)

    def _aggregate(self, s: Tensor, v: Tensor, dst: Tensor, src: Tensor, x: Tensor, unit: Tensor) -> tuple[Tensor, Tensor]:
        ds, gate_v, gate_r = x.split(self.hidden, dim=-1)
        dv = torch.addcmul(unit[:, :, None] * gate_r[:, None, :], gather_rows(v, src), gate_v[:, None, :])
        return torch.zeros_like(s).index_add_(0, dst, ds), torch.zeros_like(v).index_add_(0, dst, dv)


class PaiNNUpdate(nn.Module):
    """Update block (eq. 2): U v, V v, a = MLP(s, ||V v||); Δv = a_vv U v, Δs = a_sv <U v, V v> + a_ss."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.uv = nn.Linear(hidden, 2 * hidden, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3 * hidden))

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Updated (s, v)."""
        u, w = self.uv(v).split(self.hidden, dim=-1)
        a = self.mlp(torch.cat([s, vector_norm(w)], dim=-1))
        a_vv, a_sv, a_ss = a.split(self.hidden, dim=-1)
        return s + a_sv * (u * w).sum(dim=1) + a_ss, v + a_vv[:, None, :] * u


class EquivariantNorm(nn.Module):
    """LayerNorm of the scalars; vectors divided by their rms norm over channels, times a learned per-channel gain.

    Keeps features O(1) where many neighbours crowd together (e.g. LERP midpoints of a molecule and
    its rotated copy collapse towards the centroid); rotation-equivariant because only norms are used.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.scalar = nn.LayerNorm(hidden)
        self.gain = nn.Parameter(torch.ones(hidden))

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        rms = torch.sqrt((v * v).sum(dim=1).mean(dim=-1, keepdim=True) + NORM_EPS)  # [N, 1]
        return self.scalar(s), v * (self.gain / rms)[:, None, :]


class GatedEquivariantBlock(nn.Module):
    """Gated equivariant block (Schütt et al. 2021): scalars gate a linear map of the vectors."""

    def __init__(self, n_in: int, n_out: int, scalar_activation: bool) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.vec = nn.Linear(n_in, n_in + n_out, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_in, n_in), nn.SiLU(), nn.Linear(n_in, 2 * n_out))
        self.act = nn.SiLU() if scalar_activation else nn.Identity()

    def forward(self, s: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.vec(v).split([self.n_in, self.n_out], dim=-1)
        s_out, gate = self.mlp(torch.cat([s, vector_norm(a)], dim=-1)).split(self.n_out, dim=-1)
        return self.act(s_out), gate[:, None, :] * b


class VectorReadout(nn.Module):
    """One 3-vector per node: two gated equivariant blocks F → F/2 → 1, plus a gated skip of the inputs.

    The skip adds Σ_k c_k(s) u_k over the input vectors u_k [N, 3, K] with invariant coefficients c(s)
    (zero at initialisation), so outputs can scale linearly with the inputs — e.g. the VE velocity
    −ln(σ_max/σ_min)(x − x_s), or (x − x_w)/t for LERP — which the normalised features cannot carry.
    Checkpoints without skip weights (the shipped default model's) load with a zero skip: the same
    function they were trained as.
    """

    def __init__(self, hidden: int, n_vectors: int) -> None:
        super().__init__()
        self.b1 = GatedEquivariantBlock(hidden, hidden // 2, scalar_activation=True)
        self.b2 = GatedEquivariantBlock(hidden // 2, 1, scalar_activation=False)
        self.skip = nn.Linear(hidden, n_vectors)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN202 - torch hook
        for name in ("weight", "bias"):  # checkpoints without a skip: a zero one
            state_dict.setdefault(f"{prefix}skip.{name}", torch.zeros_like(getattr(self.skip, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, s: Tensor, v: Tensor, vectors: Tensor) -> Tensor:
        """``vectors`` [N, 3, K]: the input vectors (Å)."""
        skip = (vectors * self.skip(s)[:, None, :]).sum(dim=-1)
        s1, v1 = self.b1(s, v)
        return self.b2(s1, v1)[1][:, :, 0] * OUTPUT_LENGTH_SCALE + skip


# ------------------------------------------------------------------------------------ conditioning


def input_vectors(x: Tensor, x_w: Tensor, batch: Batch) -> list[Tensor]:
    """x_w − x and x − C_w (C_w: the cluster mean of x_w), each [N, 3]."""
    count = batch.ptr[1:] - batch.ptr[:-1]
    centre = segment_mean(x_w, batch.graph, batch.num_graphs, count)
    return [x_w - x, x - centre[batch.graph]]


class InputEmbedding(nn.Module):
    """Initial (s, v): embedding of z (+ time) + radial features of input-vector norms; linear map of the vectors."""

    def __init__(self, hidden: int, n_vectors: int, n_rbf: int, time: bool) -> None:
        super().__init__()
        self.z = nn.Embedding(MAX_Z, hidden)
        self.rbf = GaussianRBF(n_rbf, INPUT_RBF_MAX)
        self.norms = nn.Linear(n_vectors * (n_rbf + 1), hidden)
        self.vectors = nn.Linear(n_vectors, hidden, bias=False)
        self.time = TimeEmbedding(hidden) if time else None

    def forward(self, z: Tensor, vectors: Tensor, t: Tensor | None, graph: Tensor) -> tuple[Tensor, Tensor]:
        """``vectors`` [N, 3, K] equivariant inputs; ``t`` [B] or None."""
        norm = vector_norm(vectors)  # [N, K]
        feats = torch.cat([self.rbf(norm).flatten(1), torch.log1p(norm)], dim=-1)
        s = self.z(z) + self.norms(feats)
        if self.time is not None:
            if t is None:
                raise ValueError("this backbone embeds time: pass t")
            s = s + self.time(t)[graph]
        return s, self.vectors(vectors / INPUT_LENGTH_SCALE)


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


def maybe_compile(fn: Callable, enabled: bool) -> Callable | None:
    """torch.compile(fn) (dynamic shapes: edge counts change every batch) when enabled, else None."""
    return torch.compile(fn, dynamic=True) if enabled else None
