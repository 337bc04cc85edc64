"""Dataset building: layout, rejects with reasons, splits, --limit, and resuming a killed build."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import write

from crystalflow.cli import main
from crystalflow.common.errors import UserError
from crystalflow.data.build import build_dataset
from crystalflow.data.dataset import ClusterDataset, collate
from crystalflow.data.index import assign_splits
from crystalflow.data.pipeline import BuildSettings


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_build_layout_and_reader(small_cif_dir, tmp_path):
    write(small_cif_dir / "empty.cif", "")
    write(small_cif_dir / "junk.cif", os.urandom(3000))
    out = tmp_path / "ds"
    res = build_dataset(str(small_cif_dir), str(out), BuildSettings(samples_per_crystal=2), progress=False)
    s = json.loads((out / "summary.json").read_text())
    assert s == {**res.summary}
    assert s["accepted_crystals"] == 6 and s["clusters"] == 12 and s["rejected"] == 2
    assert s["reject_reasons"] == {"unreadable": 2}
    assert s["noise"]["spread"] > 1 and s["seed"] == 0 and s["version"]
    rej = rows(out / "rejects.csv")
    assert sorted(r["file"] for r in rej) == ["empty.cif", "junk.cif"] and all(r["detail"] for r in rej)
    table = rows(out / "clusters.csv")
    by_key = {}
    for r in table:
        by_key.setdefault(r["key"], set()).add(r["split"])
        assert r["formula"] and r["spacegroup"] and int(r["n_molecules"]) == 17
    assert all(len(v) == 1 for v in by_key.values())  # both samples of a crystal share a split
    ds = ClusterDataset(str(out), "all")
    rec = ds[0]
    assert rec.x_s.shape == rec.x_w.shape == (17, len(rec.z), 3)
    assert rec.x_s.dtype == np.float32
    batch = collate([ds[i] for i in range(3)])
    assert batch.num_graphs == 3 and batch.num_molecules == 51


def test_split_is_exact_and_seeded():
    groups = [f"g{i}" for i in range(100)]
    split = assign_splits(groups, seed=0)
    assert [split.count(s) for s in ("train", "valid", "test")] == [80, 10, 10]
    assert split == assign_splits(groups, seed=0) and split != assign_splits(groups, seed=1)
    assert assign_splits(groups[::-1], seed=0) == split[::-1]  # a group's split does not depend on order
    assert set(assign_splits(["a", "b", "c"], 0)) == {"train", "valid", "test"}


def test_limit_keeps_first_crystals(small_cif_dir, tmp_path):
    res = build_dataset(str(small_cif_dir), str(tmp_path / "ds"), limit=3, progress=False)
    assert res.summary["accepted_crystals"] == 3
    keys = [r["key"] for r in rows(tmp_path / "ds" / "clusters.csv")]
    assert keys == sorted(os.listdir(small_cif_dir))[:3]


def test_rerun_with_other_settings_is_refused(small_cif_dir, tmp_path):
    build_dataset(str(small_cif_dir), str(tmp_path / "ds"), progress=False)
    with pytest.raises(UserError, match="other inputs or settings"):
        build_dataset(str(small_cif_dir), str(tmp_path / "ds"), BuildSettings(seed=5), progress=False)
    build_dataset(str(small_cif_dir), str(tmp_path / "ds"), BuildSettings(seed=5), overwrite=True, progress=False)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["build", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    if os.access(ro, os.W_OK):  # root ignores permissions: use a path under a file instead
        target = str(write(tmp_path / "afile", "x") / "sub")
    else:
        target = str(ro / "out")
    assert main(["build", str(tmp_path), "-o", target]) == 2
    assert "cannot write" in capsys.readouterr().err


def _arrays(ds_dir):
    ds = ClusterDataset(str(ds_dir), "all")
    return [(r.meta["key"], r.x_s, r.x_w) for r in (ds[i] for i in range(len(ds)))]


def test_killed_build_resumes(embedded_dir, tmp_path):
    src = tmp_path / "many"
    src.mkdir()
    for rep in range(4):  # 252 files: enough shards to kill the build part-way
        for f in sorted(os.listdir(embedded_dir)):
            if f.endswith(".cif"):
                os.symlink(embedded_dir / f, src / f"r{rep}-{f}")
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "crystalflow", "build", str(src), "-o", str(out), "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_dir = out / "shards"
    deadline = time.time() + 60
    while time.time() < deadline:
        done = [p for p in shard_dir.glob("*.h5")] if shard_dir.exists() else []
        if len(done) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("*.h5")}
    assert finished, "no shard finished before the kill"
    assert not (out / "clusters.csv").exists(), "build finished before it could be killed"
    for p in shard_dir.glob("*.h5"):  # every shard file present is whole
        with h5py.File(p) as f:
            assert "meta" in f
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    for name, mtime in finished.items():  # finished shards were not redone
        assert (shard_dir / name).stat().st_mtime_ns == mtime
    assert not list(shard_dir.glob("*.tmp"))
    fresh = tmp_path / "fresh"
    build_dataset(str(src), str(fresh), workers=1, progress=False)  # same chunking as the killed run
    a, b = _arrays(out), _arrays(fresh)
    assert [k for k, _, _ in a] == [k for k, _, _ in b] and len(a) == 4 * 63
    assert all(np.array_equal(x, y) and np.array_equal(u, v) for (_, x, u), (_, y, v) in zip(a, b))
    assert rows(out / "clusters.csv") == rows(fresh / "clusters.csv")


@pytest.mark.parametrize("preset", ["none", "thermal", "melt", "liquid", "solution", "symmetric"])
def test_every_x_w_of_a_built_dataset_is_valid(small_cif_dir, tmp_path, preset):
    """Each noise preset gives physically possible inputs: no heavy-atom vdW overlap ≥ 0.7 Å in any x_w
    (checked on the stored float32 arrays), and the summary and clusters.csv record it with the noise."""
    from crystalflow.data.noise import noise_model
    from crystalflow.structure.contacts import is_valid

    out = tmp_path / preset
    settings = BuildSettings(noise=noise_model(preset), noise_preset=preset, samples_per_crystal=2)
    summary = build_dataset(str(small_cif_dir), str(out), settings, progress=False).summary
    ds = ClusterDataset(str(out), "all")
    assert len(ds) == 12
    assert all(is_valid(ds[i].x_w, ds[i].z) for i in range(len(ds)))
    assert summary["x_w"]["valid"] == 100.0 and summary["x_w"]["max_overlap_max"] < 0.7
    assert set(summary["x_w"]) >= {"noise_angle_mean", "noise_push_mean"}
    table = rows(out / "clusters.csv")
    assert all(float(r["x_w_max_overlap"]) < 0.7 and r["noise_angle"] != "" for r in table)
