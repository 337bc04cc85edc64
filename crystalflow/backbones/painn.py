"""Equivariant backbones: PaiNN (Schütt et al. 2021, CrystalFlow eqs. 1–2) over clusters of molecules.

A backbone maps positions x [N, 3] (x_t), the condition x_w [N, 3], optional times t [B] and a
:class:`~crystalflow.data.dataset.Batch` to one equivariant 3-vector per atom. Under a rotation R and a
translation b applied to both x and x_w the output becomes R·out (it is translation invariant), and
reordering the molecules of a cluster reorders the output. Clusters of a batch never interact.

Conditioning (both variants): scalar features start from an embedding of the atomic number, the time
embedding and radial features of the norms of the input vectors; vector features start from a linear
map of the input vectors  x_w − x  and  x − C_w  (C_w = the cluster's mean of x_w). Each layer is
message → update (eqs. 1–2) → :class:`EquivariantNorm`; the readout is two gated equivariant blocks
plus a skip Σ_k c_k(s)·(input vector k) that lets outputs scale linearly with the inputs.

Two variants:

- ``reference`` (:class:`PaiNN`): plain atom-level PaiNN; directed edges between all atom pairs of a
  cluster closer than ``cutoff`` in x.
- ``fast`` (:class:`HierarchicalPaiNN`): atom-level messages only along (a) intra-molecular pairs closer
  than ``intra_cutoff`` in x_w (the rigid conformation, so this graph is fixed along a trajectory) and
  (b) inter-molecular contacts closer than ``contact_cutoff`` in x; each pair is processed once (one
  filter, both directions). Long-range information flows through molecule nodes: each layer pools
  the atoms of every molecule, runs a PaiNN message among the molecules of a cluster (centroid
  geometry, cosine cutoff ``mol_cutoff``) and broadcasts the result back to the atoms. Two more input
  vectors give each atom its place in its molecule: x − c_mol(x) and x_w − c_mol(x_w).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crystalflow.data.dataset import Batch

#: atomic numbers are embedded up to this value (exclusive)
MAX_Z = 119
#: ε inside square roots of squared norms, so gradients stay finite at zero length
NORM_EPS = 1e-8
#: number of Fourier frequencies of the time embedding, geometric from 1 to TIME_FREQ_MAX (rad per unit t)
TIME_FREQS = 16
TIME_FREQ_MAX = 200.0
#: radial basis of the norms of the input vectors spans [0, INPUT_RBF_MAX] Å
INPUT_RBF_MAX = 20.0
#: input vectors are divided by this length (Å) before the linear map, so features start O(1)
INPUT_LENGTH_SCALE = 10.0
#: the readout's vector is multiplied by this length (Å): the network works in units of ~10 Å
OUTPUT_LENGTH_SCALE = 10.0
#: input vectors: x_w − x, x − C_w (both variants); + x − c_mol(x), x_w − c_mol(x_w) (fast)
N_REFERENCE_VECTORS = 2
N_FAST_VECTORS = 4


@dataclass
class BackboneConfig:
    """Hyper-parameters of a backbone (see the module docstring for the variants)."""

    variant: str = "fast"
    hidden: int = 64
    layers: int = 3
    n_rbf: int = 20
    cutoff: float = 5.0  #: reference: atom-pair cutoff in x (Å)
    intra_cutoff: float = 3.0  #: fast: intra-molecular pairs closer than this in x_w (Å)
    contact_cutoff: float = 4.0  #: fast: inter-molecular atom contacts closer than this in x (Å); 0 = none
    #: fast: keep only each atom's nearest this-many contacts (0 = all). Atoms of our crystals have at most 29
    #: contacts within 4 Å, so this only bounds collapsed states (a VE sample reached 67 per atom)
    max_contacts: int = 32
    mol_cutoff: float = 50.0  #: fast: cosine cutoff of molecule–molecule messages on centroid distance (Å)
    time: bool = True  #: embed t (flow models); False for direct regression
    compile: bool = False  #: torch.compile the layer stack
    #: molecule-painn: the network sees the molecules' current orientations (off where they carry no information)
    orientations: bool = True


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


# ------------------------------------------------------------------------------------ neighbours


@torch.no_grad()
def radius_pairs(x: Tensor, ptr: Tensor, cutoff: float, mol: Tensor | None = None,
                 directed: bool = True, max_neighbours: int = 0) -> tuple[Tensor, Tensor]:
    """Atom pairs (i, j) of the same cluster with |x_i − x_j| < cutoff, found per cluster with cdist.

    ``mol`` given: only pairs of *different* molecules. ``directed``: both (i, j) and (j, i), else i < j.
    ``max_neighbours`` > 0: a pair is kept only if one atom is among the other's ``max_neighbours``
    nearest (symmetric, so at most N · max_neighbours pairs however dense the configuration).
    """
    out_i, out_j = [], []
    bounds = ptr.tolist()
    for a, e in zip(bounds[:-1], bounds[1:]):
        xb = x[a:e]
        dist = torch.cdist(xb, xb)
        mask = dist < cutoff
        if mol is not None:
            mb = mol[a:e]
            mask &= mb[:, None] != mb[None, :]
        mask.fill_diagonal_(False)
        if 0 < max_neighbours < len(xb) and int(mask.sum(1).max()) > max_neighbours:
            nearest = dist.masked_fill(~mask, float("inf")).topk(max_neighbours, dim=1, largest=False).indices
            knn = torch.zeros_like(mask).scatter_(1, nearest, True) & mask
            mask = knn | knn.T
        if not directed:
            mask = torch.triu(mask, diagonal=1)
        i, j = mask.nonzero(as_tuple=True)
        out_i.append(i + a)
        out_j.append(j + a)
    return torch.cat(out_i), torch.cat(out_j)


@torch.no_grad()
def intra_pairs(x: Tensor, batch: Batch, cutoff: float) -> tuple[Tensor, Tensor]:
    """Undirected intra-molecular pairs (i < j) with |x_i − x_j| < cutoff (molecule-major layout)."""
    out_i, out_j = [], []
    bounds = batch.ptr.tolist()
    for b, (a, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        m, n = int(batch.n_mol[b]), int(batch.n_atoms[b])
        xm = x[a:e].reshape(m, n, 3)
        mask = torch.triu(torch.cdist(xm, xm) < cutoff, diagonal=1)
        k, i, j = mask.nonzero(as_tuple=True)
        base = a + k * n
        out_i.append(base + i)
        out_j.append(base + j)
    return torch.cat(out_i), torch.cat(out_j)


def molecule_pairs(mol_graph: Tensor) -> tuple[Tensor, Tensor]:
    """All ordered pairs (g, h), g ≠ h, of molecules of the same cluster."""
    same = mol_graph[:, None] == mol_graph[None, :]
    same.fill_diagonal_(False)
    g, h = same.nonzero(as_tuple=True)
    return g, h


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """x[index] for x [N, ...]; via the embedding kernel, which gathers and scatters faster on CPU."""
    return F.embedding(index, x.reshape(x.shape[0], -1)).reshape((index.shape[0],) + tuple(x.shape[1:]))


def segment_mean(x: Tensor, index: Tensor, count: Tensor) -> Tensor:
    """Mean of rows of x [N, ...] per segment index [N] → [S, ...] (count [S] rows per segment)."""
    out = x.new_zeros((count.shape[0],) + tuple(x.shape[1:])).index_add_(0, index, x)
    return out / count.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))


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
    Checkpoints written before the skip existed load with a zero skip: the same function they were
    trained as.
    """

    def __init__(self, hidden: int, n_vectors: int) -> None:
        super().__init__()
        self.b1 = GatedEquivariantBlock(hidden, hidden // 2, scalar_activation=True)
        self.b2 = GatedEquivariantBlock(hidden // 2, 1, scalar_activation=False)
        self.skip = nn.Linear(hidden, n_vectors)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN202 - torch hook
        for name in ("weight", "bias"):  # older checkpoints: no skip, i.e. a zero one
            state_dict.setdefault(f"{prefix}skip.{name}", torch.zeros_like(getattr(self.skip, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, s: Tensor, v: Tensor, vectors: Tensor) -> Tensor:
        """``vectors`` [N, 3, K]: the input vectors (Å)."""
        skip = (vectors * self.skip(s)[:, None, :]).sum(dim=-1)
        s1, v1 = self.b1(s, v)
        return self.b2(s1, v1)[1][:, :, 0] * OUTPUT_LENGTH_SCALE + skip


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


def _edge_geometry(x: Tensor, dst: Tensor, src: Tensor) -> tuple[Tensor, Tensor]:
    """Distances [E] and unit vectors [E, 3] from dst to src."""
    r = x.index_select(0, src) - x.index_select(0, dst)
    d = torch.sqrt((r * r).sum(-1) + NORM_EPS)
    return d, r / d[:, None]


def _input_vectors(x: Tensor, x_w: Tensor, batch: Batch) -> list[Tensor]:
    """x_w − x and x − C_w (C_w: the cluster mean of x_w), each [N, 3]."""
    count = batch.ptr[1:] - batch.ptr[:-1]
    centre = segment_mean(x_w, batch.graph, count)
    return [x_w - x, x - centre[batch.graph]]


def _maybe_compile(fn: Callable, enabled: bool) -> Callable | None:
    """torch.compile(fn) (dynamic shapes: edge counts change every batch) when enabled, else None."""
    return torch.compile(fn, dynamic=True) if enabled else None


# -------------------------------------------------------------------------------------- variants


class PaiNN(nn.Module):
    """Reference atom-level PaiNN: directed edges between all atom pairs within ``cutoff`` in x."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = cfg.hidden
        self.embed = InputEmbedding(f, N_REFERENCE_VECTORS, cfg.n_rbf, cfg.time)
        self.rbf = GaussianRBF(cfg.n_rbf, cfg.cutoff)
        self.filters = nn.ModuleList(nn.Linear(cfg.n_rbf, 3 * f) for _ in range(cfg.layers))
        self.messages = nn.ModuleList(PaiNNMessage(f) for _ in range(cfg.layers))
        self.updates = nn.ModuleList(PaiNNUpdate(f) for _ in range(cfg.layers))
        self.norms = nn.ModuleList(EquivariantNorm(f) for _ in range(cfg.layers))
        self.readout = VectorReadout(f, N_REFERENCE_VECTORS)
        self._compiled = _maybe_compile(self._layers_impl, cfg.compile)

    def _layers_impl(self, s: Tensor, v: Tensor, vectors: Tensor, dst: Tensor, src: Tensor, d: Tensor,
                     unit: Tensor) -> Tensor:
        rbf = self.rbf(d)
        fc = cosine_cutoff(d, self.cfg.cutoff)[:, None]
        for filt, msg, upd, norm in zip(self.filters, self.messages, self.updates, self.norms):
            ds, dv = msg(s, v, dst, src, filt(rbf) * fc, unit)
            s, v = norm(*upd(s + ds, v + dv))
        return self.readout(s, v, vectors)

    def forward(self, x: Tensor, x_w: Tensor, t: Tensor | None, batch: Batch) -> Tensor:
        """One equivariant vector [N, 3] per atom."""
        vectors = torch.stack(_input_vectors(x, x_w, batch), dim=-1)
        s, v = self.embed(batch.z, vectors, t, batch.graph)
        dst, src = radius_pairs(x, batch.ptr, self.cfg.cutoff)
        d, unit = _edge_geometry(x, dst, src)
        layers = self._layers_impl if self._compiled is None else self._compiled
        return layers(s, v, vectors, dst, src, d, unit)


class HierarchicalPaiNN(nn.Module):
    """Fast PaiNN: sparse atom edges (intra-molecular + short contacts, each pair once) + molecule nodes."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f, n, nl = cfg.hidden, cfg.n_rbf, cfg.layers
        self.embed = InputEmbedding(f, N_FAST_VECTORS, n, cfg.time)
        self.atom_rbf = GaussianRBF(n, max(cfg.intra_cutoff, cfg.contact_cutoff))
        self.mol_rbf = GaussianRBF(n, cfg.mol_cutoff)
        # per-layer filters from [rbf(d_x), rbf(d_w), is_contact] (atoms) and [rbf(d_x), rbf(d_w)] (molecules)
        self.atom_filters = nn.ModuleList(nn.Linear(2 * n + 1, 3 * f) for _ in range(nl))
        self.mol_filters = nn.ModuleList(nn.Linear(2 * n, 3 * f) for _ in range(nl))
        self.atom_messages = nn.ModuleList(PaiNNMessage(f) for _ in range(nl))
        self.mol_messages = nn.ModuleList(PaiNNMessage(f) for _ in range(nl))
        self.updates = nn.ModuleList(PaiNNUpdate(f) for _ in range(nl))
        self.norms = nn.ModuleList(EquivariantNorm(f) for _ in range(nl))
        self.readout = VectorReadout(f, N_FAST_VECTORS)
        self._compiled = _maybe_compile(self._layers_impl, cfg.compile)

    def _atom_pairs(self, x: Tensor, x_w: Tensor, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Undirected pairs (i < j) and a flag [P] that is 1 for contacts, 0 for intra-molecular pairs."""
        i, j = intra_pairs(x_w, batch, self.cfg.intra_cutoff)
        flag = torch.zeros_like(i)
        if self.cfg.contact_cutoff > 0:
            ci, cj = radius_pairs(x, batch.ptr, self.cfg.contact_cutoff, mol=batch.mol, directed=False,
                                  max_neighbours=self.cfg.max_contacts)
            i, j = torch.cat([i, ci]), torch.cat([j, cj])
            flag = torch.cat([flag, torch.ones_like(ci)])
        return i, j, flag

    def _layers_impl(
        self, s: Tensor, v: Tensor, vectors: Tensor,
        pi: Tensor, pj: Tensor, atom_feats: Tensor, atom_fc: Tensor, unit: Tensor,
        mol: Tensor, mol_count: Tensor, mg: Tensor, mh: Tensor, mol_feats: Tensor, mol_fc: Tensor, mol_unit: Tensor,
    ) -> Tensor:
        """The layer stack and readout (the part ``compile`` compiles); pairs (pi, pj), molecule pairs (mg, mh)."""
        for layer in range(self.cfg.layers):
            filt = self.atom_filters[layer](atom_feats) * atom_fc[:, None]
            ds, dv = self.atom_messages[layer].forward_pairs(s, v, pi, pj, filt, unit)
            s, v = s + ds, v + dv
            sm, vm = segment_mean(s, mol, mol_count), segment_mean(v, mol, mol_count)
            mol_filt = self.mol_filters[layer](mol_feats) * mol_fc[:, None]
            dsm, dvm = self.mol_messages[layer](sm, vm, mg, mh, mol_filt, mol_unit)
            s, v = self.norms[layer](*self.updates[layer](s + dsm[mol], v + dvm[mol]))
        return self.readout(s, v, vectors)

    def forward(self, x: Tensor, x_w: Tensor, t: Tensor | None, batch: Batch) -> Tensor:
        """One equivariant vector [N, 3] per atom."""
        cfg = self.cfg
        mol = batch.mol
        mol_count = batch.n_atoms[batch.mol_graph]
        c_x, c_w = segment_mean(x, mol, mol_count), segment_mean(x_w, mol, mol_count)
        vectors = torch.stack(_input_vectors(x, x_w, batch) + [x - c_x[mol], x_w - c_w[mol]], dim=-1)
        s, v = self.embed(batch.z, vectors, t, batch.graph)

        pi, pj, flag = self._atom_pairs(x, x_w, batch)
        d_x, unit = _edge_geometry(x, pi, pj)
        d_w, _ = _edge_geometry(x_w, pi, pj)
        is_contact = flag.to(x.dtype)
        fc = cosine_cutoff(d_w, cfg.intra_cutoff)
        if cfg.contact_cutoff > 0:
            fc = torch.where(flag.bool(), cosine_cutoff(d_x, cfg.contact_cutoff), fc)
        atom_feats = torch.cat([self.atom_rbf(d_x), self.atom_rbf(d_w), is_contact[:, None]], dim=-1)

        mg, mh = molecule_pairs(batch.mol_graph)
        md_x, mol_unit = _edge_geometry(c_x, mg, mh)
        md_w, _ = _edge_geometry(c_w, mg, mh)
        mol_feats = torch.cat([self.mol_rbf(md_x), self.mol_rbf(md_w)], dim=-1)
        mol_fc = cosine_cutoff(md_x, cfg.mol_cutoff)
        layers = self._layers_impl if self._compiled is None else self._compiled
        return layers(s, v, vectors, pi, pj, atom_feats, fc, unit, mol, mol_count, mg, mh, mol_feats, mol_fc, mol_unit)


#: backbone variants; ``frames`` (:mod:`crystalflow.backbones.frames`) and ``molecule-painn`` (:mod:`crystalflow.backbones.molecule_painn`)
#: are molecule-level networks with rigid outputs
VARIANTS = ("reference", "fast", "frames", "molecule-painn")
#: the variants whose output is a rigid displacement per molecule (endpoint prediction or gnn-md only)
RIGID_OUTPUT_VARIANTS = ("frames", "molecule-painn")


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """The backbone named by ``cfg.variant``."""
    if cfg.variant == "reference":
        return PaiNN(cfg)
    if cfg.variant == "fast":
        return HierarchicalPaiNN(cfg)
    if cfg.variant == "frames":
        from crystalflow.backbones.frames import MoleculeFrameNet  # frames builds on this module's blocks

        return MoleculeFrameNet(cfg)
    if cfg.variant == "molecule-painn":
        from crystalflow.backbones.molecule_painn import MoleculePaiNN  # molnet builds on this module's blocks

        return MoleculePaiNN(cfg)
    raise ValueError(f"unknown backbone variant {cfg.variant!r}; choose from {', '.join(VARIANTS)}")
