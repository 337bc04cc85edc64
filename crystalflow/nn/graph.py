"""Graph operations over the clusters of a :class:`~crystalflow.data.dataset.Batch`: pair search, segment means.

Atoms are rows of [N, ...] tensors in the batch's molecule-major layout; clusters never interact, so
every pair search runs per cluster (``batch.ptr``) and never returns a pair across clusters.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from crystalflow.data.dataset import Batch

#: ε inside square roots of squared norms, so gradients stay finite at zero length
NORM_EPS = 1e-8


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


def segment_mean(x: Tensor, seg: Tensor, num: int, count: Tensor | None = None) -> Tensor:
    """Mean [num, ...] of the rows of ``x`` [N, ...] per segment ``seg`` [N].

    ``count`` [num]: the rows per segment when the caller has them (no bincount, which a compiled
    graph cannot trace); by default they are counted, and an empty segment's mean is 0.
    """
    total = x.new_zeros((num, *x.shape[1:])).index_add_(0, seg, x)
    if count is None:
        count = torch.bincount(seg, minlength=num).clamp(min=1)
    return total / count.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


def edge_geometry(x: Tensor, dst: Tensor, src: Tensor) -> tuple[Tensor, Tensor]:
    """Distances [E] and unit vectors [E, 3] from dst to src."""
    r = x.index_select(0, src) - x.index_select(0, dst)
    d = torch.sqrt((r * r).sum(-1) + NORM_EPS)
    return d, r / d[:, None]
