"""PRED_DIR writing/reading and ``evaluate`` on synthetic predictions."""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from crystalflow.common.errors import UserError
from crystalflow.evaluation.evaluate import METRIC_KEYS, evaluate
from crystalflow.evaluation.metrics import pm_atom
from crystalflow.evaluation.predictions import PredictionWriter, read_info, read_predictions

RNG_SEED = 7


def _cluster(rng: np.random.Generator, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A toy cluster: m copies of a rigid n-atom molecule on a coarse grid, and its atomic numbers."""
    mol = rng.normal(scale=0.7, size=(n, 3))
    offsets = np.array([[i % 3, (i // 3) % 3, i // 9] for i in range(m)], dtype=float) * 6.0
    z = rng.choice([1, 6, 7, 8], size=n)
    return (mol[None] + offsets[:, None]).astype(np.float32), z


def _items(n_items: int = 5):
    """Synthetic clusters with varying M, n, K and optional trajectories."""
    rng = np.random.default_rng(RNG_SEED)
    out = []
    for c in range(n_items):
        m, n, k = 3 + c, 4 + 2 * c, 1 + c % 3
        x_s, z = _cluster(rng, m, n)
        x_w = x_s + rng.normal(scale=0.5, size=x_s.shape).astype(np.float32)
        pred = x_s[None] + rng.normal(scale=0.3, size=(k, *x_s.shape)).astype(np.float32)
        traj = times = None
        if c % 2 == 0:
            t = 3 + c
            traj = rng.normal(size=(t, k, *x_s.shape)).astype(np.float32)
            times = np.linspace(0, 1, t) if c else None
        meta = {"index": c, "split": "test" if c % 2 else "valid", "key": f"toy-{c}", "density": 1.3}
        out.append((meta, x_w, x_s, z, pred, traj, times))
    return out


def test_round_trip_with_shards_and_trajectories(tmp_path):
    pred_dir = tmp_path / "pred"
    items = _items()
    with PredictionWriter(str(pred_dir), {"method": "toy", "steps": 3}, clusters_per_shard=2) as w:
        for meta, x_w, x_s, z, pred, traj, times in items:
            w.add(meta, x_w, x_s, z, pred, trajectory=traj, times=times)
        assert not pred_dir.exists(), "PRED_DIR must appear only when complete"
    assert sorted(os.listdir(tmp_path)) == ["pred"], "no temporary folder left behind"
    info = read_info(str(pred_dir))
    assert info["method"] == "toy" and info["steps"] == 3 and info["n_clusters"] == len(items)
    assert info["K"] == 3 and info["solver"] is None and info["version"] and info["seconds"] >= 0
    assert info["shards"] == ["pred-00000.h5", "pred-00001.h5", "pred-00002.h5"]
    back = list(read_predictions(str(pred_dir)))
    assert len(back) == len(items)
    for got, (meta, x_w, x_s, z, pred, traj, times) in zip(back, items):
        assert got.meta == meta
        np.testing.assert_array_equal(got.x_w, x_w)
        np.testing.assert_array_equal(got.x_s, x_s)
        np.testing.assert_array_equal(got.z, z)
        np.testing.assert_array_equal(got.pred, pred)
        if traj is None:
            assert got.trajectory is None and got.times is None
        else:
            np.testing.assert_array_equal(got.trajectory, traj)
            expected = np.linspace(0, 1, traj.shape[0]) if times is None else times
            np.testing.assert_allclose(got.times, expected, atol=1e-7)


def test_single_prediction_becomes_one_sample(tmp_path):
    meta, x_w, x_s, z, *_ = _items(1)[0]
    with PredictionWriter(str(tmp_path / "p"), {"method": "toy"}) as w:
        w.add(meta, x_w, x_s, z, x_w)  # [M, n, 3] -> K = 1
    (item,) = read_predictions(str(tmp_path / "p"))
    assert item.pred.shape == (1, *x_s.shape)


def test_error_inside_writer_leaves_nothing(tmp_path):
    meta, x_w, x_s, z, pred, *_ = _items(1)[0]
    with pytest.raises(RuntimeError):
        with PredictionWriter(str(tmp_path / "p"), {"method": "toy"}) as w:
            w.add(meta, x_w, x_s, z, pred)
            raise RuntimeError("sampler crashed")
    assert os.listdir(tmp_path) == []


def test_existing_directory_needs_overwrite(tmp_path):
    meta, x_w, x_s, z, pred, *_ = _items(1)[0]
    target = tmp_path / "p"
    target.mkdir()
    (target / "old.txt").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        PredictionWriter(str(target), {"method": "toy"})
    with PredictionWriter(str(target), {"method": "new"}, overwrite=True) as w:
        w.add(meta, x_w, x_s, z, pred)
    assert not (target / "old.txt").exists() and read_info(str(target))["method"] == "new"
    assert sorted(os.listdir(tmp_path)) == ["p"]


def test_shape_errors(tmp_path):
    meta, x_w, x_s, z, pred, *_ = _items(1)[0]
    with PredictionWriter(str(tmp_path / "p"), {"method": "toy"}) as w:
        with pytest.raises(ValueError, match="pred"):
            w.add(meta, x_w, x_s, z, pred[:, :, :-1])
        with pytest.raises(ValueError, match="z has"):
            w.add(meta, x_w, x_s, z[:-1], pred)
        with pytest.raises(ValueError, match="trajectory"):
            w.add(meta, x_w, x_s, z, pred, trajectory=pred)
        with pytest.raises(ValueError, match="times"):
            w.add(meta, x_w, x_s, z, pred, trajectory=pred[None], times=[0.0, 1.0])


def test_not_a_prediction_directory(tmp_path):
    with pytest.raises(UserError, match="not a prediction directory"):
        list(read_predictions(str(tmp_path)))
    with pytest.raises(UserError, match="not a prediction directory"):
        evaluate(str(tmp_path), str(tmp_path / "m.json"), progress=False)


def test_evaluate_splits_failures_and_samples(tmp_path):
    pred_dir = tmp_path / "pred"
    items = _items(4)
    with PredictionWriter(str(pred_dir), {"method": "toy"}) as w:
        for c, (meta, x_w, x_s, z, pred, *_rest) in enumerate(items):
            if c == 1:
                meta = {**meta, "failure": "sampler diverged"}
                pred = np.full_like(pred, np.nan)
            if c == 2:  # one of three samples is broken: scored on the other two
                pred = pred.copy()
                pred[0, 0, 0, 0] = np.inf
            w.add(meta, x_w, x_s, z, pred)
    out_json = tmp_path / "metrics.json"
    result = evaluate(str(pred_dir), str(out_json), progress=False)
    on_disk = json.loads(out_json.read_text())
    assert set(on_disk) == {"valid", "test", "info", "per_cluster"}
    assert on_disk["info"]["method"] == "toy"
    ev = on_disk["info"]["evaluation"]
    assert ev["n_clusters"] == 4 and ev["n_failed"] == 1
    assert ev["failures"] == [{"index": 1, "key": "toy-1", "split": "test", "reason": "sampler diverged"}]
    rows = result["per_cluster"]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[1]["failure"] == "sampler diverged" and all(math.isnan(rows[1][k]) for k in METRIC_KEYS)
    assert rows[2]["K"] == 3 and rows[2]["K_used"] == 2
    assert rows[2]["pm_atom"] == pytest.approx(pm_atom(items[2][4][1:], items[2][2]))
    # test split = clusters 1 (failed) and 3: the mean uses cluster 3 only
    assert result["test"]["pm_atom"]["n"] == 1
    assert result["test"]["pm_atom"]["mean"] == pytest.approx(rows[3]["pm_atom"])
    assert result["valid"]["pm_atom"]["n"] == 2
    assert result["valid"]["pm_atom"]["mean"] == pytest.approx((rows[0]["pm_atom"] + rows[2]["pm_atom"]) / 2)
    with open(tmp_path / "per_cluster.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and table[1]["failure"] == "sampler diverged"
    assert float(table[3]["pm_atom"]) == pytest.approx(rows[3]["pm_atom"])


def test_evaluate_default_output_in_pred_dir(tmp_path):
    meta, x_w, x_s, z, pred, *_ = _items(1)[0]
    with PredictionWriter(str(tmp_path / "p"), {"method": "toy"}) as w:
        w.add(meta, x_w, x_s, z, pred)
    evaluate(str(tmp_path / "p"), progress=False)
    assert (tmp_path / "p" / "metrics.json").is_file() and (tmp_path / "p" / "per_cluster.csv").is_file()
