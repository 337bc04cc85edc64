"""The command-line contract: bad input to any subcommand is exit status 2 and one line on stderr, never a traceback.

Every subcommand gets inputs that are missing, unwritable, of the wrong type or damaged (a junk or cut
checkpoint, a cut HDF5 shard, a broken PRED_DIR). The damaged inputs are copies of good ones made once for
the module (a tiny dataset, a 1-epoch model, a PRED_DIR); one test also checks that a failing command
leaves the files already there as they were.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from conftest import REPO, build_embedded, write

from crystalflow.cli import main
from crystalflow.data.cluster17_csv import export_cluster17

#: three small COD crystals: one each for train, valid and test
CIFS = ["2100348-benzene.cif", "2205750.cif", "2100438-cell-vol.cif"]
TINY_TRAINING = {"epochs": 1, "batch_size": 2, "model": {"backbone": {"hidden": 8, "layers": 1}}}
BENZENE = "c1ccccc1"
needs_rdkit = pytest.mark.skipif(importlib.util.find_spec("rdkit") is None,
                                 reason="reading SMILES needs RDKit (the predict extra)")


def _cut(path: Path) -> None:
    """Keep the first half of a file (a copy interrupted half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damaged_copy(src: Path, dest: Path, files: list[str], how: str) -> str:
    """A copy of the folder ``src`` whose ``files`` are junk bytes (``how='junk'``) or cut in half."""
    shutil.copytree(src, dest)
    for name in files:
        if how == "junk":
            (dest / name).write_bytes(b"\x00 this is not a checkpoint \xff" * 64)
        else:
            _cut(dest / name)
    return str(dest)


@dataclass
class Work:
    """Inputs made once for the module: good ones and damaged copies of them."""

    cifs: str
    data: str  #: a dataset with one cluster in each split
    cut_data: str  #: the same with its shard cut in half
    run: str  #: a finished 1-epoch training run
    junk_run: str  #: the run with best.pt and checkpoint.pt full of junk bytes
    cut_run: str  #: the run with best.pt and checkpoint.pt cut in half
    raw: str  #: the dataset exported in the COD-Cluster17 CSV layout
    pred: str  #: an identity-baseline PRED_DIR of the whole dataset
    cut_pred: str  #: the PRED_DIR with its shard cut in half
    bad_info_pred: str  #: the PRED_DIR with a cut info.json


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, embedded_dir: Path) -> Work:
    """Everything the contract checks run on, built once for the module from CIFS.

    Its own dataset, not conftest's shared ``tiny_dataset``: three crystals, one per split, keep the training,
    export and baseline runs built on it small, and the damaged copies are made from it."""
    root = tmp_path_factory.mktemp("cli-contract")
    data = build_embedded(CIFS, root, workers=1)
    shards = [f"shards/{p.name}" for p in (data / "shards").glob("*.h5")]
    cut_data = _damaged_copy(data, root / "cut-data", shards, "cut")
    config = write(root / "tiny.json", json.dumps(TINY_TRAINING))
    run = root / "run"
    assert main(["train", str(data), "-o", str(run), "--config", str(config), "-q"]) == 0
    checkpoints = ["best.pt", "checkpoint.pt"]
    raw = root / "raw"
    export_cluster17(str(data), str(raw), progress=False)
    pred = root / "pred"
    assert main(["baseline", "identity", str(data), "--split", "all", "-o", str(pred), "-q"]) == 0
    pred_shards = [f"shards/{p.name}" for p in (pred / "shards").glob("*.h5")]
    return Work(
        cifs=str(root / "cifs"), data=str(data), cut_data=cut_data, run=str(run),
        junk_run=_damaged_copy(run, root / "junk-run", checkpoints, "junk"),
        cut_run=_damaged_copy(run, root / "cut-run", checkpoints, "cut"),
        raw=str(raw), pred=str(pred), cut_pred=_damaged_copy(pred, root / "cut-pred", pred_shards, "cut"),
        bad_info_pred=_damaged_copy(pred, root / "bad-info-pred", ["info.json"], "cut"),
    )


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run ``crystalflow ARGV`` in-process; assert the contract and return the one line on stderr."""
    capsys.readouterr()  # only this command's output counts
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, f"exit status {code}; stderr: {err}"
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"not one line on stderr: {err!r}"
    assert lines[0].startswith(f"crystalflow {argv[0]}: error: ")
    return lines[0]


def _config(tmp: Path, content: object) -> str:
    """A --config file holding ``content`` (JSON-encoded unless it is already text)."""
    return str(write(tmp / "config.json", content if isinstance(content, str) else json.dumps(content)))


def _unwritable(tmp: Path) -> str:
    """An output path whose parent is a regular file: no one, root included, can create it."""
    return str(write(tmp / "file.txt", "not a folder") / "out")


def _cif(w: Work) -> str:
    """A good CIF of the module's inputs."""
    return os.path.join(w.cifs, CIFS[0])


#: case -> (argv from the module's inputs and this test's tmp_path, text the error line must hold)
Case = Callable[[Work, Path], list[str]]
CASES: dict[str, tuple[Case, str]] = {
    # build
    "build/missing-input": (lambda w, t: ["build", str(t / "missing"), "-o", str(t / "o"), "-q"], "does not exist"),
    "build/unwritable-output": (lambda w, t: ["build", w.cifs, "-o", _unwritable(t), "-q"], "cannot write"),
    # export
    "export/missing-dataset": (lambda w, t: ["export", str(t / "missing"), "-o", str(t / "o"), "-q"], "does not exist"),
    "export/unwritable-output": (lambda w, t: ["export", w.data, "-o", _unwritable(t), "-q"], "cannot write"),
    "export/cut-shard": (lambda w, t: ["export", w.cut_data, "-o", str(t / "o"), "-q"], "cannot read shard"),
    # import-cluster17
    "import-cluster17/missing-folder": (
        lambda w, t: ["import-cluster17", str(t / "missing"), "-o", str(t / "o"), "-q"], "does not exist"),
    "import-cluster17/unwritable-output": (
        lambda w, t: ["import-cluster17", w.raw, "-o", _unwritable(t), "-q"], "cannot write"),
    # stats
    "stats/missing-dataset": (lambda w, t: ["stats", str(t / "missing"), "-o", str(t / "o")], "does not exist"),
    "stats/unwritable-output": (lambda w, t: ["stats", w.data, "-o", _unwritable(t)], "cannot write"),
    "stats/cut-shard": (lambda w, t: ["stats", w.cut_data, "-o", str(t / "o")], "cannot read shard"),
    # train
    "train/missing-dataset": (lambda w, t: ["train", str(t / "missing"), "-o", str(t / "r"), "-q"], "no clusters.csv"),
    "train/unwritable-output": (lambda w, t: ["train", w.data, "-o", _unwritable(t), "-q"], "cannot write"),
    "train/cut-shard": (lambda w, t: ["train", w.cut_data, "-o", str(t / "r"), "-q"], "cannot read shard"),
    "train/config-epochs-text": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", _config(t, {"epochs": "abc"}), "-q"],
        "epochs must be an integer"),
    "train/config-lr-list": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", _config(t, {"lr": [1]}), "-q"],
        "lr must be a number"),
    "train/config-flag-number": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", _config(t, {"fresh_noise": 1}), "-q"],
        "fresh_noise must be true or false"),
    "train/config-model-hidden-text": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", _config(t, {"model": {"backbone": {"hidden": "8"}}}), "-q"],
        "hidden must be an integer"),
    "train/config-model-not-object": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", _config(t, {"model": [8]}), "-q"],
        "model"),
    "train/config-unknown-key": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", _config(t, {"epoch": 1}), "-q"],
        "unknown training setting(s): epoch"),
    "train/config-unknown-model-key": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", _config(t, {"model": {"size": 8}}), "-q"],
        "size"),
    "train/config-not-object": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", _config(t, [1, 2]), "-q"],
        "must be a JSON object"),
    "train/config-invalid-json": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", _config(t, '{"epochs": 1,'), "-q"],
        "not valid JSON"),
    "train/config-missing": (
        lambda w, t: ["train", w.data, "-o", str(t / "r"), "--config", str(t / "missing.json"), "-q"],
        "cannot read config"),
    "train/resume-junk-checkpoint": (
        lambda w, t: ["train", w.data, "-o", w.junk_run, "--resume", "-q"], "junk-run/checkpoint.pt"),
    "train/resume-cut-checkpoint": (
        lambda w, t: ["train", w.data, "-o", w.cut_run, "--resume", "-q"], "cut-run/checkpoint.pt"),
    # export-model
    "export-model/missing-run": (
        lambda w, t: ["export-model", str(t / "missing"), "-o", str(t / "m")], "no checkpoint"),
    "export-model/unwritable-output": (lambda w, t: ["export-model", w.run, "-o", _unwritable(t)], "cannot write"),
    "export-model/junk-checkpoint": (lambda w, t: ["export-model", w.junk_run, "-o", str(t / "m")], "junk-run/best.pt"),
    "export-model/cut-checkpoint": (
        lambda w, t: ["export-model", w.cut_run, "-o", str(t / "m"), "--weights", "ema"], "cut-run/checkpoint.pt"),
    # sample
    "sample/missing-run": (
        lambda w, t: ["sample", str(t / "missing"), w.data, "-o", str(t / "p"), "-q"], "no training run"),
    "sample/missing-dataset": (lambda w, t: ["sample", w.run, str(t / "missing"), "-o", str(t / "p"), "-q"],
                               "no clusters.csv"),
    "sample/unwritable-output": (lambda w, t: ["sample", w.run, w.data, "-o", _unwritable(t), "-q"], "cannot write"),
    "sample/cut-shard": (lambda w, t: ["sample", w.run, w.cut_data, "-o", str(t / "p"), "-q"], "cannot read shard"),
    "sample/junk-checkpoint": (lambda w, t: ["sample", w.junk_run, w.data, "-o", str(t / "p"), "-q"],
                               "junk-run/checkpoint.pt"),
    "sample/cut-best-checkpoint": (
        lambda w, t: ["sample", w.cut_run, w.data, "--weights", "best", "-o", str(t / "p"), "-q"], "cut-run/best.pt"),
    # evaluate
    "evaluate/missing-pred-dir": (lambda w, t: ["evaluate", str(t / "missing"), "-o", str(t / "m.json"), "-q"],
                                  "not a prediction directory"),
    "evaluate/cut-shard": (lambda w, t: ["evaluate", w.cut_pred, "-o", str(t / "m.json"), "-q"], "cannot read shard"),
    "evaluate/cut-info": (lambda w, t: ["evaluate", w.bad_info_pred, "-o", str(t / "m.json"), "-q"], "info.json"),
    "evaluate/unwritable-output": (lambda w, t: ["evaluate", w.pred, "-o", _unwritable(t), "-q"], "not a directory"),
    # relax
    "relax/missing-pred-dir": (lambda w, t: ["relax", str(t / "missing"), "-o", str(t / "r"), "-q"],
                               "not a prediction directory"),
    "relax/cut-shard": (lambda w, t: ["relax", w.cut_pred, "-o", str(t / "r"), "-q"], "cannot read shard"),
    "relax/cut-info": (lambda w, t: ["relax", w.bad_info_pred, "-o", str(t / "r"), "-q"], "info.json"),
    "relax/onto-itself": (lambda w, t: ["relax", w.pred, "-o", w.pred, "-q"], "new prediction directory"),
    "relax/existing-output": (lambda w, t: ["relax", w.pred, "-o", w.data, "-q"], "already exists"),
    # reconstruct
    "reconstruct/missing-pred-dir": (lambda w, t: ["reconstruct", str(t / "missing"), "-o", str(t / "c"), "-q"],
                                     "not a prediction directory"),
    "reconstruct/unwritable-output": (lambda w, t: ["reconstruct", w.pred, "-o", _unwritable(t), "-q"],
                                      "cannot write"),
    "reconstruct/cut-shard": (lambda w, t: ["reconstruct", w.cut_pred, "-o", str(t / "c"), "-q"],
                              "cannot read shard"),
    # baseline
    "baseline/missing-dataset": (
        lambda w, t: ["baseline", "identity", str(t / "missing"), "-o", str(t / "p"), "-q"], "no clusters.csv"),
    "baseline/unwritable-output": (
        lambda w, t: ["baseline", "identity", w.data, "-o", _unwritable(t), "-q"], "cannot write"),
    "baseline/cut-shard": (
        lambda w, t: ["baseline", "identity", w.cut_data, "-o", str(t / "p"), "-q"], "cannot read shard"),
    # predict
    "predict/missing-molecule-file": (
        lambda w, t: ["predict", str(t / "missing.sdf"), "-o", str(t / "c"), "--model", w.run, "-q"], "no such file"),
    "predict/missing-model": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--model", str(t / "missing"), "-q"], "no model"),
    "predict/junk-model": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--model", w.junk_run, "-q"], "junk-run/checkpoint.pt"),
    "predict/cut-model": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--model", w.cut_run, "-q"], "cut-run/checkpoint.pt"),
    "predict/unwritable-output": (
        lambda w, t: ["predict", BENZENE, "-o", _unwritable(t), "--model", w.run, "--samples", "1", "-q"],
        "cannot write"),
    "predict/batch-missing-file": (
        lambda w, t: ["predict", "--batch", str(t / "missing.smi"), "-o", str(t / "c"), "-q"], "no such batch file"),
    "predict/bad-shard": (
        lambda w, t: ["predict", "--batch", str(write(t / "m.smi", "C methane\n")), "-o", str(t / "c"),
                      "--shard", "0/3", "-q"], "bad --shard"),
    "predict/bad-pxrd-file": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--pxrd", str(write(t / "p.xy", "2theta I\n5 x\n")),
                      "-q"], "bad powder pattern"),
    "predict/molecule-and-batch": (
        lambda w, t: ["predict", BENZENE, "--batch", str(t / "m.smi"), "-o", str(t / "c"), "-q"], "not both"),
    "predict/refine-in-model-mode": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--model", w.run, "--refine", "-q"], "--mode search"),
    "predict/rank-in-model-mode": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--model", w.run, "--rank", "learned", "-q"],
        "--mode search"),
    "predict/charges-in-model-mode": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--model", w.run, "--charges", "mmff", "-q"],
        "--mode search"),
    "predict/unknown-charges": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--charges", "esp", "-q"], "invalid choice"),
    "predict/unknown-ranking": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--rank", "density", "-q"], "invalid choice"),
    "predict/missing-refine-model": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--refine", str(t / "missing"), "--candidates", "1", "-q"],
        "no training run"),
    "predict/bad-number-of-workers": (
        lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--workers", "0", "-q"], "--workers: must be >= 1"),
    "predict/unknown-option": (lambda w, t: ["predict", BENZENE, "-o", str(t / "c"), "--frobnicate"], "unrecognized"),
    # benchmark
    "benchmark/unwritable-output": (lambda w, t: ["benchmark", "--quick", "-o", _unwritable(t), "-q"], "cannot write"),
    "benchmark/missing-shared-data": (
        lambda w, t: ["benchmark", "--shared", str(t / "missing"), "-o", str(t / "b"), "-q"], "--quick"),
    # compare
    "compare/missing-file": (lambda w, t: ["compare", _cif(w), str(t / "missing.cif")], "no such file"),
    "compare/not-a-cif": (lambda w, t: ["compare", str(write(t / "x.cif", "not a CIF\n")), _cif(w)],
                          "not a parseable CIF"),
    "compare/no-atoms": (lambda w, t: ["compare", _cif(w), str(write(t / "e.cif", "data_e\n_cell_length_a 5\n"))],
                         "no atom sites"),
    "compare/unwritable-pxrd-out": (lambda w, t: ["compare", _cif(w), _cif(w), "--pxrd-out", _unwritable(t)],
                                    "cannot write"),
    # demo
    "demo/unwritable-output": (lambda w, t: ["demo", "-o", _unwritable(t), "-q"], "cannot write"),
}
_RDKIT_CASES = {"predict/missing-model", "predict/junk-model", "predict/cut-model", "predict/unwritable-output"}


def test_every_subcommand_has_a_case() -> None:
    from crystalflow.cli import make_parser

    sub = next(a for a in make_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {name.split("/")[0] for name in CASES}


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=needs_rdkit) if c in _RDKIT_CASES else c for c in CASES]
)
def test_bad_input_is_one_line_and_status_2(case: str, work: Work, tmp_path: Path, capsys, single_thread) -> None:
    argv, expected = CASES[case]
    line = run_cli(argv(work, tmp_path), capsys)
    assert expected in line


def _snapshot(folder: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_failed_commands_keep_what_was_there(work: Work, tmp_path: Path, capsys, single_thread) -> None:
    """A damaged checkpoint or dataset stops a command before it changes any file already written."""
    junk = _snapshot(work.junk_run)
    run_cli(["train", work.data, "-o", work.junk_run, "--resume", "--epochs", "2", "-q"], capsys)
    assert _snapshot(work.junk_run) == junk
    # resuming a good run on a dataset whose shard is cut: the run is untouched
    run = shutil.copytree(work.run, tmp_path / "run")
    before = _snapshot(str(run))
    run_cli(["train", work.cut_data, "-o", str(run), "--resume", "--epochs", "2", "-q"], capsys)
    assert _snapshot(str(run)) == before
    # re-sampling over an existing PRED_DIR from a cut dataset keeps the old predictions
    pred = shutil.copytree(work.pred, tmp_path / "pred")
    before = _snapshot(str(pred))
    run_cli(["sample", work.run, work.cut_data, "--split", "all", "-o", str(pred), "--overwrite", "-q"], capsys)
    assert _snapshot(str(pred)) == before
    assert sorted(os.listdir(tmp_path)) == ["pred", "run"]  # no temporary folder left behind


def test_installed_command_reports_one_line(work: Work, tmp_path: Path) -> None:
    """The real entry point (``python -m crystalflow``): status 2 and one line, warnings included."""
    config = _config(tmp_path, {"epochs": "abc"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "crystalflow", "train", work.data, "-o", str(tmp_path / "r"), "--config", config, "-q"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "crystalflow train: error: bad training setting: epochs must be an integer, got 'abc' (str)"
    ]
    assert not (tmp_path / "r").exists()
