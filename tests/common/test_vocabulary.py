"""One place for each name: the command line's choices and defaults are the vocabulary's, and so are the library's."""
from __future__ import annotations

import argparse
import importlib
import inspect
import subprocess
import sys

import pytest

from crystalflow import cli
from crystalflow.common import vocabulary as V

#: (command, option dest) -> the vocabulary list its choices must equal
CHOICES = {
    ("build", "noise"): sorted(V.NOISE_PRESET_NAMES),
    ("build", "split_by"): V.SPLIT_BY,
    ("export", "format"): V.EXPORT_FORMATS,
    ("export", "split"): V.SPLIT_CHOICES,
    ("stats", "split"): V.SPLIT_CHOICES,
    ("train", "method"): V.METHODS,
    ("export-model", "weights"): V.EXPORT_WEIGHTS,
    ("sample", "split"): V.SPLIT_CHOICES,
    ("sample", "solver"): V.SOLVERS,
    ("sample", "weights"): V.WEIGHTS,
    ("baseline", "name"): V.BASELINES,
    ("baseline", "split"): V.SPLIT_CHOICES,
    ("benchmark", "methods"): V.METHODS,
    ("benchmark", "baselines"): V.BASELINES,
    ("benchmark", "variants"): V.BENCHMARK_VARIANTS,
    ("reconstruct", "source"): V.RECONSTRUCT_SOURCES,
    ("predict", "mode"): V.PREDICT_MODES,
    ("predict", "rank"): V.SEARCH_RANKINGS,
    ("predict", "charges"): V.CHARGE_MODELS,
    ("relax", "charges"): V.CHARGE_MODELS,
}
#: (command, option dest) -> the vocabulary default it must have
DEFAULTS = {
    ("build", "noise"): V.DEFAULT_NOISE_PRESET,
    ("build", "max_atoms"): V.DEFAULT_MAX_ATOMS,
    ("build", "split_by"): V.DEFAULT_SPLIT_BY,
    ("export", "split"): V.ALL_SPLITS,
    ("stats", "split"): V.ALL_SPLITS,
    ("export-model", "weights"): V.DEFAULT_EXPORT_WEIGHTS,
    ("sample", "steps"): V.DEFAULT_STEPS,
    ("sample", "solver"): V.DEFAULT_SOLVER,
    ("sample", "weights"): V.DEFAULT_WEIGHTS,
    ("sample", "batch"): V.DEFAULT_BATCH_CLUSTERS,
    ("predict", "candidates"): V.DEFAULT_SEARCH_CANDIDATES,
    ("predict", "seconds"): V.DEFAULT_SEARCH_SECONDS,
    ("predict", "workers"): V.DEFAULT_SEARCH_WORKERS,
    ("demo", "epochs"): V.DEMO_EPOCHS,
}


def _options() -> dict[tuple[str, str], argparse.Action]:
    parser = cli.make_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {(name, action.dest): action for name, p in sub.choices.items() for action in p._actions}


def test_every_choice_list_of_the_cli_is_its_vocabulary_constant() -> None:
    options = _options()
    with_choices = {key for key, action in options.items() if action.choices is not None}
    assert with_choices == set(CHOICES), "a choice list of the CLI is missing from CHOICES (or gone from the CLI)"
    for key, expected in CHOICES.items():
        assert list(options[key].choices) == list(expected), key


def test_cli_defaults_are_the_vocabulary_defaults() -> None:
    options = _options()
    for key, expected in DEFAULTS.items():
        assert options[key].default == expected, key


def test_the_library_uses_the_same_names() -> None:
    from crystalflow.apps import benchmark, predict, predict_crystals
    from crystalflow.data import index, noise, pipeline
    from crystalflow.evaluation import baselines
    from crystalflow.flow import model
    from crystalflow.structure import molecule_input

    assert tuple(noise.NOISE_PRESETS) == V.NOISE_PRESET_NAMES
    assert pipeline.BuildSettings().noise_preset == V.DEFAULT_NOISE_PRESET
    assert pipeline.BuildSettings().max_atoms == molecule_input.MAX_ATOMS == V.DEFAULT_MAX_ATOMS
    assert index.SPLITS == V.SPLITS
    assert baselines.BASELINES == V.BASELINES
    assert benchmark.BASELINES == V.BASELINES and set(benchmark.TABLE_METHODS) == set(V.METHODS)
    assert tuple(benchmark.VARIANTS) == V.BENCHMARK_VARIANTS
    assert set(benchmark.QUICK_VARIANTS) <= set(V.BENCHMARK_VARIANTS)
    assert tuple(model.METHODS) == V.METHODS
    assert predict.MODES == V.PREDICT_MODES
    search = inspect.signature(predict_crystals.predict_crystals).parameters
    assert (search["samples"].default, search["candidates"].default, search["seconds"].default) == (
        V.DEFAULT_TOP, V.DEFAULT_SEARCH_CANDIDATES, V.DEFAULT_SEARCH_SECONDS)
    for name in ("crystalflow.flow.solver", "crystalflow.evaluation.sampling"):
        try:
            solvers = getattr(importlib.import_module(name), "SOLVERS", None)
        except ModuleNotFoundError:
            continue
        if solvers is not None:
            assert tuple(solvers) == V.SOLVERS, name


@pytest.mark.parametrize("module", ["crystalflow.common.vocabulary", "crystalflow.cli"])
def test_the_parser_needs_neither_numpy_nor_torch(module: str) -> None:
    code = (f"import sys, {module}; from crystalflow.cli import make_parser; make_parser(); "
            "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
