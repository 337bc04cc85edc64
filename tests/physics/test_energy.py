"""A collapsed cell is a clear error, and a prediction whose crystal collapses is relaxed as a cluster."""
from __future__ import annotations

import numpy as np
import pytest

from crystalflow.physics.energy import MIN_PLANE_SPACING, CellError, image_pairs


def test_collapsed_cell_raises():
    sites = np.array([[[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]]])
    flat = np.array([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.5 * MIN_PLANE_SPACING]]])
    ops = np.array([0])
    with pytest.raises(CellError, match="collapsed"):
        image_pairs(sites, flat, np.eye(3, dtype=int)[None], np.zeros((1, 3)), ops, 10.0)
    fine = flat.copy()
    fine[0, 2, 2] = 5.0
    pairs = image_pairs(sites, fine, np.eye(3, dtype=int)[None], np.zeros((1, 3)), ops, 10.0)
    assert pairs is not None


def test_relax_prediction_falls_back_to_the_cluster(monkeypatch, embedded_dir):
    from crystalflow.data.pipeline import BuildSettings, select
    from crystalflow.evaluation import relaxation
    from crystalflow.structure.cif import read_cif
    from crystalflow.structure.cluster import build_cluster

    crystal = read_cif(embedded_dir / "2100348-benzene.cif")
    cluster = build_cluster(crystal, select(crystal, BuildSettings())[0])

    def collapse(*args, **kwargs):
        raise CellError("the cell collapsed: lattice planes 0.1 Å apart (< 1.0 Å)")

    monkeypatch.setattr(relaxation, "relax_crystal", collapse)
    r = relaxation.relax_prediction(cluster.x, cluster.z, cluster.x, max_steps=20)
    assert r.mode == "cluster" and r.reason.startswith("crystal relaxation failed: the cell collapsed")


def test_a_time_limit_stops_the_relaxation(embedded_dir):
    import time

    from crystalflow.data.pipeline import BuildSettings, select
    from crystalflow.physics.relax import relax_crystal
    from crystalflow.structure.cif import read_cif
    from crystalflow.structure.crystal import SymmetricCrystal

    crystal = read_cif(embedded_dir / "1512116.cif")
    sc = SymmetricCrystal.from_crystal(crystal, select(crystal, BuildSettings())[0][0])
    stretched = sc.with_pose(lattice=sc.lattice * 1.3)  # far from the minimum: many steps to go
    t0 = time.perf_counter()
    res = relax_crystal(stretched, max_seconds=0.0)
    assert not res.converged and res.steps == 0
    assert time.perf_counter() - t0 < 20.0
    assert np.isfinite(res.energy_after)
