#!/usr/bin/env python
"""Builder fuzz: mutated copies of real CIFs must each end accepted or rejected with a named reason.

Usage::

    python bench/fuzz_build.py [INPUT ...] [--files N] [--seed S] [--workers W] [--keep DIR]

INPUT: CIF files or folders (searched recursively); default: the embedded COD folder
(``crystalflow.embedded_cif_dir()``). ``--files`` mutated files (default 3000) are written to a
temporary folder (or to ``--keep DIR``, new or empty, which is then left in place): file i takes the mutation kind
``KINDS[i % len(KINDS)]`` and a source CIF drawn from a generator seeded with (``--seed``, i), so the
same command writes the same files. ``manifest.tsv`` in that folder names each file's source and
mutation kind. ``build_dataset`` (``--workers`` processes, default 2) then builds them, and a table
shows, per mutation kind, the files, how many were accepted, the reject reasons, and how many ended
as ``internal_error``. The exit status is 1 when any file ended as ``internal_error`` (their details
are printed), else 0.

The mutation kinds (:data:`KINDS`, one per file; :func:`mutate` applies one, and tests import it
with ``bench/`` on ``sys.path``):

================  ==========================================================================
truncate          the file cut at a random character
delete_lines      1-8 random lines, or a block of 1-20, deleted
duplicate_lines   1-6 runs of 1-4 lines repeated (in place or elsewhere)
nan               1-3 numbers (mostly cell parameters and atom coordinates) -> nan, NaN, nan(1)
inf               the same -> inf, -inf, Infinity, 1e999
question_mark     the same -> ? or .
junk_number       the same -> junk (0x1F, 1.2.3, one, 1e-400, a 40-digit integer, ...)
scale_cell        every cell edge, or one, scaled by 1e-6 ... 1e7
degenerate_cell   angles that flatten or cannot close a cell (0, 180, 120/120/120, ...), or an
                  edge of 0, negative, 1e-9 or 1e300
garble_operators  1-3 symmetry operators garbled (unparseable, singular, non-integer, not a
                  group), often with the space-group name and number removed so that only the
                  operators are left; sometimes the name garbled
unknown_element   1-3 atom sites given an unknown type symbol (or label)
binary            random bytes inserted or overwritten, or about 1 % of bytes replaced
================  ==========================================================================
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict

import crystalflow
from crystalflow.common.errors import REASONS
from crystalflow.data.build import build_dataset, list_cifs
from crystalflow.data.pipeline import BuildSettings

_NUMBER = re.compile(r"(?<![\w.+-])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:\(\d+\))?(?![\w.])")
_CELL_LENGTH = re.compile(r"^(\s*_cell_length_[abc]\s+)(\S+)", re.M)
_CELL_ANGLE = re.compile(r"^(\s*_cell_angle_(?:alpha|beta|gamma)\s+)(\S+)", re.M)
_SYMOP = re.compile(r"'[^'\n]*[xyzXYZ][^'\n]*,[^'\n]*,[^'\n]*'|\"[^\"\n]*[xyzXYZ][^\"\n]*,[^\"\n]*,[^\"\n]*\""
                    r"|(?<=\s)[-+xyzXYZ0-9/.]*[xyzXYZ][-+xyzXYZ0-9/.]*,[-+xyzXYZ0-9/.,]+(?=\s|$)")
_SG_NAME = re.compile(r"^(\s*_(?:symmetry_space_group_name_H-M|space_group_name_H-M_alt|space_group_name_Hall"
                      r"|symmetry_space_group_name_Hall)\s+)(.+)$", re.M)
_SG_TAGS = re.compile(r"(?m)^\s*_(?:symmetry_space_group_name_H-M|space_group_name_H-M_alt|space_group_name_Hall"
                      r"|symmetry_space_group_name_Hall|symmetry_Int_Tables_number|space_group_IT_number)\s.*\n")

NUMBER_JUNK = ["nan", "NaN", "inf", "-inf", "?", ".", "1e999", "-1e999", "0x1F", "1.2.3", "--4", "1,5",
               "one", "#", "(0.1)", "0.1(", "1e-400", "+", "e5", "\u00b5", "1.0e", "_x", "'0.5'", "9" * 40]
JUNK_SPACE_GROUPS = ["'P 9'", "'Q 1'", "?", "'P 21/c 1 1 1 1'", "'X'", "P-1-1", "'F m -3 m :Q'", "''"]
JUNK_ELEMENTS = ["Xx", "Q", "Zz", "Uuo", "D1x", "?", ".", "X", "Qq", "Ab", "Me", "Ph", "Z9", "El"]
SCALES = [1e-6, 1e-3, 0.01, 0.1, 0.3, 0.7, 1.5, 3.0, 10.0, 100.0, 1e4, 1e7]
DEGENERATE_ANGLES = [
    ("90", "90", "0"), ("90", "90", "180"), ("120", "120", "120"), ("60", "60", "120"), ("30", "30", "90"),
    ("10", "170", "90"), ("0", "0", "0"), ("180", "180", "180"), ("90", "90", "179.9999"), ("359", "90", "90"),
    ("-90", "90", "90"), ("1e-9", "90", "90"), ("90", "90", "90.0(1)"), ("100", "100", "159.9999"),
]
DEGENERATE_LENGTHS = ["0", "0.0", "-5.0", "1e-9", "-0.0", "0.0000001", "1e300", "-1e-3"]


def atom_site_rows(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Tags of the atom-site loop (the one with ``_atom_site_fract_x``) and the spans of its one-line rows."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    k = 0
    while k < len(lines):
        if lines[k].strip().lower() != "loop_":
            k += 1
            continue
        tags, k = [], k + 1
        while k < len(lines) and lines[k].lstrip().startswith("_"):
            tags.append(lines[k].split()[0])
            k += 1
        rows = []
        while k < len(lines) and lines[k].strip() and not lines[k].lstrip().startswith(("_", "loop_", "data_", "#")):
            if len(lines[k].split()) == len(tags):
                rows.append((starts[k], starts[k + 1]))
            k += 1
        if "_atom_site_fract_x" in tags and rows:
            return tags, rows
    return [], []


def _token_spans(text: str, span: tuple[int, int]) -> list[tuple[int, int]]:
    return [(span[0] + m.start(), span[0] + m.end()) for m in re.finditer(r"\S+", text[span[0] : span[1]])]


def _replace_numbers(text: str, rng: random.Random, values: list[str]) -> str:
    """Replace one to three numbers, mostly cell parameters and atom-site coordinates, by ``values``."""
    spans = [m.span() for m in _NUMBER.finditer(text)]
    if not spans:
        return text + f"\n{rng.choice(values)}\n"
    targeted = [m.span(2) for m in (*_CELL_LENGTH.finditer(text), *_CELL_ANGLE.finditer(text))]
    tags, rows = atom_site_rows(text)
    columns = [tags.index(t) for t in ("_atom_site_fract_x", "_atom_site_fract_y", "_atom_site_fract_z") if t in tags]
    for row in rows:
        tokens = _token_spans(text, row)
        targeted += [tokens[c] for c in columns]
    chosen = {rng.choice(targeted if targeted and rng.random() < 0.8 else spans) for _ in range(rng.randint(1, 3))}
    return _substitute(text, [(*span, rng.choice(values)) for span in sorted(chosen)])


def _substitute(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each span ``(start, end)`` of the sorted ``edits`` replaced by its string."""
    out, last = [], 0
    for start, end, new in edits:
        if start >= last:
            out += [text[last:start], new]
            last = end
    return "".join(out) + text[last:]


def _truncate(text, rng):
    return text[: rng.randrange(len(text) + 1)]


def _delete_lines(text, rng):
    lines = text.splitlines(keepends=True)
    if rng.random() < 0.5:  # a contiguous block
        start = rng.randrange(len(lines))
        del lines[start : start + rng.randint(1, 20)]
    else:
        for _ in range(rng.randint(1, 8)):
            if lines:
                del lines[rng.randrange(len(lines))]
    return "".join(lines)


def _duplicate_lines(text, rng):
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(lines))
        n = rng.randint(1, 4)
        at = i if rng.random() < 0.7 else rng.randrange(len(lines) + 1)
        lines[at:at] = lines[i : i + n]
    return "".join(lines)


def _nan(text, rng):
    return _replace_numbers(text, rng, ["nan", "NaN", "-nan", "nan(1)"])


def _inf(text, rng):
    return _replace_numbers(text, rng, ["inf", "-inf", "Infinity", "1e999", "-1e400", "inf(2)"])


def _question(text, rng):
    return _replace_numbers(text, rng, ["?", "."])


def _junk_number(text, rng):
    return _replace_numbers(text, rng, NUMBER_JUNK)


def _scale_cell(text, rng):
    matches = list(_CELL_LENGTH.finditer(text))
    if not matches:
        return text
    which = matches if rng.random() < 0.5 else [rng.choice(matches)]  # the whole cell, or one edge
    factor = rng.choice(SCALES)
    edits = []
    for m in sorted(which, key=lambda m: m.start()):
        try:
            edits.append((*m.span(2), f"{float(re.sub(r'[(].*', '', m.group(2))) * factor:.6g}"))
        except ValueError:
            pass
    return _substitute(text, edits)


def _degenerate_cell(text, rng):
    if rng.random() < 0.6:
        angles = rng.choice(DEGENERATE_ANGLES)
        matches = sorted(_CELL_ANGLE.finditer(text), key=lambda m: m.start())
        return _substitute(text, [(*m.span(2), value) for m, value in zip(matches, angles)])
    matches = list(_CELL_LENGTH.finditer(text))
    if not matches:
        return text
    return _substitute(text, [(*rng.choice(matches).span(2), rng.choice(DEGENERATE_LENGTHS))])


def _garble_op(op: str, rng: random.Random) -> str:
    choice = rng.randrange(10)
    body, quote = (op[1:-1], op[0]) if op[:1] in "'\"" else (op, "")
    parts = body.split(",")
    if choice == 0:
        body = body.replace(rng.choice("xyz"), rng.choice(["q", "", "xx", "1/0", "*", "w"]))
    elif choice == 1:
        body = ",".join(parts[: rng.randint(0, 2)])  # too few components
    elif choice == 2:
        body = body + "," + rng.choice(parts)  # too many
    elif choice == 3:
        body = ",".join([parts[0]] * 3)  # singular: every row the same
    elif choice == 4:
        body = "0,0,0" if rng.random() < 0.5 else "x,y,0"  # singular rotation part
    elif choice == 5:
        body = body.replace("/", rng.choice(["//", "/0", "/", "/x"]), 1)
    elif choice == 6:
        body = "".join(rng.sample(body, len(body)))  # shuffled characters
    elif choice == 7:
        body = ",".join(p + rng.choice(["+1e9", "+nan", "+inf", "+1/3", "*2", "+x"]) for p in parts)
    elif choice == 8:
        body = ",".join(p.replace("x", "2x").replace("y", "3y") for p in parts)  # non-unimodular
    else:
        body = rng.choice(["", "?", ".", "x,y,z,x,y,z", "a,b,c", "-x,-y,-z+1/2+1/2+1/2"])
    return f"{quote}{body}{quote}"


def _garble_operators(text, rng):
    ops = list(_SYMOP.finditer(text))
    if ops and rng.random() < 0.6:  # without a space-group name or number, gemmi has only the operators
        text = _SG_TAGS.sub("", text)
        ops = list(_SYMOP.finditer(text))
    names = list(_SG_NAME.finditer(text))
    if names and (not ops or rng.random() < 0.2):
        text = _substitute(text, [(*rng.choice(names).span(2), rng.choice(JUNK_SPACE_GROUPS))])
        ops = list(_SYMOP.finditer(text))
    chosen = sorted({rng.randrange(len(ops)) for _ in range(rng.randint(1, 3))}) if ops else []
    return _substitute(text, [(*ops[k].span(), _garble_op(ops[k].group(), rng)) for k in chosen])


def _unknown_element(text, rng):
    """The type symbol (or, without that column, the label) of one to three atom sites made unknown."""
    tags, rows = atom_site_rows(text)
    names = [t for t in ("_atom_site_type_symbol", "_atom_site_label") if t in tags]
    if not rows or not names:
        return text
    column = tags.index(names[0])
    chosen = sorted({_token_spans(text, rng.choice(rows))[column] for _ in range(rng.randint(1, 3))})
    return _substitute(text, [(*span, rng.choice(JUNK_ELEMENTS)) for span in chosen])


def _binary(data: bytes, rng: random.Random) -> bytes:
    n = rng.choice([1, 2, 8, 64, 512])
    junk = bytes(rng.randrange(256) for _ in range(n))
    pos = rng.randrange(len(data) + 1)
    mode = rng.randrange(3)
    if mode == 0:  # inserted
        return data[:pos] + junk + data[pos:]
    if mode == 1:  # overwritten
        return data[:pos] + junk + data[pos + n :]
    return bytes(b if rng.random() > 0.01 else rng.randrange(256) for b in data)  # scattered


_TEXT_MUTATIONS = {
    "truncate": _truncate,
    "delete_lines": _delete_lines,
    "duplicate_lines": _duplicate_lines,
    "nan": _nan,
    "inf": _inf,
    "question_mark": _question,
    "junk_number": _junk_number,
    "scale_cell": _scale_cell,
    "degenerate_cell": _degenerate_cell,
    "garble_operators": _garble_operators,
    "unknown_element": _unknown_element,
}
#: every mutation kind, in the order files are assigned to them
KINDS: tuple[str, ...] = (*_TEXT_MUTATIONS, "binary")


def mutate(text: str, kind: str, rng: random.Random) -> bytes:
    """One mutation ``kind`` (see :data:`KINDS`) of the CIF ``text``; returns the file's bytes."""
    if kind == "binary":
        return _binary(text.encode("utf-8", errors="surrogateescape"), rng)
    if kind not in _TEXT_MUTATIONS:
        raise ValueError(f"unknown mutation kind {kind!r}; one of {', '.join(KINDS)}")
    if not text:
        return b""
    return _TEXT_MUTATIONS[kind](text, rng).encode("utf-8", errors="surrogateescape")


def source_texts(inputs: list[str]) -> list[tuple[str, str]]:
    """(base name, text) of every CIF under ``inputs``, sorted by path."""
    files = sorted({os.path.abspath(f) for item in inputs for f in list_cifs(item)})
    out = []
    for f in files:
        with open(f, "rb") as fh:
            out.append((os.path.basename(f), fh.read().decode("utf-8", errors="surrogateescape")))
    return out


def write_mutants(sources: list[tuple[str, str]], n: int, seed: int, folder: str,
                  kinds: tuple[str, ...] = KINDS) -> list[dict]:
    """Write ``n`` mutated files to ``folder`` (file i: kind ``kinds[i % len(kinds)]``); returns the manifest."""
    os.makedirs(folder, exist_ok=True)
    manifest = []
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")
        kind = kinds[i % len(kinds)]
        source, text = sources[rng.randrange(len(sources))]
        name = f"m{i:05d}_{kind}.cif"
        with open(os.path.join(folder, name), "wb") as f:
            f.write(mutate(text, kind, rng))
        manifest.append({"file": name, "kind": kind, "source": source})
    with open(os.path.join(folder, "manifest.tsv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["file", "kind", "source"], delimiter="\t")
        w.writeheader()
        w.writerows(manifest)
    return manifest


def outcomes(out_dir: str) -> dict[str, tuple[str, str]]:
    """file -> (reason, detail) for every rejected file of a build (accepted files are absent)."""
    with open(os.path.join(out_dir, "rejects.csv"), newline="") as f:
        return {r["file"]: (r["reason"], r["detail"]) for r in csv.DictReader(f)}


def table(manifest: list[dict], rejects: dict[str, tuple[str, str]]) -> str:
    """Per mutation kind: files, accepted, rejects by reason, internal_error count."""
    per_kind: dict[str, Counter] = defaultdict(Counter)
    for row in manifest:
        reason = rejects.get(row["file"], ("accepted", ""))[0]
        per_kind[row["kind"]][reason] += 1
    kinds = [k for k in KINDS if k in per_kind] + sorted(set(per_kind) - set(KINDS))
    total = Counter()
    for k in kinds:
        total.update(per_kind[k])
    reasons = [r for r in REASONS if r != "internal_error" and total[r]]
    reasons += sorted(set(total) - set(REASONS) - {"accepted"})  # never expected: shown if it happens
    cols = ["files", "accepted", *reasons, "internal_error"]
    width = {c: max(len(c), 5) for c in cols}
    header = f"{'kind':<17}" + "".join(f" {c:>{width[c]}}" for c in cols)
    lines = [header, "-" * len(header)]
    for k, counts in [*[(k, per_kind[k]) for k in kinds], ("all", total)]:
        if k == "all":
            lines.append("-" * len(header))
        values = {"files": sum(counts.values()), **counts}
        lines.append(f"{k:<17}" + "".join(f" {values.get(c, 0):>{width[c]}}" for c in cols))
    return "\n".join(lines)


def run(inputs: list[str], n: int, seed: int, workers: int, folder: str) -> tuple[list[dict], dict, float]:
    """Write the mutants under ``folder``/in, build them into ``folder``/out; (manifest, rejects, seconds)."""
    manifest = write_mutants(source_texts(inputs), n, seed, os.path.join(folder, "in"))
    start = time.perf_counter()
    build_dataset(os.path.join(folder, "in"), os.path.join(folder, "out"), BuildSettings(),
                  workers=workers, progress=False, overwrite=True)
    return manifest, outcomes(os.path.join(folder, "out")), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="*", help="CIF files or folders to mutate (default: the embedded COD CIFs)")
    p.add_argument("--files", type=int, default=3000, help="mutated files to write and build")
    p.add_argument("--seed", type=int, default=0, help="seed of the mutations")
    p.add_argument("--workers", type=int, default=2, help="processes for build_dataset")
    p.add_argument("--keep", metavar="DIR", help="write the mutants and the build here and keep them")
    args = p.parse_args(argv)
    inputs = args.inputs or [crystalflow.embedded_cif_dir()]
    if args.keep and os.path.isdir(args.keep) and os.listdir(args.keep):
        p.error(f"--keep {args.keep}: give a new or empty folder")
    folder = args.keep or tempfile.mkdtemp(prefix="cf-fuzz-")
    try:
        manifest, rejects, seconds = run(inputs, args.files, args.seed, args.workers, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{len(manifest)} mutated CIFs ({len(KINDS)} kinds, seed {args.seed}) from "
          f"{', '.join(inputs)}; build_dataset, {args.workers} workers, {seconds:.1f} s")
    print(table(manifest, rejects))
    bad = [(row, rejects[row["file"]]) for row in manifest
           if row["file"] in rejects and rejects[row["file"]][0] not in set(REASONS) - {"internal_error"}]
    if bad:
        print(f"\n{len(bad)} files ended as internal_error or an unnamed reason:")
        for row, (reason, detail) in bad:
            print(f"  {row['file']} ({row['kind']} of {row['source']}): {reason}: {detail}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
