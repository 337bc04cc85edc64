"""Builder fuzz (slow): mutated copies of the embedded CIFs end accepted or rejected with a named reason.

The mutations are those of ``bench/fuzz_build.py``; ``python bench/fuzz_build.py --files 300 --seed 7``
writes and builds the same 300 files.
"""
from __future__ import annotations

import sys

import pytest
from conftest import REPO

from crystalflow.common.errors import REASONS
from crystalflow.data.build import build_dataset
from crystalflow.data.pipeline import BuildSettings

sys.path.insert(0, str(REPO / "bench"))
import fuzz_build  # noqa: E402

N_FILES = 300
SEED = 7


@pytest.mark.slow
def test_mutated_cifs_end_accepted_or_with_a_named_reason(embedded_dir, tmp_path):
    manifest = fuzz_build.write_mutants(fuzz_build.source_texts([str(embedded_dir)]), N_FILES, SEED, str(tmp_path / "in"))
    assert {row["kind"] for row in manifest} == set(fuzz_build.KINDS)
    result = build_dataset(str(tmp_path / "in"), str(tmp_path / "out"), BuildSettings(), workers=2, progress=False)
    rejects = fuzz_build.outcomes(str(tmp_path / "out"))
    internal = {f: detail for f, (reason, detail) in rejects.items() if reason == "internal_error"}
    assert not internal, f"{len(internal)} files ended as internal_error: {internal}"
    assert all(reason in REASONS for reason, _ in rejects.values())
    assert result.summary["accepted_crystals"] + len(rejects) == N_FILES
    assert result.summary["accepted_crystals"] > 0 and len(rejects) > N_FILES // 2  # the mutations bite
