"""Dataset statistics (Figures 3-5): files, histogram counts that add up, exact bins, determinism."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLUSTERS

from crystalflow.common.errors import UserError
from crystalflow.data.cluster17_csv import import_cluster17
from crystalflow.data.stats import dataset_stats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ["fig3_atoms_per_molecule", "fig4_pairwise_distances_x_w", "fig5_pairwise_distances_x_s"]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def dataset(tiny_dataset: Path) -> Path:
    """The session's shared ``tiny_dataset`` (TINY_CLUSTERS clusters; the checks read its clusters.csv)."""
    return tiny_dataset


def expected_pairs(dataset: Path, split: str = "all", limit: int | None = None) -> tuple[int, int, list[int]]:
    """(intermolecular atom pairs, molecule pairs, atoms per molecule) of the clusters selected."""
    rows = [r for r in read_rows(dataset / "clusters.csv") if split == "all" or r["split"] == split][:limit]
    mol_pairs = [int(r["n_molecules"]) * (int(r["n_molecules"]) - 1) // 2 for r in rows]
    atoms = [int(r["n_atoms"]) for r in rows]
    return sum(p * n * n for p, n in zip(mol_pairs, atoms)), sum(mol_pairs), atoms


def test_files_counts_and_determinism(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "stats"
    summary = dataset_stats(str(dataset), str(out))
    dataset_stats(str(dataset), str(tmp_path / "again"))
    for path in sorted(out.iterdir()):  # PNGs included
        assert path.read_bytes() == (tmp_path / "again" / path.name).read_bytes(), path.name
    for stem in FIGURES:
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((out / "stats.json").read_text()) == summary
    atom_pairs, mol_pairs, atoms = expected_pairs(dataset)
    assert summary["clusters"] == TINY_CLUSTERS and summary["molecules_per_cluster"] == [17]
    assert summary["atoms_per_molecule"]["min"] == min(atoms) and summary["atoms_per_molecule"]["max"] == max(atoms)

    fig3 = read_rows(out / "fig3_atoms_per_molecule.csv")
    assert sum(int(r["clusters"]) for r in fig3) == TINY_CLUSTERS
    assert {int(r["atoms_lo"]): int(r["clusters"]) for r in fig3 if int(r["clusters"])} == dict(Counter(atoms))
    for stem, key in ((FIGURES[1], "x_w"), (FIGURES[2], "x_s")):
        rows = read_rows(out / f"{stem}.csv")
        assert len(rows) == summary["distance_bins"] + 1 and rows[-1]["distance_hi_A"] == "inf"
        assert float(rows[1]["distance_lo_A"]) == summary["bin_width_A"]
        assert sum(int(r["atom_pairs"]) for r in rows) == atom_pairs
        assert sum(int(r["centre_pairs"]) for r in rows) == mol_pairs
        assert summary["distances_A"][key]["atom_pairs"]["count"] == atom_pairs
    s, w = summary["distances_A"]["x_s"], summary["distances_A"]["x_w"]
    assert s["atom_pairs"]["min"] > 1.0  # crystal contacts; the default noise spreads the cluster out
    assert w["centre_pairs"]["mean"] > s["centre_pairs"]["mean"]


def test_overflow_split_and_max_clusters(dataset: Path, tmp_path: Path) -> None:
    split = read_rows(dataset / "clusters.csv")[0]["split"]
    limit = 1
    summary = dataset_stats(str(dataset), str(tmp_path / "o"), split=split, max_clusters=limit, bins=10,
                            max_distance=5.0)
    atom_pairs, mol_pairs, _ = expected_pairs(dataset, split, limit)
    rows = read_rows(tmp_path / "o" / "fig5_pairwise_distances_x_s.csv")
    assert summary["clusters"] == limit and summary["split"] == split and len(rows) == 11
    assert int(rows[-1]["atom_pairs"]) == summary["distances_A"]["x_s"]["atom_pairs"]["overflow"] > 0
    assert sum(int(r["atom_pairs"]) for r in rows) == atom_pairs
    assert sum(int(r["centre_pairs"]) for r in rows) == mol_pairs


def test_exact_bins_on_a_hand_made_cluster(tmp_path: Path) -> None:
    """Two C-H molecules 5 Å apart in x_s and 10 Å apart in x_w: every pair lands in a known bin."""
    raw = tmp_path / "raw"
    files = (("FinalPositions", "m_cluster16.csv", 5.0), ("InitialPositions", "m_cluster16_noised.csv", 10.0))
    for sub, name, shift in files:
        (raw / sub).mkdir(parents=True)
        (raw / sub / name).write_text(
            f"mol_idx,atom,x,y,z\n0,C,0,0,0\n0,H,0,0,1\n1,C,0,{shift},0\n1,H,0,{shift},1\n"
        )
    import_cluster17(str(raw), str(tmp_path / "ds"), progress=False)
    summary = dataset_stats(str(tmp_path / "ds"), str(tmp_path / "out"), bins=40, max_distance=20.0)
    for stem, shift in ((FIGURES[1], 10.0), (FIGURES[2], 5.0)):
        rows = read_rows(tmp_path / "out" / f"{stem}.csv")
        filled = {float(r["distance_lo_A"]): (int(r["atom_pairs"]), int(r["centre_pairs"]))
                  for r in rows if int(r["atom_pairs"]) or int(r["centre_pairs"])}
        assert filled == {shift: (4, 1)}  # C-C, H-H at shift; C-H, H-C at sqrt(shift^2 + 1) < shift + 0.5
    x_s = summary["distances_A"]["x_s"]["atom_pairs"]
    assert x_s["min"] == 5.0 and x_s["max"] == round(np.hypot(5.0, 1.0), 4)
    assert summary["atoms_per_molecule"] == {"min": 2, "max": 2, "mean": 2.0, "median": 2.0}


def test_user_errors(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        dataset_stats(str(tmp_path / "nope"), str(tmp_path / "o"))
    with pytest.raises(UserError, match="not a crystalflow dataset"):
        dataset_stats(str(tmp_path), str(tmp_path / "o"))
    with pytest.raises(UserError, match="split must be"):
        dataset_stats(str(dataset), str(tmp_path / "o"), split="dev")
    with pytest.raises(UserError, match="bins"):
        dataset_stats(str(dataset), str(tmp_path / "o"), bins=0)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        dataset_stats(str(dataset), str(blocker / "o"))
