"""Tests of crystalflow.evaluation.evaluate on synthetic predictions."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from toys import toy_predictions

from crystalflow.evaluation.evaluate import METRIC_KEYS, evaluate
from crystalflow.evaluation.metrics import pm_atom
from crystalflow.evaluation.predictions import PredictionWriter


def test_evaluate_splits_failures_and_samples(tmp_path):
    pred_dir = tmp_path / "pred"
    items = toy_predictions(4)
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
    meta, x_w, x_s, z, pred, *_ = toy_predictions(1)[0]
    with PredictionWriter(str(tmp_path / "p"), {"method": "toy"}) as w:
        w.add(meta, x_w, x_s, z, pred)
    evaluate(str(tmp_path / "p"), progress=False)
    assert (tmp_path / "p" / "metrics.json").is_file() and (tmp_path / "p" / "per_cluster.csv").is_file()
