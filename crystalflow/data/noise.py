"""Noise: the weakly-correlated input x_w made from a crystal cluster x_s by per-molecule rigid motions.

Each molecule is rotated about its centre of mass, optionally mirrored through it (inversion), its
centre spread away from the cluster centre by a factor and displaced by Gaussian noise. Molecules stay
rigid, so the model must recover packing (positions and orientations), not conformations.

With ``NoiseModel.symmetric`` (the ``symmetric`` preset) one error is drawn for the whole crystal instead:
the central molecule is turned and displaced, every other molecule carries the image of that error under
the isometry that maps the central molecule onto it in x_s (its symmetry operator, lattice translation
included), and the centres are strained by one homogeneous strain. The molecules then share their error as
the molecules of a searched crystal do (one asymmetric molecule, every other one its image), so no
molecule's neighbours hold its correct orientation (:func:`symmetric_noise`).

A liquid has no interpenetrating molecules, so the draw is then made physically possible: molecules
whose heavy atoms overlap by more than ``NoiseModel.max_overlap`` (0.5 Å, under the validity threshold
:data:`crystalflow.structure.contacts.VALIDITY_OVERLAP` of 0.7 Å) are pushed apart by translations only
(:func:`separate`), so every orientation stays exactly as drawn and only the centres move, by the
push recorded in :class:`NoiseDraw`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numpy as np

from crystalflow.common.vocabulary import DEFAULT_NOISE_PRESET
from crystalflow.structure.contacts import ContactAtoms
from crystalflow.structure.contacts import max_overlap as largest_overlap
from crystalflow.structure.geometry import kabsch
from crystalflow.structure.molecules import centre_of_mass

#: largest heavy-atom vdW overlap (Å) the noise leaves between molecules (validity needs < 0.7 Å)
NOISE_MAX_OVERLAP = 0.5
#: extra distance (Å) a push adds beyond the overlap it removes, so that separation converges
PUSH_MARGIN = 0.05
#: push rounds before the whole arrangement of centres is expanded a little (breaks a deadlock)
ROUNDS_PER_EXPANSION = 40
#: factor by which the centres' distances from their mean grow at each expansion
EXPANSION = 1.03
#: push rounds after which molecules that still overlap move apart along the line of their centres
#: instead of along their atom-atom directions: interlocked molecules (one threading a ring of the
#: other) can sit where the atom-atom pushes cancel, and there every expansion was pushed back
CENTRE_PUSH_AFTER = 400
#: rounds after which :func:`separate` gives up (never reached on real crystals)
MAX_ROUNDS = 2000
#: factor by which :func:`expand` grows the centres' distances from the central molecule per step
EXPAND_STEP = 1.01


@dataclass(frozen=True)
class NoiseModel:
    """Parameters of the per-molecule rigid noise."""

    rotation_deg: float | None = None  #: std of the rotation angle (deg); None = uniform random rotation
    displacement: float = 1.0  #: std (Å) of the Gaussian displacement of each centre, per axis
    spread: float = 1.0  #: centres are moved to c0 + spread * (c - c0), c0 = cluster centre
    inversion: float = 0.0  #: probability of mirroring a molecule through its centre
    #: push molecules apart until no heavy-atom vdW overlap exceeds this (Å); None keeps overlaps
    max_overlap: float | None = NOISE_MAX_OVERLAP
    #: one error for the whole cluster, carried by every molecule's symmetry image (:func:`symmetric_noise`)
    symmetric: bool = False
    #: std of the entries of the symmetric strain applied to the centres (symmetric noise only)
    strain: float = 0.0

    def to_dict(self) -> dict:
        """Plain dict (for summary.json)."""
        return asdict(self)


#: named presets; ``solution`` (the default) destroys orientations and dilutes the cluster; ``melt`` keeps
#: orientations to about 30° (weakly correlated), at the density of ``liquid``; ``symmetric`` turns the
#: asymmetric molecule by about 20° (every image with it), moves it 0.3 Å and strains the cell by 3 %, the
#: errors of a searched crystal near the experimental one
NOISE_PRESETS: dict[str, NoiseModel] = {
    "none": NoiseModel(rotation_deg=0.0, displacement=0.0, spread=1.0),
    "thermal": NoiseModel(rotation_deg=10.0, displacement=0.3, spread=1.0),
    "melt": NoiseModel(rotation_deg=30.0, displacement=1.0, spread=1.2),
    "liquid": NoiseModel(rotation_deg=None, displacement=1.0, spread=1.2),
    "solution": NoiseModel(rotation_deg=None, displacement=1.5, spread=1.6),
    "symmetric": NoiseModel(rotation_deg=20.0, displacement=0.3, spread=1.0, symmetric=True, strain=0.03),
}


def noise_model(preset: str = DEFAULT_NOISE_PRESET, inversion: bool = False) -> NoiseModel:
    """The named preset, with inversion probability 0.5 when ``inversion`` is set."""
    if preset not in NOISE_PRESETS:
        raise ValueError(f"unknown noise preset {preset!r}; choose from {', '.join(NOISE_PRESETS)}")
    return replace(NOISE_PRESETS[preset], inversion=0.5 if inversion else 0.0)


def random_rotations(n: int, rng: np.random.Generator, angle_std_deg: float | None = None) -> np.ndarray:
    """[n, 3, 3] rotation matrices: Haar-uniform, or about a random axis with Gaussian angle (deg)."""
    if angle_std_deg is None:
        q = rng.standard_normal((n, 4))
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        w, x, y, z = q.T
    else:
        axis = rng.standard_normal((n, 3))
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        half = np.deg2rad(rng.standard_normal(n) * angle_std_deg) / 2
        w, (x, y, z) = np.cos(half), (axis * np.sin(half)[:, None]).T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


class NoiseDraw(NamedTuple):
    """One noised cluster and how it was made."""

    x_w: np.ndarray  #: [M, n, 3] the noised cluster
    maps: np.ndarray  #: [M, 3, 3] per-molecule linear maps (det +1 rotation, −1 rotation with inversion)
    push: np.ndarray  #: [M, 3] translation (Å) added by :func:`separate` (zeros when nothing overlapped)

    def statistics(self) -> dict[str, float]:
        """Mean rotation angle (deg) and RMS push (Å) over the molecules, and the largest push."""
        proper = self.maps * np.sign(np.linalg.det(self.maps))[:, None, None]
        cos = np.clip((np.trace(proper, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
        push = np.linalg.norm(self.push, axis=1)
        return {"noise_angle": round(float(np.degrees(np.arccos(cos)).mean()), 3),
                "noise_push": round(float(np.sqrt(np.mean(push**2))), 4),
                "noise_push_max": round(float(push.max(initial=0.0)), 4)}


def separate(x: np.ndarray, z: np.ndarray, max_overlap: float = NOISE_MAX_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
    """Translate the molecules of ``x [M, n, 3]`` until no heavy-atom vdW overlap exceeds ``max_overlap``.

    Each round, every overlapping pair of atoms asks for its two molecules to move apart along the
    atom-atom direction by half of (overlap − ``max_overlap`` + :data:`PUSH_MARGIN`); a molecule moves
    by the mean of its requests. Every :data:`ROUNDS_PER_EXPANSION` rounds the centres are also spread
    by :data:`EXPANSION` about their mean, and after :data:`CENTRE_PUSH_AFTER` rounds the pairs that
    still overlap move apart along the line of their centres, which ends any deadlock. Molecules move
    rigidly and keep their orientations. Returns the separated cluster and the per-molecule
    translations ``[M, 3]``.
    """
    c = np.asarray(x, dtype=np.float64)
    atoms = ContactAtoms(c, z)
    m = c.shape[0]
    shift = np.zeros((m, 3))
    centres = c.mean(axis=1)
    for rounds in range(MAX_ROUNDS):
        points = atoms.points + shift[atoms.molecule]
        i, j, d, overlap = atoms.overlaps(points, above=max_overlap)
        if i.size == 0:
            return c + shift[:, None, :], shift
        if rounds and rounds % ROUNDS_PER_EXPANSION == 0:
            moved = centres + shift
            shift += (EXPANSION - 1.0) * (moved - moved.mean(axis=0))
            continue
        a, b = atoms.molecule[i], atoms.molecule[j]
        apart = centres[a] + shift[a] - centres[b] - shift[b]  # for coincident atoms, and stuck pairs
        if rounds < CENTRE_PUSH_AFTER:
            direction = np.where((d > 1e-6)[:, None], points[i] - points[j], apart + 1e-3)
        else:
            direction = apart + 1e-3
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        step = direction * (0.5 * (overlap - max_overlap + PUSH_MARGIN))[:, None]
        request = np.zeros((m, 3))
        np.add.at(request, a, step)
        np.add.at(request, b, -step)
        count = np.bincount(np.concatenate([a, b]), minlength=m)
        shift += request / np.maximum(count, 1)[:, None]
    raise RuntimeError(f"could not separate the molecules within {MAX_ROUNDS} rounds")


def expand(x: np.ndarray, z: np.ndarray, max_overlap: float = NOISE_MAX_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
    """Spread the centres of ``x [M, n, 3]`` about the first molecule's centre by the smallest power of
    :data:`EXPAND_STEP` after which no heavy-atom vdW overlap exceeds ``max_overlap`` — a uniform expansion of
    the cell, so a symmetric cluster stays symmetric. Returns the expanded cluster and the translations ``[M, 3]``."""
    c = np.asarray(x, dtype=np.float64)
    centres = c.mean(axis=1)
    offset = centres - centres[0]
    factor = 1.0
    while largest_overlap(c + ((factor - 1.0) * offset)[:, None, :], z) > max_overlap:
        factor *= EXPAND_STEP  # overlaps vanish once the centres are far enough apart: this ends
    shift = (factor - 1.0) * offset
    return c + shift[:, None, :], shift


def symmetric_noise(x_s: np.ndarray, z: np.ndarray, model: NoiseModel, rng: np.random.Generator) -> NoiseDraw:
    """x_w whose molecules carry one error as symmetry images of each other (module docstring).

    Molecule j of ``x_s`` is ``g_j`` of the central molecule, ``g_j(x) = R_j x + t_j`` (Kabsch, reflections
    allowed). The central molecule is turned by Q (``model.rotation_deg``) about its centre c_0, its centre
    moved by d (``model.displacement`` per axis); molecule j becomes ``g_j`` of that, ``R_j Q (x_0 − c_0)``
    about the centre ``c_j + R_j d``; the centres are then strained about the central one by ``I + E`` (E
    symmetric, entries of std ``model.strain``) and spread by ``model.spread``; with ``model.max_overlap`` set,
    the cell is expanded (:func:`expand`) instead of pushing molecules one by one. The maps recorded are
    ``R_j Q R_j⁻¹`` (every one turns by the angle of Q). An exactly planar molecule leaves a reflection
    through its plane undetermined (Kabsch returns the rotation), so its image is then turned by a
    conjugate of Q (same angle) rather than by the operator's image of the error.
    """
    m = x_s.shape[0]
    com = centre_of_mass(x_s, z)
    rel = x_s - com[:, None, :]
    ops = np.stack([kabsch(rel[0], rel[j], allow_reflection=True)[0] for j in range(m)])  # rel0 @ R_j.T = rel_j
    q = random_rotations(1, rng, model.rotation_deg)[0]
    d = rng.standard_normal(3) * model.displacement
    e = rng.standard_normal((3, 3)) * model.strain
    strain = np.eye(3) + 0.5 * (e + e.T)
    offset = (com - com[0]) + ops @ d - d  # centre of image j relative to the displaced central molecule
    new_com = com[0] + d + model.spread * offset @ strain.T
    turned = rel[0] @ q.T
    x_w = np.einsum("mij,nj->mni", ops, turned) + new_com[:, None, :]
    maps = np.einsum("mij,jk,mlk->mil", ops, q, ops)  # R_j Q R_j^T
    push = np.zeros((m, 3))
    if model.max_overlap is not None:
        x_w, push = expand(x_w, z, model.max_overlap)
    return NoiseDraw(x_w, maps, push)


def apply_noise(x_s: np.ndarray, z: np.ndarray, model: NoiseModel, rng: np.random.Generator) -> NoiseDraw:
    """Noised copy x_w of a cluster x_s [M, n, 3], with its per-molecule maps and separating push.

    Each map has determinant +1 (rotation) or -1 (rotation composed with inversion). With
    ``model.max_overlap`` set, molecules are then pushed apart by :func:`separate`. A ``symmetric`` model
    draws one error for the whole cluster instead (:func:`symmetric_noise`).
    """
    if model.symmetric:
        return symmetric_noise(x_s, z, model, rng)
    m = x_s.shape[0]
    com = centre_of_mass(x_s, z)  # [M, 3]
    maps = random_rotations(m, rng, model.rotation_deg)
    flip = rng.random(m) < model.inversion
    maps[flip] *= -1.0
    c0 = com.mean(axis=0)
    new_com = c0 + model.spread * (com - c0) + rng.standard_normal((m, 3)) * model.displacement
    x_w = np.einsum("mij,mnj->mni", maps, x_s - com[:, None, :]) + new_com[:, None, :]
    push = np.zeros((m, 3))
    if model.max_overlap is not None:
        x_w, push = separate(x_w, z, model.max_overlap)
    return NoiseDraw(x_w, maps, push)
