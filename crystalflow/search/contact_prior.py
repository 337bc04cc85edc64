"""A learned contact prior: how much the intermolecular contacts of a candidate look like those of relaxed
experimental crystals rather than like those of the search's other relaxed candidates.

The force field of the search puts other packings below the experimental one; what it misses shows in the
contacts. A :class:`ContactPrior` holds, for every class pair of atoms and distance bin of
:func:`crystalflow.structure.contacts.contact_histogram`, the log ratio of two distance distributions of that
pair: in experimental crystals relaxed with the search's force field (what a candidate that is the experimental
packing looks like) and in the searches' candidates that are not (weighted so that every molecule counts alike).
A candidate's score is the sum of the log ratios of its central molecule's contacts, per atom of the molecule:
positive when its contacts are at the distances of real crystals. :func:`fit_contact_prior` learns it from
training crystals and their searches (``bench/learned_ranking.py``); the ranker's feature ``contacts``
(:mod:`crystalflow.search.ranking`) is this score.

Each pair's distributions are smoothed towards the pair's pooled distribution (``pseudocount`` contacts), so
a pair seen rarely gives log ratios near 0.

Example::

    from crystalflow.search.contact_prior import contact_score, fit_contact_prior

    prior = fit_contact_prior(crystal_histograms, decoy_histograms)   # [C, P, B] and per molecule [K, P, B]
    s = contact_score(candidate.crystal, prior)                       # per-atom log-likelihood ratio
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crystalflow.structure.contacts import CONTACT_EDGES, CONTACT_PAIRS, contact_histogram
from crystalflow.structure.molecules import molecule_bonds

#: contacts by which each pair's distributions are smoothed towards its pooled distribution
PSEUDOCOUNT = 20.0


class ContactPriorError(ValueError):
    """A contact prior that cannot be fitted or read."""


@dataclass
class ContactPrior:
    """Log ratios [len(CONTACT_PAIRS), len(edges) − 1] of experimental over decoy contact distributions."""

    log_ratio: np.ndarray
    edges: np.ndarray = field(default_factory=CONTACT_EDGES.copy)
    info: dict | None = None  #: how it was fitted (free form)

    def score(self, histograms: np.ndarray, atoms: int) -> np.ndarray:
        """Scores of contact histograms ``[..., P, B]`` of a molecule of ``atoms`` atoms: Σ counts·log ratio / atoms."""
        h = np.asarray(histograms, dtype=np.float64)
        if h.shape[-2:] != self.log_ratio.shape:
            raise ContactPriorError(f"histograms must end in {self.log_ratio.shape}, got {h.shape}")
        return np.tensordot(h, self.log_ratio, axes=([-2, -1], [0, 1])) / max(int(atoms), 1)

    def to_dict(self) -> dict:
        return {"pairs": list(CONTACT_PAIRS), "edges": self.edges, "log_ratio": self.log_ratio,
                "info": self.info or {}}

    @classmethod
    def from_dict(cls, d: dict) -> "ContactPrior":
        try:
            prior = cls(np.asarray(d["log_ratio"], dtype=np.float64), np.asarray(d["edges"], dtype=np.float64),
                        d.get("info"))
            pairs = tuple(d["pairs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ContactPriorError(f"not a contact prior: {exc}") from None
        if pairs != CONTACT_PAIRS or not np.allclose(prior.edges, CONTACT_EDGES) or \
                prior.log_ratio.shape != (len(CONTACT_PAIRS), len(CONTACT_EDGES) - 1):
            raise ContactPriorError("contact prior of other atom classes or distance bins than "
                                    "crystalflow.structure.contacts'")
        return prior


def crystal_histogram(crystal, bonds: np.ndarray | None = None) -> np.ndarray:
    """[P, B] contacts of a :class:`~crystalflow.structure.crystal.SymmetricCrystal`'s central molecule with its
    16 neighbours (its 17-molecule cluster); ``bonds``: its molecule's bond graph (found when None)."""
    if bonds is None:
        bonds = molecule_bonds(crystal.molecule, crystal.z)
    return contact_histogram(crystal.cluster(), crystal.z, bonds)


def contact_score(crystals, prior: ContactPrior) -> np.ndarray:
    """[K] scores (:meth:`ContactPrior.score`) of crystals of one molecule."""
    crystals = list(crystals)
    if not crystals:
        return np.zeros(0)
    bonds = molecule_bonds(crystals[0].molecule, crystals[0].z)  # one molecule: one bond graph
    return prior.score(np.stack([crystal_histogram(c, bonds) for c in crystals]), len(crystals[0].z))


def fit_contact_prior(crystals: np.ndarray, decoys: list[np.ndarray], pseudocount: float = PSEUDOCOUNT,
                      info: dict | None = None) -> ContactPrior:
    """The prior of experimental contact histograms ``crystals`` [C, P, B] (one per relaxed experimental
    crystal) against ``decoys``: per molecule, the [K, P, B] histograms of its non-experimental candidates
    (averaged within the molecule, so every molecule weighs one crystal's worth)."""
    exp = np.asarray(crystals, dtype=np.float64).reshape(-1, len(CONTACT_PAIRS), len(CONTACT_EDGES) - 1).sum(axis=0)
    dec = [np.asarray(d, dtype=np.float64) for d in decoys if len(d)]
    if not dec or not exp.any():
        raise ContactPriorError("a contact prior needs experimental crystals and decoy candidates")
    ref = np.sum([d.mean(axis=0) for d in dec], axis=0)
    pooled = exp / exp.sum() + ref / ref.sum()  # [P, B], the two kinds weighed alike
    base = (pooled + 1e-3) / (pooled + 1e-3).sum(axis=1, keepdims=True)

    def smoothed(n):
        return (n + pseudocount * base) / (n.sum(axis=1, keepdims=True) + pseudocount)

    ratio = np.log(smoothed(exp)) - np.log(smoothed(ref))
    return ContactPrior(ratio, CONTACT_EDGES.copy(), {**(info or {}), "crystals": int(len(crystals)),
                                                      "decoy_molecules": len(dec), "pseudocount": pseudocount})


__all__ = ["ContactPrior", "ContactPriorError", "PSEUDOCOUNT", "contact_score", "crystal_histogram",
           "fit_contact_prior"]
