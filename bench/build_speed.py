#!/usr/bin/env python
"""Build speed: crystalflow vs cod-tools' ``cif_molecule`` on the same CIFs, and build memory vs input size.

Usage::

    python bench/build_speed.py [INPUT ...] [--max-files N] [--repeat R] [--workers W]
                                [--no-build] [--no-cod] [--memory] [--memory-sizes 1,4,16]

INPUT: CIF files or folders (searched recursively); default: the embedded COD folder
(``crystalflow.embedded_cif_dir()``). The first ``--max-files`` files (sorted, all by default) are timed by

* crystalflow, molecule completion only: ``read_cif`` + ``find_molecules`` per file, one process;
* crystalflow, the whole per-file pipeline: ``process_cif`` (select, complete, 17-molecule cluster, noise);
* crystalflow, ``build_dataset`` with ``--workers`` processes (HDF5 shards, tables; ``--no-build`` skips it);
* cod-tools, ``cif_molecule --expand-to-P1 --ignore-bumps --no-audit --covalent-sensitivity 0.45``: the
  same task (every molecule of the unit cell, completed), one process. Files are passed in one call
  (a single Perl start-up: cif_molecule's fastest mode); a file it fails on stops that call, and the
  rest are passed again. Options as in tests/structure/test_codtools_crosscheck.py.

Each crystalflow mode is run ``--repeat`` times and the best time is reported; cif_molecule, being
slow, once (``--repeat`` applies to it too when ``--cod-repeat`` is given). A file that a tool rejects
still counts as processed: rejecting is the pipeline's work as well (the table shows how many each
accepted). "x cod-tools" is throughput relative to cif_molecule's on the same files.

``--memory`` runs ``build_dataset`` (``--workers`` processes) on the selected files replicated k times
(k from ``--memory-sizes``; symbolic links under distinct names in a temporary folder), each in a fresh
Python process, and prints the peak resident memory of the main process and of the largest worker
(``resource.getrusage``, ``ru_maxrss``): flat figures mean memory does not grow with the input size.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import crystalflow
from crystalflow.common.errors import RejectError
from crystalflow.data.build import build_dataset, list_cifs
from crystalflow.data.pipeline import BuildSettings, process_cif
from crystalflow.structure.cif import read_cif
from crystalflow.structure.molecules import find_molecules

COD_OPTIONS = ("--expand-to-P1", "--ignore-bumps", "--no-audit", "--covalent-sensitivity", "0.45")
_SOURCE = re.compile(r"^_cod_data_source_file\s+(\S.*?)\s*$", re.M)


def select_files(inputs: list[str], max_files: int | None) -> list[str]:
    files = []
    for item in inputs:
        files.extend(list_cifs(item))
    files = sorted(dict.fromkeys(os.path.abspath(f) for f in files))
    return files[:max_files] if max_files else files


def link_tree(files: list[str], root: str, copies: int = 1) -> str:
    """A folder of symbolic links to ``files`` (``copies`` times, under distinct names); returns it."""
    os.makedirs(root, exist_ok=True)
    for c in range(copies):
        for i, f in enumerate(files):
            os.symlink(f, os.path.join(root, f"r{c:03d}_{i:06d}_{os.path.basename(f)}"))
    return root


def time_completion(files: list[str]) -> tuple[float, int]:
    """read_cif + find_molecules on every file; (seconds, files accepted)."""
    start, ok = time.perf_counter(), 0
    for f in files:
        try:
            find_molecules(read_cif(f))
            ok += 1
        except RejectError:
            pass
    return time.perf_counter() - start, ok


def time_pipeline(files: list[str]) -> tuple[float, int]:
    """process_cif on every file; (seconds, files accepted)."""
    settings = BuildSettings()
    start, ok = time.perf_counter(), 0
    for f in files:
        try:
            process_cif(f, os.path.basename(f), settings)
            ok += 1
        except RejectError:
            pass
    return time.perf_counter() - start, ok


def time_build(files: list[str], workers: int) -> tuple[float, int]:
    """build_dataset on links to ``files``; (seconds, crystals accepted)."""
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        src = link_tree(files, os.path.join(tmp, "in"))
        start = time.perf_counter()
        result = build_dataset(src, os.path.join(tmp, "out"), BuildSettings(), workers=workers, progress=False)
        return time.perf_counter() - start, result.summary["accepted_crystals"]


def time_cod(files: list[str], cif_molecule: str) -> tuple[float, int]:
    """cif_molecule on every file, one process at a time; (seconds, files it completed)."""
    with tempfile.TemporaryDirectory(prefix="cf-bench-cod-") as tmp:
        # distinct base names, because the output names each molecule's source file by its base name
        names = [os.path.join(tmp, f"{i:06d}_{os.path.basename(f)}") for i, f in enumerate(files)]
        for f, n in zip(files, names):
            os.symlink(f, n)
        todo, ok = list(names), 0
        start = time.perf_counter()
        while todo:
            proc = subprocess.run([cif_molecule, *COD_OPTIONS, *todo], capture_output=True, text=True)
            done = set(_SOURCE.findall(proc.stdout))
            ok += sum(os.path.basename(n) in done for n in todo)
            if proc.returncode == 0:
                break
            missing = [i for i, n in enumerate(todo) if os.path.basename(n) not in done]
            todo = todo[missing[0] + 1:] if missing else []  # the first file without output stopped it
        return time.perf_counter() - start, ok


def _peak_mib(usage) -> float:
    return usage.ru_maxrss / 1024.0  # kilobytes on Linux


def memory_child(src: str, workers: int) -> None:
    """(Run in a fresh process.) One build; prints peak RSS of this process and of its largest worker."""
    with tempfile.TemporaryDirectory(prefix="cf-bench-mem-") as tmp:
        start = time.perf_counter()
        result = build_dataset(src, os.path.join(tmp, "out"), BuildSettings(), workers=workers, progress=False)
        seconds = time.perf_counter() - start
    print(json.dumps({
        "seconds": seconds,
        "accepted": result.summary["accepted_crystals"],
        "clusters": result.summary["clusters"],
        "self_mib": _peak_mib(resource.getrusage(resource.RUSAGE_SELF)),
        "workers_mib": _peak_mib(resource.getrusage(resource.RUSAGE_CHILDREN)),
    }))


def memory_check(files: list[str], sizes: list[int], workers: int) -> None:
    print(f"\nmemory: build_dataset --workers {workers}, input replicated k times (fresh process per k)")
    header = f"{'k':>4} {'files':>7} {'accepted':>8} {'seconds':>8} {'CIFs/s':>8} {'main MiB':>9} {'worker MiB':>10}"
    print(header)
    print("-" * len(header))
    for k in sizes:
        with tempfile.TemporaryDirectory(prefix="cf-bench-rep-") as tmp:
            src = link_tree(files, os.path.join(tmp, "in"), copies=k)
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--_memory-child", src, "--workers", str(workers)],
                capture_output=True, text=True, check=True,
            )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        n = k * len(files)
        print(f"{k:>4} {n:>7} {r['accepted']:>8} {r['seconds']:>8.2f} {n / r['seconds']:>8.1f} "
              f"{r['self_mib']:>9.1f} {r['workers_mib']:>10.1f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="*", help="CIF files or folders (default: the embedded COD CIFs)")
    p.add_argument("--max-files", type=int, default=None, help="time only the first N files (sorted)")
    p.add_argument("--repeat", type=int, default=3, help="runs per crystalflow mode; the best is reported")
    p.add_argument("--cod-repeat", type=int, default=1, help="runs of cif_molecule; the best is reported")
    p.add_argument("--workers", type=int, default=2, help="processes for build_dataset")
    p.add_argument("--no-build", action="store_true", help="skip the build_dataset timing")
    p.add_argument("--no-cod", action="store_true", help="skip cif_molecule")
    p.add_argument("--memory", action="store_true", help="peak RSS of build_dataset vs input size")
    p.add_argument("--memory-sizes", default="1,4,16", help="replication factors k for --memory")
    p.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.workers)
        return

    files = select_files(args.inputs or [crystalflow.embedded_cif_dir()], args.max_files)
    if not files:
        sys.exit("no CIF files found")
    n = len(files)
    print(f"{n} CIF files from {', '.join(args.inputs) or crystalflow.embedded_cif_dir()}; "
          f"{os.cpu_count()} CPUs; best of {args.repeat} (crystalflow), {args.cod_repeat} (cod-tools)")

    rows = []  # (label, seconds, accepted)
    time_completion(files[:5])  # warm-up (imports, caches), untimed
    best = min((time_completion(files) for _ in range(args.repeat)), key=lambda r: r[0])
    rows.append(("crystalflow read_cif + find_molecules, 1 process", *best))
    best = min((time_pipeline(files) for _ in range(args.repeat)), key=lambda r: r[0])
    rows.append(("crystalflow process_cif (full pipeline), 1 process", *best))
    if not args.no_build:
        best = min((time_build(files, args.workers) for _ in range(args.repeat)), key=lambda r: r[0])
        rows.append((f"crystalflow build_dataset, {args.workers} workers", *best))
    cod_rate = None
    cif_molecule = shutil.which("cif_molecule")
    if not args.no_cod and cif_molecule:
        best = min((time_cod(files, cif_molecule) for _ in range(args.cod_repeat)), key=lambda r: r[0])
        rows.append(("cod-tools cif_molecule, 1 process", *best))
        cod_rate = n / best[0]
    elif not args.no_cod:
        print("cif_molecule is not on PATH: no cod-tools timing")

    header = f"{'mode':<52} {'files':>6} {'accepted':>8} {'seconds':>8} {'CIFs/s':>8} {'x cod-tools':>11}"
    print(header)
    print("-" * len(header))
    for label, seconds, ok in rows:
        rate = n / seconds
        ratio = f"{rate / cod_rate:.1f}x" if cod_rate else "-"
        print(f"{label:<52} {n:>6} {ok:>8} {seconds:>8.2f} {rate:>8.1f} {ratio:>11}")

    if args.memory:
        memory_check(files, [int(k) for k in args.memory_sizes.split(",")], args.workers)


if __name__ == "__main__":
    main()
