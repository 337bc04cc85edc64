"""The search pipeline: candidates ranked by energy, all valid, duplicates merged, deterministic, bad input refused."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from toys import MOL_A, Z_A

from crystalflow.common.vocabulary import CHARGE_MODELS, DEFAULT_CHARGE_MODEL
from crystalflow.physics.energy import EnergySettings, crystal_energy
from crystalflow.physics.forcefield import assign
from crystalflow.search.pipeline import (
    Deduplicator,
    SearchError,
    deduplicate,
    packing_coefficient,
    refine_result,
    search_crystals,
    shell_distances,
)
from crystalflow.search.refine import load_refiner
from crystalflow.structure.contacts import is_valid
from crystalflow.structure.crystal import SymmetricCrystal
from crystalflow.structure.molecule_input import read_molecule

torch.set_num_threads(1)
FAST = {"max_steps": 15, "progress": False, "energy_settings": EnergySettings(cutoff=7.0, taper=1.0)}


@pytest.fixture(scope="module")
def result():
    return search_crystals(MOL_A, Z_A, 4, space_groups=["P-1", "P21/c"], rng=3, batch_size=2, **FAST)


def test_ranked_by_energy_and_valid(result) -> None:
    c = result.candidates
    assert len(c) >= 2 and result.n_generated == 4
    assert len(c) + result.n_invalid + result.n_duplicates == result.n_relaxed
    energies = [x.energy for x in c]
    assert energies == sorted(energies) and [x.rank for x in c] == list(range(1, len(c) + 1))
    for x in c:
        assert is_valid(x.crystal.cluster(), Z_A)
        assert np.isfinite(x.energy) and x.energy <= x.energy_unrelaxed + 1e-6
        assert x.density == pytest.approx(x.crystal.density())
        assert x.packing == pytest.approx(packing_coefficient(x.crystal))
        assert x.generated_in in ("P-1", "P21/c") and x.space_group[0] >= 2
    assert set(result.per_group) <= {"P-1", "P21/c"} and sum(result.per_group.values()) == 4


def test_deterministic_for_a_seed(result) -> None:
    again = search_crystals(MOL_A, Z_A, 4, space_groups=["P-1", "P21/c"], rng=3, batch_size=2, **FAST)
    assert [c.energy for c in again.candidates] == [c.energy for c in result.candidates]
    for a, b in zip(again.candidates, result.candidates):
        assert np.array_equal(a.crystal.lattice, b.crystal.lattice) and a.index == b.index


def test_workers_give_the_same_result(result) -> None:
    parallel = search_crystals(MOL_A, Z_A, 4, space_groups=["P-1", "P21/c"], rng=3, batch_size=2, workers=2, **FAST)
    assert [c.energy for c in parallel.candidates] == [c.energy for c in result.candidates]
    assert [c.index for c in parallel.candidates] == [c.index for c in result.candidates]
    assert parallel.per_group == result.per_group


def test_candidates_record_when_and_how_they_were_found(result) -> None:
    times = [c.seconds for c in result.found]
    assert len(result.found) == result.n_relaxed - result.n_invalid and times == sorted(times)
    assert 0 < times[-1] <= result.seconds
    assert {c.origin for c in result.candidates} == {"search"}


def test_refine_result_adds_ranked_refined_candidates(result) -> None:
    model = load_refiner()
    refined = refine_result(result, model, top=2)
    assert refined.n_refined == min(2, len(result.candidates))
    assert 0 <= refined.n_refined_kept <= refined.n_refined
    energies = [c.energy for c in refined.candidates]
    assert energies == sorted(energies) and [c.rank for c in refined.candidates] == list(range(1, len(energies) + 1))
    assert sum(c.origin == "refined" for c in refined.candidates) == refined.n_refined_kept
    for c in refined.candidates:
        assert is_valid(c.crystal.cluster(), Z_A)
    assert len(result.candidates) <= len(refined.candidates) + refined.n_duplicates
    # a replay cut before anything was found has nothing to refine
    early = refine_result(result, model, until=0.0)
    assert early.candidates == [] and early.n_refined == 0 and early.seconds == 0.0


def test_shell_distances_of_a_cubic_lattice() -> None:
    # one molecule per cubic cell of edge 5 Å: 6 neighbours at 5 Å, then 12 at 5·√2 Å (hand-computed)
    sc = SymmetricCrystal(5.0 * np.eye(3), np.eye(3, dtype=int)[None], np.zeros((1, 3)), MOL_A, Z_A)
    assert np.allclose(shell_distances(sc), [5.0] * 6 + [5.0 * np.sqrt(2.0)] * 6)
    assert np.allclose(shell_distances(sc, 8, cluster=sc.cluster()), [5.0] * 6 + [5.0 * np.sqrt(2.0)] * 2)


def test_deduplication_removes_a_duplicate(result) -> None:
    best, other = result.candidates[0], result.candidates[-1]
    # the same crystal, its molecule moved by a lattice vector (the same structure), energy a hair higher
    moved = best.crystal.with_pose(molecule=best.crystal.molecule + best.crystal.lattice[0])
    copy = dataclasses.replace(best, crystal=moved, energy=best.energy + 0.01, index=99, duplicates=0)
    # a different structure made to tie in energy and density is compared by RMSD_15 and kept
    tie = dataclasses.replace(other, energy=best.energy + 0.02, density=best.density, duplicates=0)
    kept, removed = deduplicate([dataclasses.replace(best, duplicates=0), copy, tie])
    assert removed == 1 and len(kept) == 2
    assert kept[0].index == best.index and kept[0].duplicates == 1


def test_deduplicator_keeps_the_lowest_copy_whatever_the_order(result) -> None:
    best = result.candidates[0]
    moved = best.crystal.with_pose(molecule=best.crystal.molecule + best.crystal.lattice[1])
    high = dataclasses.replace(best, crystal=moved, energy=best.energy + 0.3, index=98, duplicates=2)
    dedup = Deduplicator()
    assert dedup.add(high) is True  # the higher copy first: kept until the lower one comes
    assert dedup.add(dataclasses.replace(best, duplicates=0)) is False
    assert [c.index for c in dedup.kept] == [best.index] and dedup.kept[0].energy == best.energy
    assert dedup.kept[0].duplicates == 3 and dedup.removed == 1  # the copy and the two it stood for
    for c in result.candidates[1:]:  # distinct structures stay distinct, sorted by energy
        assert dedup.add(dataclasses.replace(c, duplicates=0)) is True
    assert [c.index for c in dedup.kept] == [c.index for c in result.candidates]


def test_charge_model_is_the_one_the_candidates_are_relaxed_with() -> None:
    mol = read_molecule("NC=O")  # formamide: MMFF94 and Gasteiger charges differ
    runs = {m: search_crystals(mol.x, mol.z, 2, space_groups="P-1", rng=3, batch_size=2, charge_model=m, **FAST)
            for m in CHARGE_MODELS}
    for model, r in runs.items():
        ff = assign(mol.z, mol.x, charge_model=model)
        assert r.charge_model == model and not ff.note
        for c in r.candidates:
            assert c.energy == pytest.approx(crystal_energy(c.crystal, ff, FAST["energy_settings"]), abs=1e-6)
    a, b = (runs[m].candidates[0].energy for m in CHARGE_MODELS)
    assert abs(a - b) > 1.0
    with pytest.raises(SearchError, match="unknown charge model"):
        search_crystals(MOL_A, Z_A, 2, charge_model="esp", **FAST)


def test_a_centrosymmetric_molecule_is_searched_on_inversion_centres_too() -> None:
    from crystalflow.search.pipeline import _schedule
    from crystalflow.search.spacegroups import space_group

    groups = (space_group("P21/c"), space_group("P212121"))
    plan = _schedule(groups, 64, 4, np.random.default_rng(0), inversion_fraction=0.5)
    for g in groups:
        sites = [site for group, _, _, site in plan if group is g]
        expected = ["general", "inversion"] * len(sites) if g.symbol == "P21/c" else ["general"] * len(sites)
        assert sites == expected[:len(sites)] and len(sites) >= 2
    assert {site for *_, site in _schedule(groups, 64, 4, np.random.default_rng(0))} == {"general"}
    dce = np.array([[0.67, 0.0, 0.0], [-0.67, 0.0, 0.0], [1.40, 1.55, 0.0], [-1.40, -1.55, 0.0],
                    [1.23, -0.93, 0.0], [-1.23, 0.93, 0.0]])
    z = np.array([6, 6, 17, 17, 1, 1])
    r = search_crystals(dce, z, 8, space_groups="P21/c", rng=0, batch_size=2, inversion_fraction=0.5, **FAST)
    half = [c for c in r.candidates if c.crystal.n_molecules == 2]
    assert half and len(half) < len(r.candidates)  # both packings searched
    for c in half:
        assert len(c.crystal.site_ops()) == 2 and is_valid(c.crystal.cluster(), z)
    none = search_crystals(dce, z, 8, space_groups="P21/c", rng=0, batch_size=2, **FAST)  # the default: off
    assert all(c.crystal.n_molecules == 4 for c in none.candidates)


def test_time_budget_stops_the_search() -> None:
    r = search_crystals(MOL_A, Z_A, 4, space_groups="P-1", rng=0, time_budget_s=1e-9, **FAST)
    assert r.timed_out and r.candidates == [] and r.n_generated == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"molecule": MOL_A[:4]}, r"shape \[5, 3\]"),
    ({"z": np.array([6, 6, 8, 7, 0])}, "not an element"),
    ({"n_candidates": 0}, "positive integer"),
    ({"space_groups": ["P6/mmm"]}, "not one of the common"),
    ({"space_groups": []}, "no space group"),
    ({"time_budget_s": -1.0}, "time_budget_s"),
    ({"workers": 0}, "workers"),
    ({"inversion_fraction": 1.5}, "inversion_fraction"),
])
def test_bad_input_is_one_line_value_error(kwargs, message) -> None:
    args = dict(molecule=MOL_A, z=Z_A, n_candidates=2, **FAST) | kwargs
    with pytest.raises(SearchError, match=message) as info:
        search_crystals(**args)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
