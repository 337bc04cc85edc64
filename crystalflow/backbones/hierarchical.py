"""The ``fast`` backbone (the default): a hierarchical PaiNN with sparse atom edges and molecule nodes.

Atom-level messages run only along (a) intra-molecular pairs closer than ``intra_cutoff`` in x_w (the
rigid conformation, so this graph is fixed along a trajectory) and (b) inter-molecular contacts closer
than ``contact_cutoff`` in x; each pair is processed once (one filter, both directions). Long-range
information flows through molecule nodes: each layer pools the atoms of every molecule, runs a PaiNN
message among the molecules of a cluster (centroid geometry, cosine cutoff ``mol_cutoff``) and
broadcasts the result back to the atoms. Besides the shared input vectors x_w − x and x − C_w
(:func:`crystalflow.nn.blocks.input_vectors`), two more give each atom its place in its molecule:
x − c_mol(x) and x_w − c_mol(x_w). Equivariance as for :mod:`crystalflow.backbones.painn`.
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
from crystalflow.nn.graph import edge_geometry, intra_pairs, molecule_pairs, radius_pairs, segment_mean

if TYPE_CHECKING:
    from crystalflow.backbones.registry import BackboneConfig

#: input vectors: x_w − x, x − C_w, x − c_mol(x), x_w − c_mol(x_w)
N_VECTORS = 4


class HierarchicalPaiNN(nn.Module):
    """Fast PaiNN: sparse atom edges (intra-molecular + short contacts, each pair once) + molecule nodes."""

    #: the output is a per-atom vector (a velocity or a displacement), not a rigid motion per molecule
    rigid_output = False

    def __init__(self, cfg: BackboneConfig, time: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        f, n, nl = cfg.hidden, cfg.n_rbf, cfg.layers
        self.embed = InputEmbedding(f, N_VECTORS, n, time)
        self.atom_rbf = GaussianRBF(n, max(cfg.intra_cutoff, cfg.contact_cutoff))
        self.mol_rbf = GaussianRBF(n, cfg.mol_cutoff)
        # per-layer filters from [rbf(d_x), rbf(d_w), is_contact] (atoms) and [rbf(d_x), rbf(d_w)] (molecules)
        self.atom_filters = nn.ModuleList(nn.Linear(2 * n + 1, 3 * f) for _ in range(nl))
        self.mol_filters = nn.ModuleList(nn.Linear(2 * n, 3 * f) for _ in range(nl))
        self.atom_messages = nn.ModuleList(PaiNNMessage(f) for _ in range(nl))
        self.mol_messages = nn.ModuleList(PaiNNMessage(f) for _ in range(nl))
        self.updates = nn.ModuleList(PaiNNUpdate(f) for _ in range(nl))
        self.norms = nn.ModuleList(EquivariantNorm(f) for _ in range(nl))
        self.readout = VectorReadout(f, N_VECTORS)
        self._compiled = maybe_compile(self._layers_impl, cfg.compile)

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
        n_mol = mol_count.shape[0]
        for layer in range(self.cfg.layers):
            filt = self.atom_filters[layer](atom_feats) * atom_fc[:, None]
            ds, dv = self.atom_messages[layer].forward_pairs(s, v, pi, pj, filt, unit)
            s, v = s + ds, v + dv
            sm, vm = segment_mean(s, mol, n_mol, mol_count), segment_mean(v, mol, n_mol, mol_count)
            mol_filt = self.mol_filters[layer](mol_feats) * mol_fc[:, None]
            dsm, dvm = self.mol_messages[layer](sm, vm, mg, mh, mol_filt, mol_unit)
            s, v = self.norms[layer](*self.updates[layer](s + dsm[mol], v + dvm[mol]))
        return self.readout(s, v, vectors)

    def forward(self, x: Tensor, x_w: Tensor, t: Tensor | None, batch: Batch) -> Tensor:
        """One equivariant vector [N, 3] per atom."""
        cfg = self.cfg
        mol = batch.mol
        mol_count = batch.n_atoms[batch.mol_graph]
        n_mol = mol_count.shape[0]
        c_x, c_w = segment_mean(x, mol, n_mol, mol_count), segment_mean(x_w, mol, n_mol, mol_count)
        vectors = torch.stack(input_vectors(x, x_w, batch) + [x - c_x[mol], x_w - c_w[mol]], dim=-1)
        s, v = self.embed(batch.z, vectors, t, batch.graph)

        pi, pj, flag = self._atom_pairs(x, x_w, batch)
        d_x, unit = edge_geometry(x, pi, pj)
        d_w, _ = edge_geometry(x_w, pi, pj)
        is_contact = flag.to(x.dtype)
        fc = cosine_cutoff(d_w, cfg.intra_cutoff)
        if cfg.contact_cutoff > 0:
            fc = torch.where(flag.bool(), cosine_cutoff(d_x, cfg.contact_cutoff), fc)
        atom_feats = torch.cat([self.atom_rbf(d_x), self.atom_rbf(d_w), is_contact[:, None]], dim=-1)

        mg, mh = molecule_pairs(batch.mol_graph)
        md_x, mol_unit = edge_geometry(c_x, mg, mh)
        md_w, _ = edge_geometry(c_w, mg, mh)
        mol_feats = torch.cat([self.mol_rbf(md_x), self.mol_rbf(md_w)], dim=-1)
        mol_fc = cosine_cutoff(md_x, cfg.mol_cutoff)
        layers = self._layers_impl if self._compiled is None else self._compiled
        return layers(s, v, vectors, pi, pj, atom_feats, fc, unit, mol, mol_count, mg, mh, mol_feats, mol_fc, mol_unit)
