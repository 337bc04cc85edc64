"""Score a PRED_DIR: per-cluster metrics, their mean/std per split, ``metrics.json`` + ``per_cluster.csv``.

``metrics.json``::

    {"<split>": {"<metric>": {"mean": .., "std": .., "n": ..}, ...},   # one entry per split present
     "info": {... the PRED_DIR's info.json ..., "evaluation": {pred_dir, seconds, version,
              n_clusters, n_failed, failures: [{index, key, split, reason}]}},
     "per_cluster": [{index, split, key, name, cod_id, formula, n_atoms, K, K_used, failure, <metrics>}, ...]}

Samples with non-finite coordinates are dropped (``K_used`` counts the others). A cluster the
producer failed on (``meta['failure']``), without a finite sample, or whose metrics cannot be
computed gets NaN metrics and its reason in ``failure``; NaNs are left out of the means (``n``
counts the clusters used). NaN is written as the JSON token ``NaN`` (Python's json reads it).
``per_cluster.csv`` (same rows) is written beside the JSON.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
from tqdm import tqdm

from crystalflow.common.checks import prepare_output_dir
from crystalflow.common.errors import UserError
from crystalflow.common.io import write_csv, write_json
from crystalflow.common.version import __version__
from crystalflow.evaluation.metrics import aggregate, cluster_metrics
from crystalflow.evaluation.predictions import read_info, read_predictions

#: metric keys of :func:`crystalflow.evaluation.metrics.cluster_metrics`, in report order (NaN for failed clusters)
METRIC_KEYS = (
    "pm_atom", "pm_center", "solved", "solved_top1", "valid", "max_overlap", "matched", "n_matched", "rmsd15",
    "collision_pairs", "separation", "compactness", "rigidity", "rmsd_matched", "orientation",
)
#: cluster columns copied from the meta row into each per-cluster row
META_COLUMNS = ("index", "split", "key", "name", "cod_id", "formula")
PER_CLUSTER_CSV = "per_cluster.csv"
METRICS_JSON = "metrics.json"


def _score(item) -> tuple[dict[str, float], str, int]:  # noqa: ANN001 - a PredictionItem
    """Metrics of one predicted cluster, the failure reason ('' when scored) and the samples used.

    Samples with any non-finite coordinate are dropped; a cluster without a finite sample fails.
    """
    reason = str(item.meta.get("failure") or "")
    finite = np.isfinite(item.pred).reshape(item.pred.shape[0], -1).all(axis=1)
    if not reason and not finite.any():
        reason = "non-finite prediction"
    if not reason:
        try:
            return cluster_metrics(item.pred[finite], item.x_s, item.z), "", int(finite.sum())
        except (ValueError, np.linalg.LinAlgError) as e:
            reason = f"metrics failed: {e}"
    return {key: math.nan for key in METRIC_KEYS}, reason, 0


def evaluate(pred_dir: str, out_json: str | None = None, progress: bool = True) -> dict:
    """Score every cluster of ``pred_dir`` and write ``out_json`` (default ``PRED_DIR/metrics.json``).

    Returns the dictionary written (see the module docstring); ``per_cluster.csv`` goes beside it.

    Example::

        from crystalflow import evaluate

        scores = evaluate("pred")                     # pred/metrics.json and pred/per_cluster.csv
        print(scores["test"]["sol_c"]["mean"], scores["test"]["pm_atom"]["mean"])
    """
    info = read_info(pred_dir)
    out_json = out_json or os.path.join(pred_dir, METRICS_JSON)
    if os.path.isdir(out_json):
        raise UserError(f"output {out_json!r} is a directory; give the path of the metrics JSON file to write")
    out_dir = os.path.dirname(os.path.abspath(out_json))
    prepare_output_dir(out_dir)
    start = time.time()
    rows: list[dict] = []
    by_split: dict[str, list[dict[str, float]]] = {}
    bar = tqdm(total=info.get("n_clusters"), desc="evaluate", unit="cluster", disable=not progress)
    try:
        for item in read_predictions(pred_dir):
            metrics, reason, k_used = _score(item)
            meta = item.meta
            split = str(meta.get("split", "unknown"))
            row = {c: meta.get(c) for c in META_COLUMNS}
            row.update(split=split, n_atoms=int(item.z.shape[0]), K=int(item.pred.shape[0]), K_used=k_used,
                       failure=reason)
            row.update(metrics)
            rows.append(row)
            by_split.setdefault(split, []).append(metrics)
            bar.update()
    finally:
        bar.close()
    failures = [{k: r[k] for k in ("index", "key", "split")} | {"reason": r["failure"]} for r in rows if r["failure"]]
    result: dict = {split: aggregate(values) for split, values in by_split.items()}
    result["info"] = dict(info)
    result["info"]["evaluation"] = {
        "pred_dir": os.path.abspath(pred_dir), "seconds": round(time.time() - start, 3),
        "version": __version__, "n_clusters": len(rows), "n_failed": len(failures), "failures": failures,
    }
    result["per_cluster"] = rows
    write_json(out_json, result)
    write_csv(os.path.join(out_dir, PER_CLUSTER_CSV), rows)
    return result
