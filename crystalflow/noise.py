"""Noise: the weakly-correlated input x_w made from a crystal cluster x_s by per-molecule rigid motions.

Each molecule is rotated about its centre of mass, optionally mirrored through it (inversion), its
centre spread away from the cluster centre by a factor and displaced by Gaussian noise. Molecules stay
rigid, so the model must recover packing (positions and orientations), not conformations.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .molecules import centre_of_mass


@dataclass(frozen=True)
class NoiseModel:
    """Parameters of the per-molecule rigid noise."""

    rotation_deg: float | None = None  #: std of the rotation angle (deg); None = uniform random rotation
    displacement: float = 1.0  #: std (Å) of the Gaussian displacement of each centre, per axis
    spread: float = 1.0  #: centres are moved to c0 + spread * (c - c0), c0 = cluster centre
    inversion: float = 0.0  #: probability of mirroring a molecule through its centre

    def to_dict(self) -> dict:
        """Plain dict (for summary.json)."""
        return asdict(self)


#: named presets; ``solution`` (the default) destroys orientations and dilutes the cluster; ``melt`` keeps
#: orientations to about 30° (weakly correlated), at the density of ``liquid``
NOISE_PRESETS: dict[str, NoiseModel] = {
    "none": NoiseModel(rotation_deg=0.0, displacement=0.0, spread=1.0),
    "thermal": NoiseModel(rotation_deg=10.0, displacement=0.3, spread=1.0),
    "melt": NoiseModel(rotation_deg=30.0, displacement=1.0, spread=1.2),
    "liquid": NoiseModel(rotation_deg=None, displacement=1.0, spread=1.2),
    "solution": NoiseModel(rotation_deg=None, displacement=1.5, spread=1.6),
}
DEFAULT_PRESET = "solution"


def noise_model(preset: str = DEFAULT_PRESET, inversion: bool = False) -> NoiseModel:
    """The named preset, with inversion probability 0.5 when ``inversion`` is set."""
    if preset not in NOISE_PRESETS:
        raise ValueError(f"unknown noise preset {preset!r}; choose from {', '.join(NOISE_PRESETS)}")
    base = NOISE_PRESETS[preset]
    return NoiseModel(base.rotation_deg, base.displacement, base.spread, 0.5 if inversion else 0.0)


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


def apply_noise(
    x_s: np.ndarray, z: np.ndarray, model: NoiseModel, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Noised copy x_w of a cluster x_s [M, n, 3]; also returns the per-molecule linear maps [M, 3, 3].

    Each map has determinant +1 (rotation) or -1 (rotation composed with inversion).
    """
    m = x_s.shape[0]
    com = centre_of_mass(x_s, z)  # [M, 3]
    maps = random_rotations(m, rng, model.rotation_deg)
    flip = rng.random(m) < model.inversion
    maps[flip] *= -1.0
    c0 = com.mean(axis=0)
    new_com = c0 + model.spread * (com - c0) + rng.standard_normal((m, 3)) * model.displacement
    x_w = np.einsum("mij,mnj->mni", maps, x_s - com[:, None, :]) + new_com[:, None, :]
    return x_w, maps
