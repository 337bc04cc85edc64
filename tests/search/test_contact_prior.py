"""The contact prior (crystalflow.search.contact_prior): log ratios of hand-made histograms, its score, its saved
form inside a ranker."""
from __future__ import annotations

import numpy as np
import pytest
from toys import MOL_A, Z_A

from crystalflow.search.contact_prior import (
    ContactPrior,
    ContactPriorError,
    contact_score,
    crystal_histogram,
    fit_contact_prior,
)
from crystalflow.structure.contacts import CONTACT_EDGES, CONTACT_PAIRS

SHAPE = (len(CONTACT_PAIRS), len(CONTACT_EDGES) - 1)


def _hist(cells: dict) -> np.ndarray:
    h = np.zeros(SHAPE)
    for (pair, b), n in cells.items():
        h[CONTACT_PAIRS.index(pair), b] = n
    return h


def test_same_distributions_give_zero_log_ratios() -> None:
    h = _hist({("Hd-O", 2): 3, ("C-C", 12): 10})
    prior = fit_contact_prior(np.stack([h, h]), [np.stack([h]), np.stack([h, h, h])])
    np.testing.assert_allclose(prior.log_ratio, 0.0, atol=1e-12)


def test_log_ratio_by_hand() -> None:
    exp = _hist({("Hd-O", 2): 40})          # experimental crystals: the donor H at 1.8-2.0 A from O
    dec = _hist({("Hd-O", 5): 40})          # the decoys: at 2.4-2.6 A
    prior = fit_contact_prior(exp[None], [dec[None]], pseudocount=20.0)
    row = CONTACT_PAIRS.index("Hd-O")
    # the pooled shares (experimental and decoy contacts each summing to 1) plus 1e-3 in every bin, per pair
    base = np.full(SHAPE[1], 1e-3)
    base[2] += 1.0
    base[5] += 1.0
    base /= base.sum()
    p_exp = (np.eye(SHAPE[1])[2] * 40 + 20 * base) / 60
    p_dec = (np.eye(SHAPE[1])[5] * 40 + 20 * base) / 60
    np.testing.assert_allclose(prior.log_ratio[row], np.log(p_exp) - np.log(p_dec))
    assert prior.log_ratio[row, 2] > 1.0 and prior.log_ratio[row, 5] < -1.0
    np.testing.assert_allclose(np.delete(prior.log_ratio, row, axis=0), 0.0, atol=1e-12)  # pairs never seen
    # score: counts times log ratios, per atom
    h = _hist({("Hd-O", 2): 2, ("Hd-O", 5): 1})
    assert prior.score(h, 4) == pytest.approx((2 * prior.log_ratio[row, 2] + prior.log_ratio[row, 5]) / 4)


def test_every_molecule_weighs_alike_among_the_decoys() -> None:
    exp = _hist({("C-C", 10): 10, ("C-C", 11): 10})
    many = np.stack([_hist({("C-C", 10): 10})] * 50)  # one molecule with 50 decoys, all in bin 10
    one = np.stack([_hist({("C-C", 11): 10})])        # another with one decoy in bin 11
    prior = fit_contact_prior(exp[None], [many, one])
    row = CONTACT_PAIRS.index("C-C")
    assert prior.log_ratio[row, 10] == pytest.approx(prior.log_ratio[row, 11], abs=1e-9)


def test_fit_refuses_empty_input_and_dict_round_trip() -> None:
    with pytest.raises(ContactPriorError):
        fit_contact_prior(np.zeros((1,) + SHAPE), [np.zeros((0,) + SHAPE)])
    prior = fit_contact_prior(_hist({("H-O", 8): 5})[None], [_hist({("H-O", 9): 5})[None]])
    back = ContactPrior.from_dict(prior.to_dict())
    np.testing.assert_array_equal(back.log_ratio, prior.log_ratio)
    bad = prior.to_dict() | {"pairs": ["C-C"]}
    with pytest.raises(ContactPriorError, match="classes"):
        ContactPrior.from_dict(bad)


def test_contact_score_of_crystals_matches_their_histograms() -> None:
    from crystalflow.search.generate import generate_crystals
    from crystalflow.search.spacegroups import space_group

    crystals = generate_crystals(MOL_A, Z_A, space_group("P-1"), 2, np.random.default_rng(0)).crystals
    rng = np.random.default_rng(1)
    prior = ContactPrior(rng.normal(size=SHAPE))
    s = contact_score(crystals, prior)
    assert s.shape == (2,)
    for c, v in zip(crystals, s):
        h = crystal_histogram(c)
        assert h.sum() > 0 and v == pytest.approx(float((h * prior.log_ratio).sum()) / len(Z_A))
    assert contact_score([], prior).shape == (0,)
