"""Tests of crystalflow.data.noise: rigid per-molecule noise, presets and the separation step."""
from __future__ import annotations

import numpy as np
import pytest

from crystalflow.data.noise import NOISE_PRESETS, apply_noise, noise_model, random_rotations
from crystalflow.data.pipeline import BuildSettings, process_cif, select
from crystalflow.structure.cif import read_cif
from crystalflow.structure.cluster import build_cluster
from crystalflow.structure.geometry import kabsch


def noised(embedded_dir, inversion: bool, seed: int = 0):
    records = process_cif(str(embedded_dir / "2006609.cif"), "k",
                          BuildSettings(noise=noise_model("solution", inversion), seed=seed))
    return records[0]


@pytest.mark.parametrize("inversion", [False, True])
def test_noise_is_rigid_per_molecule(embedded_dir, inversion):
    rec = noised(embedded_dir, inversion)
    dets = []
    for xs, xw in zip(rec.x_s, rec.x_w):
        r, _, rmsd = kabsch(xs, xw, allow_reflection=True)
        assert rmsd < 1e-3  # rigid (float32 storage)
        dets.append(np.linalg.det(r))
    dets = np.round(dets)
    if inversion:
        assert set(dets) == {-1.0, 1.0}  # 17 coin flips: both outcomes occur for this seed
    else:
        assert set(dets) == {1.0}


def test_noise_destroys_orientation_and_is_seeded(embedded_dir):
    a, b = noised(embedded_dir, False, seed=0), noised(embedded_dir, False, seed=0)
    assert np.array_equal(a.x_w, b.x_w)
    c = noised(embedded_dir, False, seed=1)
    assert not np.allclose(a.x_w, c.x_w)
    rng = np.random.default_rng(0)
    rots = random_rotations(20000, rng)
    assert np.allclose(rots.mean(0), 0, atol=0.02)  # Haar-uniform: mean rotation matrix is 0
    assert np.allclose(np.linalg.det(rots), 1)


def test_noise_model_spread_and_displacement():
    x_s = np.zeros((3, 1, 3))
    x_s[1, 0, 0], x_s[2, 0, 0] = 3.0, -3.0
    z = np.array([6])
    model = NOISE_PRESETS["none"].__class__(rotation_deg=0.0, displacement=0.0, spread=2.0)
    x_w, maps, push = apply_noise(x_s, z, model, np.random.default_rng(0))
    assert np.allclose(x_w[:, 0, 0], [0.0, 6.0, -6.0])
    assert np.allclose(maps, np.eye(3)) and not push.any()  # nothing overlapped: nothing pushed


def test_melt_preset_keeps_orientations_to_about_30_degrees():
    """'melt': Gaussian turn angles of σ = 30° about random axes, so |angle| averages σ·√(2/π) ≈ 23.9°."""
    melt = noise_model("melt")
    assert (melt.rotation_deg, melt.displacement, melt.spread, melt.inversion) == (30.0, 1.0, 1.2, 0.0)
    rots = random_rotations(20000, np.random.default_rng(0), melt.rotation_deg)
    angles = np.degrees(np.arccos(np.clip((np.trace(rots, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert np.mean(angles) == pytest.approx(30.0 * np.sqrt(2 / np.pi), rel=0.02)
    assert np.allclose(np.linalg.det(rots), 1)


def test_separate_pushes_overlapping_molecules_apart_by_translation_only():
    """Two C–H molecules whose carbons sit 1.0 Å apart (overlap 2.4 Å) end with at most the noise's overlap;
    each moves rigidly (no turn), along the line between them, and by the same amount."""
    from crystalflow.data.noise import NOISE_MAX_OVERLAP, separate
    from crystalflow.structure.contacts import max_overlap

    z = np.array([6, 1])
    a = np.array([[0.0, 0.0, 0.0], [-1.09, 0.0, 0.0]])
    x = np.stack([a, a[::1] * [-1, 1, 1] + [1.0, 0.0, 0.0]])
    out, shift = separate(x, z)
    assert max_overlap(out, z) <= NOISE_MAX_OVERLAP
    assert np.allclose(out - shift[:, None, :], x)  # translations only
    assert np.allclose(shift[:, 1:], 0.0) and shift[0, 0] == pytest.approx(-shift[1, 0])
    assert 1.7 + 1.7 - (out[1, 0, 0] - out[0, 0, 0]) == pytest.approx(NOISE_MAX_OVERLAP - 0.05, abs=0.05)
    unchanged, none = separate(out, z)
    assert np.array_equal(unchanged, out) and not none.any()


@pytest.mark.parametrize("preset", sorted(NOISE_PRESETS))
def test_every_preset_draws_valid_inputs_with_their_orientations(embedded_dir, preset):
    """Without the push most draws interpenetrate; with it none does, the turn angles are exactly the drawn
    ones and the push is recorded."""
    from dataclasses import replace

    from crystalflow.structure.contacts import is_valid

    crystal = read_cif(str(embedded_dir / "2205750.cif"))
    mols, _, _ = select(crystal, BuildSettings())
    cluster = build_cluster(crystal, mols)
    model = noise_model(preset)
    for seed in range(3):
        raw = apply_noise(cluster.x, cluster.z, replace(model, max_overlap=None), np.random.default_rng(seed))
        draw = apply_noise(cluster.x, cluster.z, model, np.random.default_rng(seed))
        assert is_valid(draw.x_w, cluster.z)
        assert np.array_equal(draw.maps, raw.maps)
        assert np.allclose(draw.x_w - draw.push[:, None, :], raw.x_w)
        stats = draw.statistics()
        assert set(stats) == {"noise_angle", "noise_push", "noise_push_max"}
        if preset == "none":
            assert stats == {"noise_angle": 0.0, "noise_push": 0.0, "noise_push_max": 0.0}


def test_separate_ends_for_molecules_whose_atom_pushes_cancel(embedded_dir):
    """A real draw (this crystal, this file key, the default preset) in which two molecules interlock
    where their atom-atom pushes cancel and undo every expansion; pushes along their centres' line end it."""
    from dataclasses import replace

    from crystalflow.data.noise import NOISE_MAX_OVERLAP
    from crystalflow.data.pipeline import file_rng
    from crystalflow.structure.contacts import max_overlap

    settings = BuildSettings()
    crystal = read_cif(str(embedded_dir / "7103889_damaged_temp.cif"))
    cluster = build_cluster(crystal, select(crystal, settings)[0])
    key = "7_7103889_damaged_temp.cif"
    draw = apply_noise(cluster.x, cluster.z, settings.noise, file_rng(settings.seed, key))
    raw = apply_noise(cluster.x, cluster.z, replace(settings.noise, max_overlap=None), file_rng(settings.seed, key))
    assert max_overlap(draw.x_w, cluster.z) <= NOISE_MAX_OVERLAP
    assert np.allclose(draw.x_w - draw.push[:, None, :], raw.x_w)  # still translations only


def test_symmetric_noise_keeps_the_clusters_symmetry_and_turns_every_molecule_alike(embedded_dir):
    """'symmetric': molecule j of x_w is the image of x_w's central molecule under the same isometry that maps
    x_s's central molecule onto molecule j of x_s (the crystal's operators are kept), every molecule is turned
    from its x_s pose by the same angle, and without strain or displacement the centres do not move."""
    from dataclasses import replace

    from crystalflow.structure.contacts import max_overlap
    from crystalflow.structure.molecules import centre_of_mass

    crystal = read_cif(str(embedded_dir / "2006609.cif"))
    cluster = build_cluster(crystal, select(crystal, BuildSettings())[0])
    model = noise_model("symmetric")
    assert model.symmetric and (model.rotation_deg, model.displacement, model.strain) == (20.0, 0.3, 0.03)
    x_s, z = cluster.x, cluster.z
    for seed in range(3):
        draw = apply_noise(x_s, z, model, np.random.default_rng(seed))
        assert max_overlap(draw.x_w, z) <= model.max_overlap
        rel_s = x_s - x_s.mean(axis=1, keepdims=True)
        rel_w = draw.x_w - draw.x_w.mean(axis=1, keepdims=True)
        angles = []
        for j in range(len(x_s)):
            r_s, _, _ = kabsch(rel_s[0], rel_s[j], allow_reflection=True)
            r_w, _, rmsd = kabsch(rel_w[0], rel_w[j], allow_reflection=True)
            assert rmsd < 1e-6 and np.allclose(r_s, r_w, atol=1e-6)
            turn, _, _ = kabsch(rel_s[j], rel_w[j])
            angles.append(np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1))))
        assert np.ptp(angles) < 1e-4 and draw.statistics()["noise_angle"] == pytest.approx(angles[0], abs=1e-3)
    still = replace(model, displacement=0.0, strain=0.0, max_overlap=None)
    draw = apply_noise(x_s, z, still, np.random.default_rng(0))
    assert np.allclose(centre_of_mass(draw.x_w, z), centre_of_mass(x_s, z), atol=1e-9)
    assert not draw.push.any()


def test_expand_spreads_the_centres_uniformly_until_nothing_overlaps():
    """Two C atoms 2.0 Å apart (vdW overlap 1.4 Å): the second moves along the line, the first stays, and the
    expansion stops at the first factor 1.01^k that brings the overlap to ≤ 0.5 Å (distance ≥ 2.9 Å)."""
    from crystalflow.data.noise import EXPAND_STEP, expand

    x = np.array([[[0.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]]])
    out, shift = expand(x, np.array([6]), 0.5)
    k = int(np.ceil(np.log(2.9 / 2.0) / np.log(EXPAND_STEP)))
    assert out[1, 0, 0] == pytest.approx(2.0 * EXPAND_STEP**k)
    assert np.array_equal(out[0], x[0]) and np.allclose(shift[:, 1:], 0.0)
