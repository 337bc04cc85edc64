"""COD-Cluster17 CSV layout: export, exact round trip, the published layout, bad files as rejects."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import build_embedded

from crystalflow.common.errors import REASONS, UserError
from crystalflow.data.cluster17_csv import (
    HEADER,
    _Bad,
    assign_ids,
    cluster_id,
    export_cluster17,
    format_cluster,
    import_cluster17,
    parse_cluster_csv,
)
from crystalflow.data.dataset import ClusterDataset
from crystalflow.data.index import CLUSTER_COLUMNS, assign_splits, iter_clusters
from crystalflow.data.pipeline import BuildSettings

#: the four smallest accepted embedded COD crystals (12-20 atoms per molecule)
SMALL = ["2100348-benzene.cif", "2205750.cif", "2100438-cell-vol.cif", "7105573-no-Z.cif"]
SAMPLES = 2
N_MOLECULES = 17


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A tiny built dataset: 4 crystals x 2 noise samples.

    Its own build, not conftest's shared ``tiny_dataset``: the checks depend on its exact contents (the first
    sorted id is benzene's, formula C6 H6; counts of ``len(SMALL) * SAMPLES`` clusters) and a test edits a copy."""
    return build_embedded(SMALL, tmp_path_factory.mktemp("c17"), BuildSettings(samples_per_crystal=SAMPLES))


@pytest.fixture(scope="module")
def exported(dataset: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "raw"
    assert export_cluster17(str(dataset), str(out), progress=False) == len(SMALL) * SAMPLES
    return out


def copy_raw(exported: Path, dest: Path, side_files: bool = True) -> Path:
    shutil.copytree(exported, dest)
    if not side_files:
        for name in ("split.csv", "metadata.csv", "export.json"):
            (dest / name).unlink()
    return dest


def test_export_layout(dataset: Path, exported: Path) -> None:
    index = read_rows(dataset / "clusters.csv")
    ids = [f"{r['cod_id']}_{r['sample']}" for r in index]
    assert sorted(os.listdir(exported / "FinalPositions")) == sorted(f"{i}_cluster16.csv" for i in ids)
    assert sorted(os.listdir(exported / "InitialPositions")) == sorted(f"{i}_cluster16_noised.csv" for i in ids)
    assert [r["id"] for r in read_rows(exported / "split.csv")] == ids
    assert [r["split"] for r in read_rows(exported / "split.csv")] == [r["split"] for r in index]
    meta = read_rows(exported / "metadata.csv")
    assert [m["id"] for m in meta] == ids and meta[0]["formula"] == index[0]["formula"]
    assert len(meta[0]["cell"].split()) == 9
    info = json.loads((exported / "export.json").read_text())
    assert info["clusters"] == len(ids) and info["settings"]["samples_per_crystal"] == SAMPLES

    rec = ClusterDataset(str(dataset), "all")[0]
    lines = (exported / "FinalPositions" / f"{ids[0]}_cluster16.csv").read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 1 + N_MOLECULES * len(rec.z)
    rows = [ln.split(",") for ln in lines[1:]]
    assert [int(r[0]) for r in rows] == np.repeat(np.arange(N_MOLECULES), len(rec.z)).tolist()
    assert {r[1] for r in rows} == {"C", "H"}  # benzene
    xyz = np.array([[float(v) for v in r[2:]] for r in rows], dtype=np.float32)
    assert np.array_equal(xyz, rec.x_s.reshape(-1, 3))


def test_round_trip_is_exact(dataset: Path, exported: Path, tmp_path: Path) -> None:
    summary = import_cluster17(str(exported), str(tmp_path / "back"), progress=False)
    assert summary["clusters"] == len(SMALL) * SAMPLES and summary["rejected"] == 0
    assert summary["split_by"] == "split.csv" and summary["settings"]["samples_per_crystal"] == SAMPLES
    assert summary["x_w"]["valid"] == 100.0  # built inputs are physically possible
    assert json.loads((tmp_path / "back" / "summary.json").read_text())["clusters"] == summary["clusters"]
    assert json.loads((tmp_path / "back" / "build.json").read_text())["format"] == "cod-cluster17-csv"
    a, b = ClusterDataset(str(dataset), "all"), ClusterDataset(str(tmp_path / "back"), "all")
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for name in ("x_s", "x_w"):
            xa, xb = getattr(ra, name), getattr(rb, name)
            assert xa.dtype == xb.dtype == np.float32
            assert np.array_equal(xa.view(np.uint32), xb.view(np.uint32))  # bit-identical
        assert np.array_equal(ra.z, rb.z)
        same = [c for c in CLUSTER_COLUMNS if c not in ("shard", "row")]  # index, split, key, sample, ...
        assert {c: ra.meta[c] for c in same} == {c: rb.meta[c] for c in same}
    # the shard metadata (cell included) survives too, so a second round trip gives the same files
    again = tmp_path / "again"
    export_cluster17(str(tmp_path / "back"), str(again), progress=False)
    for sub in ("FinalPositions", "InitialPositions"):
        for name in os.listdir(exported / sub):
            assert (again / sub / name).read_bytes() == (exported / sub / name).read_bytes()
    assert (again / "metadata.csv").read_bytes() == (exported / "metadata.csv").read_bytes()
    assert (again / "split.csv").read_bytes() == (exported / "split.csv").read_bytes()


def test_float32_text_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 3)) * 10.0 ** rng.integers(-30, 30, (3, 4, 3))).astype(np.float32)
    x[0, 0] = [0.0, -0.0, np.finfo(np.float32).tiny]
    x[1, 1] = [np.finfo(np.float32).max, -np.finfo(np.float32).eps, 1.0 / 3.0]
    path = tmp_path / "c.csv"
    path.write_text(format_cluster(x, np.array([6, 1, 8, 7])))
    mol, z, back = parse_cluster_csv(str(path))
    assert mol.tolist() == [0, 1, 2] and z.tolist() == [6, 1, 8, 7]
    assert np.array_equal(back.astype(np.float32).view(np.uint32), x.view(np.uint32))


def test_parse_accepts_no_header_spaces_and_unordered_molecules(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("1, C, 1, 0, 0\n0,C,0,0,0\r\n1,h,1,1,0\n\n0,H,0,1,0\n")
    mol, z, x = parse_cluster_csv(str(path))
    assert mol.tolist() == [0, 1] and z.tolist() == [6, 1]
    assert x[1].tolist() == [[1, 0, 0], [1, 1, 0]]


def test_split_subset_and_stale_files(dataset: Path, exported: Path, tmp_path: Path) -> None:
    out = copy_raw(exported, tmp_path / "raw")
    n = export_cluster17(str(dataset), str(out), split="test", progress=False)
    test_ids = [r["id"] for r in read_rows(exported / "split.csv") if r["split"] == "test"]
    assert n == len(test_ids) > 0
    assert sorted(os.listdir(out / "FinalPositions")) == sorted(f"{i}_cluster16.csv" for i in test_ids)
    assert sorted(os.listdir(out / "InitialPositions")) == sorted(f"{i}_cluster16_noised.csv" for i in test_ids)
    assert {r["split"] for r in read_rows(out / "split.csv")} == {"test"}
    assert [r.meta["index"] for r in iter_clusters(str(dataset), "test")] == [
        int(r["index"]) for r in read_rows(dataset / "clusters.csv") if r["split"] == "test"
    ]


def test_import_published_layout_assigns_seeded_split(exported: Path, tmp_path: Path) -> None:
    raw = copy_raw(exported, tmp_path / "raw", side_files=False)
    summary = import_cluster17(str(raw), str(tmp_path / "ds"), seed=3, progress=False)
    rows = read_rows(tmp_path / "ds" / "clusters.csv")
    ids = sorted(f[: -len("_cluster16.csv")] for f in os.listdir(raw / "FinalPositions"))
    assert [r["key"] for r in rows] == ids and [r["name"] for r in rows] == ids  # sorted, like the authors' reader
    assert [r["split"] for r in rows] == assign_splits(ids, 3)
    assert summary["split_by"] == "crystal" and summary["splits_assigned"] == len(ids)
    assert summary["settings"] is None and summary["noise"] is None
    assert rows[0]["cod_id"] == "" and rows[0]["n_molecules"] == str(N_MOLECULES) and rows[0]["formula"] == "C6 H6"
    again = import_cluster17(str(raw), str(tmp_path / "ds2"), seed=3, progress=False)
    assert read_rows(tmp_path / "ds2" / "clusters.csv") == rows and again["splits"] == summary["splits"]


def test_import_keeps_interpenetrating_inputs_and_reports_them(exported: Path, tmp_path: Path) -> None:
    """Released inputs are kept as they are; the import reports how many are physically valid."""
    raw = copy_raw(exported, tmp_path / "raw", side_files=False)
    first = sorted((raw / "InitialPositions").iterdir())[0]
    _, z, x = parse_cluster_csv(str(first))
    x[1] += x[0].mean(axis=0) - x[1].mean(axis=0) + 0.3  # molecule 1 moved into molecule 0
    first.write_text(format_cluster(x, z))
    summary = import_cluster17(str(raw), str(tmp_path / "ds"), progress=False)
    n = len(SMALL) * SAMPLES
    assert summary["clusters"] == n and summary["rejected"] == 0
    assert summary["x_w"]["valid"] == pytest.approx(100.0 * (n - 1) / n)
    assert summary["x_w"]["max_overlap_max"] > 0.7
    rows = read_rows(tmp_path / "ds" / "clusters.csv")
    assert sum(float(r["x_w_max_overlap"]) >= 0.7 for r in rows) == 1


def _edit(path: Path, fn) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(fn(lines)))


def test_bad_files_become_rejects(exported: Path, tmp_path: Path) -> None:
    raw = copy_raw(exported, tmp_path / "raw", side_files=False)
    final = raw / "FinalPositions"
    initial = raw / "InitialPositions"
    ids = sorted(f[: -len("_cluster16.csv")] for f in os.listdir(final))
    (initial / f"{ids[0]}_cluster16_noised.csv").unlink()  # missing partner
    _edit(final / f"{ids[1]}_cluster16.csv", lambda ls: ls[:-1])  # ragged: the last molecule lost an atom

    def non_numeric(ls):
        ls[5] = ",".join(ls[5].split(",")[:3] + ["abc", "1.0"]) + "\n"
        return ls
    _edit(initial / f"{ids[2]}_cluster16_noised.csv", non_numeric)
    _edit(final / f"{ids[3]}_cluster16.csv", lambda ls: [ls[0], ls[1].replace(",C,", ",Xq,")] + ls[2:])
    n_atoms = (len((final / f"{ids[4]}_cluster16.csv").read_text().splitlines()) - 1) // N_MOLECULES
    _edit(initial / f"{ids[4]}_cluster16_noised.csv", lambda ls: ls[:-n_atoms])  # 16 molecules vs 17
    (final / "notes.csv").write_text("not a cluster\n")

    def stretch(ls):  # one atom of the first molecule moved by 0.5 Å: no longer a rigid copy
        cells = ls[1].rstrip("\n").split(",")
        cells[2] = str(float(cells[2]) + 0.5)
        return [ls[0], ",".join(cells) + "\n"] + ls[2:]
    _edit(initial / f"{ids[5]}_cluster16_noised.csv", stretch)

    summary = import_cluster17(str(raw), str(tmp_path / "ds"), progress=False)
    rejects = {r["file"]: r for r in read_rows(tmp_path / "ds" / "rejects.csv")}
    assert set(rejects) == {
        f"FinalPositions/{ids[0]}_cluster16.csv", f"FinalPositions/{ids[1]}_cluster16.csv",
        f"FinalPositions/{ids[2]}_cluster16.csv", f"FinalPositions/{ids[3]}_cluster16.csv",
        f"FinalPositions/{ids[4]}_cluster16.csv", f"FinalPositions/{ids[5]}_cluster16.csv",
        "FinalPositions/notes.csv",
    }
    assert all(r["reason"] in REASONS for r in rejects.values())
    assert "missing partner" in rejects[f"FinalPositions/{ids[0]}_cluster16.csv"]["detail"]
    assert "ragged" in rejects[f"FinalPositions/{ids[1]}_cluster16.csv"]["detail"]
    assert "'abc' is not a number" in rejects[f"FinalPositions/{ids[2]}_cluster16.csv"]["detail"]
    assert rejects[f"FinalPositions/{ids[3]}_cluster16.csv"]["reason"] == "unknown_element"
    assert "'Xq'" in rejects[f"FinalPositions/{ids[3]}_cluster16.csv"]["detail"]
    assert "17 molecules" in rejects[f"FinalPositions/{ids[4]}_cluster16.csv"]["detail"]
    assert rejects[f"FinalPositions/{ids[5]}_cluster16.csv"]["reason"] == "not_rigid"
    assert "best fit RMSD" in rejects[f"FinalPositions/{ids[5]}_cluster16.csv"]["detail"]
    assert summary["rejected"] == 7
    assert summary["reject_reasons"] == {"unreadable": 5, "unknown_element": 1, "not_rigid": 1}
    good = ids[6:]
    assert summary["clusters"] == len(good)
    assert [r["key"] for r in read_rows(tmp_path / "ds" / "clusters.csv")] == good


@pytest.mark.parametrize("text, message", [
    ("mol_idx,atom,x,y,z\n", "no atom rows"),
    ("mol_idx,atom,x,y,z\n0,C,0,0,0\n0,H,1,0,0\n", "at least 2"),
    ("0,C,0,0\n1,C,1,1,1\n", "expected 5"),
    ("0,C,0,0,0\n1,C,1,1,nan\n", "not finite"),
    ("0,C,0,0,0\n0,H,0,0,1\n1,H,1,1,1\n1,C,1,1,2\n", "other atoms"),
    ("0,C,0,0,0\nx,C,1,1,1\n", "not an integer"),
])
def test_parse_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.csv"
    path.write_text(text)
    with pytest.raises(_Bad, match=message):
        parse_cluster_csv(str(path))


def test_user_errors(dataset: Path, exported: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        export_cluster17(str(tmp_path / "nope"), str(tmp_path / "o"), progress=False)
    with pytest.raises(UserError, match="not a crystalflow dataset"):
        export_cluster17(str(tmp_path), str(tmp_path / "o"), progress=False)
    with pytest.raises(UserError, match="split must be"):
        export_cluster17(str(dataset), str(tmp_path / "o"), split="dev", progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        export_cluster17(str(dataset), str(blocker / "o"), progress=False)
    with pytest.raises(UserError, match="does not exist"):
        import_cluster17(str(tmp_path / "nope"), str(tmp_path / "o"), progress=False)
    (tmp_path / "empty" / "FinalPositions").mkdir(parents=True)
    with pytest.raises(UserError, match="no InitialPositions"):
        import_cluster17(str(tmp_path / "empty"), str(tmp_path / "o"), progress=False)
    (tmp_path / "empty" / "InitialPositions").mkdir()
    with pytest.raises(UserError, match="no \\*_cluster16.csv"):
        import_cluster17(str(tmp_path / "empty"), str(tmp_path / "o"), progress=False)
    with pytest.raises(UserError, match="cannot write"):
        import_cluster17(str(exported), str(blocker / "o"), progress=False)
    with pytest.raises(UserError, match="already holds a dataset"):
        import_cluster17(str(exported), str(dataset), progress=False)
    raw = copy_raw(exported, tmp_path / "raw")
    (raw / "split.csv").write_text("id,split\nx,dev\n")
    with pytest.raises(UserError, match="not train, valid or test"):
        import_cluster17(str(raw), str(tmp_path / "o2"), progress=False)


def test_ids_are_safe_and_unique(dataset: Path, tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    rows = read_rows(ds / "clusters.csv")
    rows[0].update(cod_id="", name="a/b c")  # unsafe characters
    rows[2].update(cod_id="X")
    rows[4].update(cod_id="x")  # clashes with X on case-insensitive file systems
    with open(ds / "clusters.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ids = assign_ids(str(ds))
    assert ids[0] == "a_b_c_0" and ids[2] == "X_0" and ids[4] == "x_0-2"
    assert len({i.casefold() for i in ids.values()}) == len(rows)
    unnamed = {"cod_id": "", "name": "", "key": "sub/../.hidden.cif", "sample": 0, "index": 7}
    assert cluster_id(unnamed, False) == "hidden"
    assert export_cluster17(str(ds), str(tmp_path / "raw"), progress=False) == len(rows)
    assert (tmp_path / "raw" / "FinalPositions" / "a_b_c_0_cluster16.csv").is_file()


def test_rigid_fit_rmsd_hand_computed() -> None:
    """0 for a rotated, moved and mirrored copy; a two-atom molecule stretched from 1 to 3 Å fits to 1 Å RMSD."""
    from scipy.spatial.transform import Rotation

    from crystalflow.data.cluster17_csv import rigid_fit_rmsd

    mol = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.2, 0.3], [-0.4, 0.2, 1.1]])
    rot = Rotation.from_rotvec([0.3, -1.0, 2.0]).as_matrix()
    moved = np.stack([mol @ rot.T + 5.0, -(mol @ rot.T) + 1.0])  # rigid; mirrored through its centre
    assert np.allclose(rigid_fit_rmsd(moved, np.stack([mol, mol])), 0.0, atol=1e-12)
    pair = np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    stretched = np.array([[[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]])
    assert rigid_fit_rmsd(stretched, pair)[0] == pytest.approx(1.0)  # each atom 1 Å off after centring
