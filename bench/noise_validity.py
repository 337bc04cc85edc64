"""How physical the noise presets' inputs are, with and without pushing molecules apart.

    python bench/noise_validity.py [CIF_DIR ...] [--draws 2] [--max-atoms 200]

For every accepted crystal of the folders (default: the embedded COD set) and every preset, draws x_w
``--draws`` times twice from the same random stream: with the preset as built (molecules pushed apart
until no heavy-atom vdW overlap exceeds 0.5 Å) and without the push (``max_overlap=None``, the
paper's kind of noise). Prints per preset: % of valid inputs (no heavy-atom overlap ≥ 0.7 Å), the
median worst overlap, the mean turn angle (identical in both: the push only translates), the RMS
centre displacement beyond the spread (the preset's Gaussian; plus the push), the RMS push, and the
seconds per draw.
"""
from __future__ import annotations

import argparse
import glob
import os
import time
from dataclasses import replace

import numpy as np

from crystalflow.common.errors import RejectError
from crystalflow.common.resources import embedded_cif_dir
from crystalflow.data.noise import NOISE_PRESETS, apply_noise
from crystalflow.data.pipeline import BuildSettings, select
from crystalflow.structure.cif import read_cif
from crystalflow.structure.cluster import build_cluster
from crystalflow.structure.contacts import VALIDITY_OVERLAP, max_overlap
from crystalflow.structure.molecules import centre_of_mass


def clusters(folders: list[str], max_atoms: int) -> list:
    out = []
    settings = BuildSettings(max_atoms=max_atoms)
    for path in sorted(p for d in folders for p in glob.glob(os.path.join(d, "*.cif"))):
        try:
            crystal = read_cif(path)
            molecules, _, _ = select(crystal, settings)
        except RejectError:
            continue
        out.append(build_cluster(crystal, molecules))
    return out


def displacement(x_s: np.ndarray, x_w: np.ndarray, z: np.ndarray, spread: float) -> np.ndarray:
    """Per molecule, how far x_w's centre lies from the spread crystal centre c0 + spread (c − c0)."""
    c_s, c_w = centre_of_mass(x_s, z), centre_of_mass(x_w, z)
    c0 = c_s.mean(axis=0)
    return np.linalg.norm(c_w - (c0 + spread * (c_s - c0)), axis=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="*", default=[embedded_cif_dir()])
    p.add_argument("--draws", type=int, default=2)
    p.add_argument("--max-atoms", type=int, default=200)
    args = p.parse_args()
    cs = clusters(args.folders, args.max_atoms)
    print(f"{len(cs)} crystals from {', '.join(args.folders)}; {args.draws} draws each; validity: heavy-atom "
          f"overlap < {VALIDITY_OVERLAP} Å")
    head = (f"{'preset':9s} {'push':>5s} {'valid %':>8s} {'median worst overlap Å':>23s} {'mean turn °':>11s} "
            f"{'RMS displacement Å':>19s} {'RMS push Å':>11s} {'ms/draw':>8s}")
    print(head)
    print("-" * len(head))
    for name, model in NOISE_PRESETS.items():
        for pushed in (False, True):
            m = model if pushed else replace(model, max_overlap=None)
            overlaps, angles, disp, push, seconds = [], [], [], [], 0.0
            for i, c in enumerate(cs):
                rng = np.random.default_rng([i, 7])
                for _ in range(args.draws):
                    t0 = time.perf_counter()
                    draw = apply_noise(c.x, c.z, m, rng)
                    seconds += time.perf_counter() - t0
                    overlaps.append(max_overlap(draw.x_w, c.z))
                    angles.append(draw.statistics()["noise_angle"])
                    disp.append(displacement(c.x, draw.x_w, c.z, m.spread))
                    push.append(np.linalg.norm(draw.push, axis=1))
            o = np.asarray(overlaps)
            d, q = np.concatenate(disp), np.concatenate(push)
            print(f"{name:9s} {'yes' if pushed else 'no':>5s} {100 * np.mean(o < VALIDITY_OVERLAP):8.1f} "
                  f"{np.median(o):23.2f} {np.mean(angles):11.1f} {np.sqrt(np.mean(d**2)):19.2f} "
                  f"{np.sqrt(np.mean(q**2)):11.2f} {1e3 * seconds / len(o):8.1f}")


if __name__ == "__main__":
    main()
