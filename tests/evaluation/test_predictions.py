"""Tests of crystalflow.evaluation.predictions: PRED_DIR writing and reading."""
from __future__ import annotations

import os

import numpy as np
import pytest
from toys import toy_predictions

from crystalflow.common.errors import UserError
from crystalflow.evaluation.evaluate import evaluate
from crystalflow.evaluation.predictions import PredictionWriter, read_info, read_predictions


def test_round_trip_with_shards_and_trajectories(tmp_path):
    pred_dir = tmp_path / "pred"
    items = toy_predictions()
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
    meta, x_w, x_s, z, *_ = toy_predictions(1)[0]
    with PredictionWriter(str(tmp_path / "p"), {"method": "toy"}) as w:
        w.add(meta, x_w, x_s, z, x_w)  # [M, n, 3] -> K = 1
    (item,) = read_predictions(str(tmp_path / "p"))
    assert item.pred.shape == (1, *x_s.shape)


def test_error_inside_writer_leaves_nothing(tmp_path):
    meta, x_w, x_s, z, pred, *_ = toy_predictions(1)[0]
    with pytest.raises(RuntimeError):
        with PredictionWriter(str(tmp_path / "p"), {"method": "toy"}) as w:
            w.add(meta, x_w, x_s, z, pred)
            raise RuntimeError("sampler crashed")
    assert os.listdir(tmp_path) == []


def test_existing_directory_needs_overwrite(tmp_path):
    meta, x_w, x_s, z, pred, *_ = toy_predictions(1)[0]
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
    meta, x_w, x_s, z, pred, *_ = toy_predictions(1)[0]
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


