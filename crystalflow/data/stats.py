"""Dataset statistics: the paper's Figures 3-5 (atoms per molecule; pairwise distances in x_w and x_s).

Writes to OUT_DIR::

    fig3_atoms_per_molecule.png / .csv            clusters per molecule size
    fig4_pairwise_distances_x_w.png / .csv        distances in the noised input x_w (x_s dashed for reference)
    fig5_pairwise_distances_x_s.png / .csv        distances in the crystal target x_s (x_w dashed for reference)
    stats.json                                    counts, means, extremes, bin settings, file list

Two distance distributions are accumulated per structure: intermolecular atom-atom distances (every
pair of atoms in different molecules; intramolecular distances are left out because the noise moves
molecules rigidly, so they are the same in x_w and x_s) and molecule centre-of-mass distances
(every pair of molecules). Clusters are streamed one at a time into fixed-edge histograms; the
distances themselves are never stored. The CSVs hold bin edges and counts, with a last overflow row
``[max_distance, inf)`` so that the counts add up to the number of pairs.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.spatial.distance import cdist, pdist  # noqa: E402
from tqdm import tqdm  # noqa: E402

from crystalflow.common.checks import prepare_output_dir  # noqa: E402
from crystalflow.common.errors import UserError  # noqa: E402
from crystalflow.common.io import atomic_open, write_csv, write_json  # noqa: E402
from crystalflow.common.version import __version__  # noqa: E402
from crystalflow.data.index import check_dataset, iter_clusters  # noqa: E402
from crystalflow.structure.molecules import centre_of_mass  # noqa: E402

#: default number of distance bins between 0 and ``max_distance``
DISTANCE_BINS = 200
#: default upper edge (Å) of the distance histograms; larger distances go to the overflow bin
MAX_DISTANCE = 100.0
FIGURE_DPI = 120
FIGURE_SIZE_ONE = (7.0, 4.2)
FIGURE_SIZE_TWO = (11.0, 4.2)
#: fixed margins (figure fractions): cheaper than tight_layout and identical from run to run
MARGINS_ONE = {"left": 0.11, "right": 0.97, "bottom": 0.13, "top": 0.9}
MARGINS_TWO = {"left": 0.065, "right": 0.985, "bottom": 0.13, "top": 0.84, "wspace": 0.2}
STRUCTURES = ("x_w", "x_s")
STRUCTURE_LABEL = {"x_w": "x_w (noised input)", "x_s": "x_s (crystal target)"}
STRUCTURE_NAME = {"x_w": "x_w, the noised input", "x_s": "x_s, the crystal target"}
COLOUR = {"x_w": "tab:orange", "x_s": "tab:blue"}
KINDS = ("atom_pairs", "centre_pairs")
KIND_TITLE = {
    "atom_pairs": "intermolecular atom-atom distances",
    "centre_pairs": "molecule centre-of-mass distances",
}
FILES = {
    "fig3": "fig3_atoms_per_molecule",
    "x_w": "fig4_pairwise_distances_x_w",
    "x_s": "fig5_pairwise_distances_x_s",
    "summary": "stats.json",
}
_ROUND = 4


@dataclass
class DistanceHistogram:
    """Counts of distances in fixed bins ``[k * width, (k + 1) * width)`` plus one overflow bin."""

    bins: int
    max_distance: float
    counts: np.ndarray = field(init=False)
    total: float = 0.0  #: sum of all distances (for the mean)
    minimum: float = math.inf
    maximum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = np.zeros(self.bins + 1, dtype=np.int64)

    @property
    def width(self) -> float:
        """Bin width (Å)."""
        return self.max_distance / self.bins

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` finite bin edges (Å)."""
        return np.linspace(0.0, self.max_distance, self.bins + 1)

    @property
    def n(self) -> int:
        """Number of distances added (overflow included)."""
        return int(self.counts.sum())

    def add(self, d: np.ndarray) -> None:
        """Count the distances ``d`` (any shape)."""
        d = np.ravel(d)
        if d.size == 0:
            return
        k = (d / self.width).astype(np.intp)  # distances are >= 0: truncation is floor
        np.minimum(k, self.bins, out=k)
        self.counts += np.bincount(k, minlength=self.bins + 1)
        self.total += float(d.sum())
        self.minimum = min(self.minimum, float(d.min()))
        self.maximum = max(self.maximum, float(d.max()))

    def summary(self) -> dict:
        """count, mean, min, max and overflow (distances >= max_distance)."""
        n = self.n
        return {
            "count": n,
            "mean": round(self.total / n, _ROUND) if n else None,
            "min": round(self.minimum, _ROUND) if n else None,
            "max": round(self.maximum, _ROUND) if n else None,
            "overflow": int(self.counts[-1]),
        }


def intermolecular_distances(x: np.ndarray) -> np.ndarray:
    """Distances between all atoms of different molecules of a cluster [M, n, 3] (M(M-1)/2 n^2 values)."""
    m = x.shape[0]
    if m < 2:
        return np.zeros(0)
    return np.concatenate([cdist(x[a], x[a + 1 :].reshape(-1, 3)).ravel() for a in range(m - 1)])


def centre_distances(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Distances between the centres of mass of all pairs of molecules (M(M-1)/2 values)."""
    return pdist(centre_of_mass(x, z))


def dataset_stats(
    dataset_dir: str,
    out_dir: str,
    split: str = "all",
    max_clusters: int | None = None,
    bins: int = DISTANCE_BINS,
    max_distance: float = MAX_DISTANCE,
    progress: bool = False,
) -> dict:
    """Write Figures 3-5 (PNG), their numbers (CSV) and stats.json for one split; returns the summary.

    ``max_clusters`` takes the first clusters of the split in index order. Deterministic: the same
    dataset and arguments give byte-identical CSV and JSON files.
    """
    check_dataset(dataset_dir, split)
    if bins < 1 or not max_distance > 0:
        raise UserError(f"bins must be >= 1 and max_distance > 0 (got {bins}, {max_distance})")
    if max_clusters is not None and max_clusters < 1:
        raise UserError(f"max_clusters must be >= 1, got {max_clusters}")
    prepare_output_dir(out_dir)
    hist = {s: {k: DistanceHistogram(bins, float(max_distance)) for k in KINDS} for s in STRUCTURES}
    atoms = np.zeros(0, dtype=np.int64)  # clusters per molecule size (index = atoms)
    molecules: set[int] = set()
    n_clusters = 0
    for rec in tqdm(iter_clusters(dataset_dir, split, limit=max_clusters), unit="cluster", desc="stats",
                    disable=not progress, file=sys.stderr):
        m, n = rec.x_s.shape[:2]
        if n >= len(atoms):
            atoms = np.concatenate([atoms, np.zeros(n + 1 - len(atoms), dtype=np.int64)])
        atoms[n] += 1
        molecules.add(m)
        for s in STRUCTURES:
            x = np.asarray(getattr(rec, s), dtype=np.float64)
            hist[s]["atom_pairs"].add(intermolecular_distances(x))
            hist[s]["centre_pairs"].add(centre_distances(x, rec.z))
        n_clusters += 1
    if n_clusters == 0:
        raise UserError(f"no clusters in split {split!r} of {dataset_dir!r}")

    sizes = np.arange(len(atoms))
    used = sizes[atoms > 0]
    lo, hi = int(used.min()), int(used.max())
    size_edges = np.arange(lo, hi + 2)  # one bin [k, k + 1) per molecule size
    size_counts = atoms[lo : hi + 1]
    write_csv(os.path.join(out_dir, FILES["fig3"] + ".csv"),
              zip(size_edges[:-1].tolist(), size_edges[1:].tolist(), size_counts.tolist()),
              ["atoms_lo", "atoms_hi", "clusters"])
    _plot_atoms(os.path.join(out_dir, FILES["fig3"] + ".png"), size_edges, size_counts, n_clusters, split)
    for s in STRUCTURES:
        h = hist[s]
        edges = h["atom_pairs"].edges
        rows = zip(
            [*_fmt(edges[:-1]), _fmt_one(max_distance)], [*_fmt(edges[1:]), "inf"],
            h["atom_pairs"].counts.tolist(), h["centre_pairs"].counts.tolist(),
        )
        write_csv(os.path.join(out_dir, FILES[s] + ".csv"), rows,
                  ["distance_lo_A", "distance_hi_A", "atom_pairs", "centre_pairs"])
        other = "x_s" if s == "x_w" else "x_w"
        _plot_distances(os.path.join(out_dir, FILES[s] + ".png"), hist, s, other, n_clusters, split)

    weights = atoms[used]
    summary = {
        "version": __version__,
        "dataset": os.path.abspath(dataset_dir),
        "split": split,
        "clusters": n_clusters,
        "max_clusters": max_clusters,
        "molecules_per_cluster": sorted(molecules),
        "atoms_per_molecule": {
            "min": lo, "max": hi,
            "mean": round(float((used * weights).sum() / weights.sum()), _ROUND),
            "median": _weighted_median(used, weights),
        },
        "distance_bins": bins,
        "max_distance_A": float(max_distance),
        "bin_width_A": float(max_distance) / bins,
        "distances_A": {s: {k: hist[s][k].summary() for k in KINDS} for s in STRUCTURES},
        "files": sorted(f"{FILES[k]}.{e}" for k in ("fig3", "x_w", "x_s") for e in ("png", "csv")) + [FILES["summary"]],
    }
    write_json(os.path.join(out_dir, FILES["summary"]), summary)
    return summary


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    cum = np.cumsum(weights)
    total = int(cum[-1])
    lo, hi = (values[np.searchsorted(cum, p, side="right")] for p in ((total - 1) // 2, total // 2))
    return float((lo + hi) / 2)


def _fmt(values: np.ndarray) -> list[str]:
    return [_fmt_one(v) for v in values]


def _fmt_one(v: float) -> str:
    return f"{float(v):.6g}"


def _save(fig: plt.Figure, path: str) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=FIGURE_DPI, metadata={"Software": None})
    plt.close(fig)


def _subset(n_clusters: int, split: str) -> str:
    return f"{n_clusters} clusters" + ("" if split == "all" else f", {split} split")


def _plot_atoms(path: str, edges: np.ndarray, counts: np.ndarray, n_clusters: int, split: str) -> None:
    fig, ax = plt.subplots(figsize=FIGURE_SIZE_ONE)
    fig.subplots_adjust(**MARGINS_ONE)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=COLOUR["x_s"], edgecolor="white",
           linewidth=0.3)
    ax.set_xlabel("atoms per molecule (hydrogens included)")
    ax.set_ylabel("clusters")
    ax.set_title(f"Figure 3: molecule sizes ({_subset(n_clusters, split)})")
    ax.yaxis.get_major_locator().set_params(integer=True)
    _save(fig, path)


def _plot_distances(path: str, hist: dict, main: str, other: str, n_clusters: int, split: str) -> None:
    fig, axes = plt.subplots(1, len(KINDS), figsize=FIGURE_SIZE_TWO)
    fig.subplots_adjust(**MARGINS_TWO)
    number = 4 if main == "x_w" else 5
    for ax, kind in zip(axes, KINDS):
        top = 0.0
        for s, style in ((main, "main"), (other, "reference")):
            h = hist[s][kind]
            density = h.counts[:-1] / max(h.n, 1) / h.width  # fraction of pairs per Å (overflow included in n)
            top = max(top, float(density.max(initial=0.0)))
            label = STRUCTURE_LABEL[s]
            if h.counts[-1]:
                label += f"; {h.counts[-1] / h.n:.1%} beyond {h.max_distance:g} Å"
            if style == "main":
                ax.stairs(density, h.edges, fill=True, alpha=0.55, color=COLOUR[s], label=label)
            else:
                ax.stairs(density, h.edges, color=COLOUR[s], linestyle="--", linewidth=1.2, label=label)
        upper = max(hist[main][kind].maximum, hist[other][kind].maximum)
        ax.set_xlim(0, min(hist[main][kind].max_distance, upper * 1.02) if upper > 0 else 1)
        ax.set_ylim(0, top * 1.08 if top > 0 else 1)
        ax.set_xlabel("distance (Å)")
        ax.set_ylabel("fraction of pairs per Å")
        ax.set_title(KIND_TITLE[kind])
        ax.legend(fontsize="small", frameon=False)
    fig.suptitle(f"Figure {number}: pairwise distances in {STRUCTURE_NAME[main]} ({_subset(n_clusters, split)})")
    _save(fig, path)
