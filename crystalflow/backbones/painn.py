"""The ``reference`` backbone: plain atom-level PaiNN (Schütt et al. 2021, CrystalFlow eqs. 1–2) over a cluster.

Directed edges join all atom pairs of a cluster closer than ``cutoff`` in x; the conditioning, layers
and readout are the shared ones of :mod:`crystalflow.nn.blocks` with the two input vectors x_w − x and
x − C_w. The straightforward model, kept as the speed and accuracy anchor of the ``fast`` backbone
(:mod:`crystalflow.backbones.hierarchical`).

Like every backbone it maps positions x [N, 3] (x_t), the condition x_w [N, 3], optional times t [B]
and a :class:`~crystalflow.data.dataset.Batch` to one equivariant 3-vector per atom: under a rotation R
and a translation b applied to both x and x_w the output becomes R·out, and reordering the molecules
of a cluster reorders the output. Clusters of a batch never interact.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from crystalflow.data.dataset import Batch
from crystalflow.nn.blocks import (
    EquivariantNorm,
    GaussianRBF,
    InputEmbedding,
    PaiNNMessage,
    PaiNNUpdate,
    VectorReadout,
    cosine_cutoff,
    input_vectors,
    maybe_compile,
)
from crystalflow.nn.graph import edge_geometry, radius_pairs

if TYPE_CHECKING:
    from crystalflow.backbones.registry import BackboneConfig

#: input vectors: x_w − x, x − C_w
N_VECTORS = 2


class PaiNN(nn.Module):
    """Reference atom-level PaiNN: directed edges between all atom pairs within ``cutoff`` in x."""

    #: the output is a per-atom vector (a velocity or a displacement), not a rigid motion per molecule
    rigid_output = False

    def __init__(self, cfg: BackboneConfig, time: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        f = cfg.hidden
        self.embed = InputEmbedding(f, N_VECTORS, cfg.n_rbf, time)
        self.rbf = GaussianRBF(cfg.n_rbf, cfg.cutoff)
        self.filters = nn.ModuleList(nn.Linear(cfg.n_rbf, 3 * f) for _ in range(cfg.layers))
        self.messages = nn.ModuleList(PaiNNMessage(f) for _ in range(cfg.layers))
        self.updates = nn.ModuleList(PaiNNUpdate(f) for _ in range(cfg.layers))
        self.norms = nn.ModuleList(EquivariantNorm(f) for _ in range(cfg.layers))
        self.readout = VectorReadout(f, N_VECTORS)
        self._compiled = maybe_compile(self._layers_impl, cfg.compile)

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
        vectors = torch.stack(input_vectors(x, x_w, batch), dim=-1)
        s, v = self.embed(batch.z, vectors, t, batch.graph)
        dst, src = radius_pairs(x, batch.ptr, self.cfg.cutoff)
        d, unit = edge_geometry(x, dst, src)
        layers = self._layers_impl if self._compiled is None else self._compiled
        return layers(s, v, vectors, dst, src, d, unit)
