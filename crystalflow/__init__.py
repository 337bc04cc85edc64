"""crystalflow: learn molecular crystallization with equivariant flow matching (CrystalFlow and beyond).

The few functions a notebook needs are importable from here (loaded on first use, so ``import
crystalflow`` stays light)::

    import crystalflow as cf

    cf.build_dataset(cf.embedded_cif_dir(), "cod17")                 # COD-Cluster17 from CIFs
    train_set = cf.ClusterDataset("cod17", "train")                  # lazy reader of a split
    cf.train("cod17", "run", cf.TrainConfig(epochs=4))               # CrystalFlow-LERP by default
    model, config = cf.load_model("run")
    cf.sample_dataset(model, "cod17", "test", "pred", {"method": config.model.method})
    scores = cf.evaluate("pred")                                      # metrics.json + per_cluster.csv
    print(scores["test"]["sol_c"]["mean"], scores["test"]["pm_atom"]["mean"])
    candidates = cf.predict("CC(=O)Oc1ccccc1C(=O)O", samples=4)      # a new molecule: ranked crystals
    cf.relax_pred_dir("pred", "pred-relaxed")                         # relaxed predictions (a PRED_DIR)
    rec = cf.fit_crystal(cluster_x, z)                                # a cluster's crystal ...
    cf.write_cif(cf.relax_crystal(rec.crystal).crystal, "pred.cif")   # ... relaxed, as a CIF

Each function's docstring has its own example; the layers below (``structure``, ``data``, ``nn``,
``physics``, ``backbones``, ``flow``, ``training``, ``evaluation``, ``search``, ``apps``) are documented
in docs/architecture.md.
"""
from __future__ import annotations

import importlib

from crystalflow.common.resources import embedded_cif_dir
from crystalflow.common.version import __version__

#: public name -> module that defines it
_API = {
    "build_dataset": "crystalflow.data.build",
    "ClusterDataset": "crystalflow.data.dataset",
    "TrainConfig": "crystalflow.training.config",
    "ModelConfig": "crystalflow.flow.model",
    "BackboneConfig": "crystalflow.backbones.registry",
    "train": "crystalflow.training.trainer",
    "load_model": "crystalflow.training.checkpoint",
    "sample_dataset": "crystalflow.evaluation.sampling",
    "evaluate": "crystalflow.evaluation.evaluate",
    "cluster_metrics": "crystalflow.evaluation.metrics",
    "packing_match": "crystalflow.evaluation.matching",
    "max_overlap": "crystalflow.structure.contacts",
    "predict": "crystalflow.apps.predict",
    "recover_crystal": "crystalflow.structure.lattice",
    "fit_crystal": "crystalflow.structure.lattice",
    "SymmetricCrystal": "crystalflow.structure.crystal",
    "write_cif": "crystalflow.structure.cif_write",
    "powder_pattern": "crystalflow.structure.pxrd",
    "pattern_similarity": "crystalflow.structure.pxrd",
    "relax_crystal": "crystalflow.physics.relax",
    "relax_cluster": "crystalflow.physics.relax",
    "relax_pred_dir": "crystalflow.evaluation.relaxation",
    "compare_crystals": "crystalflow.evaluation.compare",
    "search_crystals": "crystalflow.search.pipeline",
}

__all__ = ["__version__", "embedded_cif_dir", *_API]


def __getattr__(name: str):  # noqa: ANN202 - PEP 562 lazy attributes
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'crystalflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
