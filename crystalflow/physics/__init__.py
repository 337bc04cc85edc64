"""Rigid-molecule intermolecular energy and relaxation in torch: W99 exp-6 + damped Coulomb, finite
clusters and Z' = 1 crystals (:mod:`.forcefield`, :mod:`.energy`, :mod:`.relax`)."""
