"""The dataset index (crystalflow.data.index): clusters.csv and rejects.csv written and read back with types."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from crystalflow.common.errors import UserError
from crystalflow.data.index import CLUSTER_COLUMNS, check_split, iter_index, read_index, write_index


def _row(index: int, key: str, split: str, n_atoms: int, **extra) -> dict:
    return {"index": index, "split": split, "shard": "shard-00000.h5", "row": index, "key": key, "sample": 0,
            "name": key, "cod_id": "", "formula": "C6H6", "spacegroup": "P 1", "sg_number": 1, "z_prime": 1.0,
            "z": 1, "n_atoms": n_atoms, "n_molecules": 17, "density": 1.25, "source": f"/in/{key}.cif",
            "noise_angle": 10.0, "noise_push": 0.5, "x_w_max_overlap": 0.25, "cell": [1.0] * 9, **extra}


def test_write_index_tallies_and_read_back(tmp_path: Path) -> None:
    rows = [_row(0, "a", "train", 12), _row(1, "a", "train", 12), _row(2, "b", "test", 20, x_w_max_overlap=0.9)]
    rejects = [{"file": "z.cif", "reason": "disordered", "detail": ""},
               {"file": "y.cif", "reason": "no_cell", "detail": "flat"}]
    tally = write_index(str(tmp_path), iter(rows), rejects)
    assert tally.counts() == {"accepted_crystals": 2, "clusters": 3, "rejected": 2,
                              "reject_reasons": {"no_cell": 1, "disordered": 1},
                              "splits": {"train": 2, "valid": 0, "test": 1}}
    assert tally.atoms_per_molecule == {"min": 12.0, "median": 12.0, "mean": 14.67, "max": 20.0}
    assert tally.x_w == {"valid": 66.67, "max_overlap_median": 0.25, "max_overlap_max": 0.9,
                         "noise_angle_mean": 10.0, "noise_push_mean": 0.5}
    assert "noise_angle_mean" not in write_index(str(tmp_path), iter(rows), rejects, noise_stats=False).x_w
    with open(tmp_path / "clusters.csv", newline="") as f:
        assert next(csv.reader(f)) == CLUSTER_COLUMNS  # extra keys (cell) are left out
    with open(tmp_path / "rejects.csv", newline="") as f:
        assert [r["file"] for r in csv.DictReader(f)] == ["y.cif", "z.cif"]
    back = read_index(str(tmp_path))
    assert [r["index"] for r in back] == [0, 1, 2] and back[0]["density"] == 1.25 and back[0]["z_prime"] == 1.0
    assert back[2]["x_w_max_overlap"] == "0.9"  # optional columns stay text
    assert [r["key"] for r in iter_index(str(tmp_path), "test")] == ["b"]


def test_bad_split_and_missing_index(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="split must be train, valid, test or all, not 'dev'"):
        check_split("dev")
    with pytest.raises(UserError, match="no clusters.csv"):
        read_index(str(tmp_path))
