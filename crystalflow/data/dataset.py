"""Reading a dataset directory: a lazy torch Dataset of clusters and the batch that models consume."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from crystalflow.common.errors import UserError
from crystalflow.data.index import SHARD_DIR, check_split, read_index
from crystalflow.data.shards import ClusterRecord, ShardReader

if TYPE_CHECKING:
    from crystalflow.data.noise import NoiseModel

class ClusterDataset(Dataset):
    """Clusters of one split of a dataset directory, read lazily from the HDF5 shards.

    Example::

        from crystalflow import ClusterDataset
        from crystalflow.data.dataset import collate

        train_set = ClusterDataset("cod17", "train")
        rec = train_set[0]                  # rec.x_s, rec.x_w [17, n, 3]; rec.z [n]; rec.meta: its clusters.csv row
        batch = collate([train_set[i] for i in range(4)])
    """

    def __init__(self, root: str, split: str = "train") -> None:
        check_split(split)
        self.root = root
        self.split = split
        self.rows = read_index(root, split)
        self._readers: dict[str, ShardReader] = {}
        for name in sorted({r["shard"] for r in self.rows}):  # a damaged shard fails now, not hours into training
            ShardReader(self._shard_path(name)).check()

    def _shard_path(self, name: str) -> str:
        return os.path.join(self.root, SHARD_DIR, name)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> ClusterRecord:
        row = self.rows[i]
        reader = self._readers.get(row["shard"])
        if reader is None:
            reader = self._readers[row["shard"]] = ShardReader(self._shard_path(row["shard"]))
        rec = reader.read(row["row"])
        rec.meta = row
        return rec


def dataset_noise(root: str) -> "NoiseModel":
    """The noise model a dataset directory was built with (its summary.json)."""
    from crystalflow.data.noise import NoiseModel

    path = os.path.join(root, "summary.json")
    try:
        with open(path) as f:
            noise = json.load(f)["settings"]["noise"]
    except (OSError, KeyError, TypeError, ValueError):
        raise UserError(f"{root!r} has no noise settings in summary.json (only 'crystalflow build' datasets have: "
                        "imported ones keep the x_w they came with)") from None
    return NoiseModel(**noise)


class FreshNoiseDataset(Dataset):
    """A dataset whose inputs x_w are drawn anew from x_s every epoch (same noise model, fresh rotations).

    Built datasets hold 1–2 noise draws per crystal; with uniformly random rotations a model sees each
    packing in that few orientations. Draw ``e`` of cluster ``i`` depends on (seed, e, i) only, so
    shuffling, worker processes and resumed runs all see the same inputs. Call :meth:`set_epoch` first.
    """

    def __init__(self, base: Dataset, noise: "NoiseModel", seed: int = 0) -> None:
        self.base, self.noise, self.seed, self.epoch = base, noise, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Use the draws of this epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> ClusterRecord:
        from crystalflow.data.noise import apply_noise

        rec = self.base[i]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        x_w = apply_noise(np.asarray(rec.x_s, dtype=np.float64), np.asarray(rec.z), self.noise, rng).x_w
        return ClusterRecord(x_s=rec.x_s, x_w=x_w.astype(np.asarray(rec.x_w).dtype), z=rec.z, meta=rec.meta)


class RecordDataset(Dataset):
    """An in-memory list of :class:`ClusterRecord` (tests, predictions, imported data)."""

    def __init__(self, records: Sequence[ClusterRecord]) -> None:
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> ClusterRecord:
        return self.records[i]


@dataclass
class Batch:
    """Clusters flattened to atoms, PyG-style. N atoms, G molecules, B clusters."""

    x_w: torch.Tensor  #: [N, 3] weakly-correlated input
    x_s: torch.Tensor  #: [N, 3] strongly-correlated target (crystal)
    z: torch.Tensor  #: [N] atomic numbers
    mol: torch.Tensor  #: [N] molecule of each atom, 0..G-1
    graph: torch.Tensor  #: [N] cluster of each atom, 0..B-1
    atom_in_mol: torch.Tensor  #: [N] position of the atom within its molecule (same order in every molecule)
    mol_graph: torch.Tensor  #: [G] cluster of each molecule
    ptr: torch.Tensor  #: [B + 1] atom offsets of the clusters
    n_mol: torch.Tensor  #: [B] molecules per cluster
    n_atoms: torch.Tensor  #: [B] atoms per molecule

    @property
    def num_graphs(self) -> int:
        """Number of clusters B."""
        return int(self.n_mol.shape[0])

    @property
    def num_molecules(self) -> int:
        """Number of molecules G."""
        return int(self.mol_graph.shape[0])

    @property
    def central(self) -> torch.Tensor:
        """[B] index of each cluster's central molecule (its first, as in every COD-Cluster17 file)."""
        return torch.cumsum(self.n_mol, 0) - self.n_mol

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Batch":
        """Copy to a device (and cast coordinates to ``dtype`` when given)."""
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            t = t.to(device)
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[f.name] = t
        return Batch(**out)

    def split_positions(self, x: torch.Tensor) -> list[np.ndarray]:
        """Per-cluster [M, n, 3] numpy arrays from flat positions [N, 3]."""
        out = []
        for b in range(self.num_graphs):
            a, e = int(self.ptr[b]), int(self.ptr[b + 1])
            out.append(x[a:e].detach().cpu().numpy().reshape(int(self.n_mol[b]), int(self.n_atoms[b]), 3))
        return out


def collate(records: Sequence[ClusterRecord]) -> Batch:
    """Stack clusters into one :class:`Batch` (positions as float32)."""
    x_w, x_s, z, mol, graph, aim, mol_graph = [], [], [], [], [], [], []
    n_mol, n_atoms, ptr = [], [], [0]
    mol_offset = 0
    for b, r in enumerate(records):
        m, n = r.x_s.shape[:2]
        x_w.append(torch.as_tensor(np.asarray(r.x_w, dtype=np.float32).reshape(-1, 3)))
        x_s.append(torch.as_tensor(np.asarray(r.x_s, dtype=np.float32).reshape(-1, 3)))
        z.append(torch.as_tensor(np.asarray(r.z, dtype=np.int64)).repeat(m))
        mol.append(torch.arange(mol_offset, mol_offset + m).repeat_interleave(n))
        graph.append(torch.full((m * n,), b, dtype=torch.long))
        aim.append(torch.arange(n).repeat(m))
        mol_graph.append(torch.full((m,), b, dtype=torch.long))
        n_mol.append(m)
        n_atoms.append(n)
        ptr.append(ptr[-1] + m * n)
        mol_offset += m
    return Batch(
        x_w=torch.cat(x_w), x_s=torch.cat(x_s), z=torch.cat(z), mol=torch.cat(mol), graph=torch.cat(graph),
        atom_in_mol=torch.cat(aim), mol_graph=torch.cat(mol_graph), ptr=torch.tensor(ptr),
        n_mol=torch.tensor(n_mol), n_atoms=torch.tensor(n_atoms),
    )
