"""The shipped default model (resources/models/default, a flat-form config.json) loads and predicts as before."""
from __future__ import annotations

import json
import os

import pytest
import torch

from crystalflow.apps.predict import default_model_dir
from crystalflow.backbones.registry import BackboneConfig
from crystalflow.common.resources import embedded_cif_dir
from crystalflow.data.pipeline import BuildSettings, process_cif
from crystalflow.evaluation.sampling import sample_records
from crystalflow.flow.model import ModelConfig
from crystalflow.training.checkpoint import load_model

pytestmark = pytest.mark.usefixtures("single_thread")

CIF = "2100348-benzene.cif"
#: the prediction [2 samples, 17 molecules, 12 atoms, 3] for seed 0 and 5 Euler steps: its sum, sum of absolute
#: values and sum of squares (Å, Å²), and the first molecule's first three atoms of the first sample
EXPECT_SUMS = (349.4085020404309, 3446.1393097620457, 15125.101025745042)
EXPECT_ATOMS = [
    [0.8051813244819641, -0.916624903678894, 0.9184238314628601],
    [-0.08954566717147827, 0.7186933755874634, 0.21570655703544617],
    [0.9985247254371643, -1.7667654752731323, 0.9921790361404419],
]


def test_shipped_config_is_the_flat_form_of_the_default_fast_lerp_model():
    with open(os.path.join(default_model_dir(), "config.json")) as f:
        flat = json.load(f)["model"]
    assert flat["backbone"] == "fast" and "hidden" in flat  # the flat form, as shipped
    config = ModelConfig.from_dict(flat)
    assert config == ModelConfig(method="lerp", backbone=BackboneConfig(variant="fast", hidden=64, layers=3))
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_shipped_model_predicts_as_before():
    model, config = load_model(default_model_dir())
    assert config.model.backbone.variant == "fast" and config.model.method == "lerp"
    record = process_cif(os.path.join(embedded_cif_dir(), CIF), CIF, BuildSettings())[0]
    result = sample_records(model, [record], samples=2, steps=5, solver="euler",
                            generator=torch.Generator().manual_seed(0))
    pred = result.pred[0].double()
    assert pred.shape == (2, 17, 12, 3)
    sums = (float(pred.sum()), float(pred.abs().sum()), float((pred * pred).sum()))
    assert sums == pytest.approx(EXPECT_SUMS, rel=1e-5)
    torch.testing.assert_close(pred[0, 0, :3], torch.tensor(EXPECT_ATOMS, dtype=torch.float64), atol=1e-4, rtol=0)
