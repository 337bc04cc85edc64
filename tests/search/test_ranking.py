"""Learned ranking: hand-computed features, a fit that recovers a separating feature, the saved form, the
shipped ranker, model_shift's invariance and model_recovery."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from toys import MOL_A, Z_A

from crystalflow.search.generate import generate_crystals
from crystalflow.search.pipeline import Candidate, packing_coefficient
from crystalflow.search.ranking import (
    FEATURES,
    RARE_GROUP_PERCENT,
    Ranker,
    RankerError,
    candidate_features,
    fit_ranker,
    load_ranker,
    model_recovery,
    model_shift,
    rank_candidates,
    top_k_solved,
)
from crystalflow.search.refine import load_refiner
from crystalflow.search.spacegroups import CSD_FREQUENCY, space_group

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def crystals():
    return generate_crystals(MOL_A, Z_A, space_group("P21/c"), 3, np.random.default_rng(1)).crystals


def _candidates(crystals, energies, duplicates, groups):
    return [Candidate(crystal=c, energy=e, density=c.density(), packing=packing_coefficient(c), space_group=g,
                      generated_in="P21/c", index=k, energy_unrelaxed=e, steps=1, converged=True, max_overlap=0.0,
                      duplicates=d)
            for k, (c, e, d, g) in enumerate(zip(crystals, energies, duplicates, groups))]


def test_features_by_hand(crystals) -> None:
    cands = _candidates(crystals, [-80.0, -79.0, -70.0], [3, 0, 0], [(14, "P21/c"), (2, "P-1"), (230, "Ia-3d")])
    x = candidate_features(cands, features=("energy_gap", "basin", "space_group", "packing"))
    np.testing.assert_allclose(x[:, 0], [0.0, math.log(2.0), math.log(11.0)])
    np.testing.assert_allclose(x[:, 1], np.log([4 / 6, 1 / 6, 1 / 6]))
    np.testing.assert_allclose(x[:, 2], np.log([CSD_FREQUENCY[14], CSD_FREQUENCY[2], RARE_GROUP_PERCENT]))
    np.testing.assert_allclose(x[:, 3], [c.packing for c in cands])
    # energies given explicitly replace the lattice energies (a conformer's strain added)
    x2 = candidate_features(cands, energies=[-80.0, -82.0, -70.0], features=("energy_gap",))
    np.testing.assert_allclose(x2[:, 0], np.log1p([2.0, 0.0, 12.0]))


def test_coulomb_share_is_zero_without_charges_and_bounded(crystals) -> None:
    from crystalflow.physics.energy import crystal_energy

    e = crystal_energy(list(crystals))
    cands = _candidates(crystals, list(e), [0, 0, 0], [(14, "P21/c")] * 3)
    x = candidate_features(cands, features=("coulomb",))[:, 0]
    assert np.all(np.isfinite(x)) and np.all(np.abs(x) < 5)


def test_coulomb_share_uses_the_charges_the_candidates_were_relaxed_with(crystals, monkeypatch) -> None:
    from crystalflow.physics.energy import EnergySettings, crystal_energy
    from crystalflow.physics.forcefield import assign
    from crystalflow.search import ranking

    ff = assign(crystals[0].z, crystals[0].molecule, charge_model="gasteiger")
    e = np.asarray(crystal_energy(list(crystals), ff))
    neutral = np.asarray(crystal_energy(list(crystals), ff, EnergySettings(charge_scale=0.0)))
    cands = _candidates(crystals, list(e), [0, 0, 0], [(14, "P21/c")] * 3)
    x = candidate_features(cands, features=("coulomb",), charge_model="gasteiger")[:, 0]
    np.testing.assert_allclose(x, (e - neutral) / np.abs(e))
    asked = []
    monkeypatch.setattr(ranking, "assign", lambda z, m, **kw: asked.append(kw) or assign(z, m, **kw))
    candidate_features(cands, features=("coulomb",), charge_model="mmff")
    assert asked == [{"charge_model": "mmff"}]


def test_fit_recovers_the_separating_feature() -> None:
    rng = np.random.default_rng(0)
    pools = []
    for _ in range(6):  # feature 0 separates the solving candidate; feature 1 is noise
        x = rng.normal(size=(12, 2))
        y = np.zeros(12, bool)
        y[3] = True
        x[3, 0] = x[:, 0].max() + 1.0
        pools.append((x, y))
    ranker = fit_ranker(pools, features=("packing", "coulomb"), l2=0.01)
    assert ranker.weights[0] > 0 and abs(ranker.weights[1]) < ranker.weights[0]
    for x, y in pools:
        assert top_k_solved(ranker.score(x), y, 1)
    with pytest.raises(RankerError, match="nothing to learn"):
        fit_ranker([(np.zeros((3, 2)), np.zeros(3, bool))], features=("packing", "coulomb"))


def test_top_k_ties_keep_the_energy_order() -> None:
    solved = np.array([False, True, False])
    assert not top_k_solved(np.zeros(3), solved, 1)  # all tied: the first (lowest energy) stands first
    assert top_k_solved(np.zeros(3), solved, 2)
    assert top_k_solved(np.array([0.0, 1.0, 0.0]), solved, 1)
    assert not top_k_solved(np.zeros(0), np.zeros(0, bool), 1)


def test_save_load_round_trip_and_bad_files(tmp_path) -> None:
    r = Ranker(("energy_gap", "basin"), np.array([-1.0, 0.5]), np.array([1.0, -2.0]), np.array([2.0, 1.0]), {"a": 1})
    path = tmp_path / "r.json"
    r.save(str(path))
    back = Ranker.load(str(path))
    x = np.array([[3.0, -1.0], [1.0, -3.0]])
    np.testing.assert_allclose(back.score(x), [(-1.0 * 1.0) + 0.5 * 1.0, 0.0 + 0.5 * -1.0])
    assert back.features == r.features and back.info == {"a": 1}
    d = json.loads(path.read_text())
    d["weights"] = [1.0]
    path.write_text(json.dumps(d))
    with pytest.raises(RankerError, match="one weight per feature"):
        Ranker.load(str(path))
    path.write_text("{")
    with pytest.raises(RankerError, match="cannot read"):
        Ranker.load(str(path))
    with pytest.raises(RankerError, match="unknown features"):
        candidate_features([], features=("colour",))


def test_rank_candidates_orders_by_score_and_renumbers(crystals) -> None:
    cands = _candidates(crystals, [-80.0, -79.5, -70.0], [0, 9, 0], [(14, "P21/c")] * 3)
    basin_lover = Ranker(("basin",), np.array([1.0]), np.zeros(1), np.ones(1))
    ranked = rank_candidates(cands, basin_lover)
    assert [c.index for c in ranked] == [1, 0, 2] and [c.rank for c in ranked] == [1, 2, 3]
    assert [c.rank for c in cands] == [0, 0, 0]  # copies: the inputs are left as they were
    top2 = rank_candidates(cands[::-1], basin_lover, top=2)  # only the first two are reordered
    assert [c.index for c in top2] == [1, 2, 0]


def test_model_shift_is_frame_invariant(crystals) -> None:
    model = load_refiner()
    c = crystals[0]
    s = model_shift([c], model)
    assert s.shape == (1,) and 0.0 <= s[0] < 5.0
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    turned = dataclasses.replace(c, lattice=c.lattice @ q.T, molecule=c.molecule @ q.T)
    np.testing.assert_allclose(model_shift([turned], model), s, atol=2e-3)


def test_the_shipped_ranker_loads_and_scores(crystals) -> None:
    ranker = load_ranker()
    assert set(ranker.features) <= set(FEATURES) and np.all(np.isfinite(ranker.weights))
    cands = _candidates(crystals, [-80.0, -79.0, -70.0], [1, 0, 0], [(14, "P21/c")] * 3)
    ranked = rank_candidates(cands, ranker)
    assert sorted(c.index for c in ranked) == [0, 1, 2]


def test_model_recovery_is_deterministic_and_turns_a_melted_crystal_back(embedded_dir) -> None:
    from crystalflow.data.pipeline import BuildSettings, select
    from crystalflow.data.noise import apply_noise, noise_model
    from crystalflow.evaluation.metrics import orientation_error
    from crystalflow.search.ranking import RECOVERY_DRAWS, RECOVERY_NOISE
    from crystalflow.structure.cif import read_cif
    from crystalflow.structure.crystal import SymmetricCrystal

    crystal = read_cif(str(embedded_dir / "2100348-benzene.cif"))
    molecules, _, _ = select(crystal, BuildSettings())
    sc = SymmetricCrystal.from_crystal(crystal, molecules[0])
    model = load_refiner()
    r = model_recovery([sc], model, seed=3)
    assert r.shape == (1,) and np.array_equal(r, model_recovery([sc], model, seed=3))
    # the melted inputs' own error (the same draws): the model brings the molecules most of the way back
    rng, cluster = np.random.default_rng([3, 0]), sc.cluster()
    before = np.mean([orientation_error(apply_noise(cluster, sc.z, noise_model(RECOVERY_NOISE), rng).x_w, cluster, sc.z)
                      for _ in range(RECOVERY_DRAWS)])
    assert before > 10.0 and 0.0 <= r[0] < 0.75 * before
    with pytest.raises(RankerError, match="flow model"):
        candidate_features(_candidates([sc], [-50.0], [0], [(61, "Pbca")]), features=("model_recovery",))


def test_a_ranker_with_contacts_saves_its_prior(crystals, tmp_path) -> None:
    from crystalflow.search.contact_prior import ContactPrior, contact_score
    from crystalflow.structure.contacts import CONTACT_EDGES, CONTACT_PAIRS

    prior = ContactPrior(np.random.default_rng(0).normal(size=(len(CONTACT_PAIRS), len(CONTACT_EDGES) - 1)))
    cands = _candidates(crystals, [-80.0, -79.0, -70.0], [0, 0, 0], [(14, "P21/c")] * 3)
    with pytest.raises(RankerError, match="contact prior"):
        candidate_features(cands, features=("contacts",))
    x = candidate_features(cands, features=("energy_gap", "contacts"), prior=prior)
    np.testing.assert_allclose(x[:, 1], contact_score(crystals, prior))
    ranker = Ranker(("energy_gap", "contacts"), np.array([-1.0, 2.0]), np.zeros(2), np.ones(2), {}, prior)
    ranker.save(str(tmp_path / "r.json"))
    back = Ranker.load(str(tmp_path / "r.json"))
    np.testing.assert_array_equal(back.prior.log_ratio, prior.log_ratio)
    assert [c.index for c in rank_candidates(cands, back)] == [c.index for c in rank_candidates(cands, ranker)]
    d = json.loads((tmp_path / "r.json").read_text())
    del d["contact_prior"]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(RankerError, match="no contact prior"):
        Ranker.load(str(tmp_path / "bad.json"))
