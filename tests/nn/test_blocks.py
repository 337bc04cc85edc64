"""Tests of crystalflow.nn.blocks: the shared network blocks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from toys import MOL_A, Z_A, toy_cluster

from crystalflow.data.dataset import collate
from crystalflow.data.shards import ClusterRecord
from crystalflow.nn.blocks import ShapeEmbedding
from crystalflow.nn.frames import molecule_frames

#: tiny tensors: one torch thread avoids OpenMP synchronisation costs (fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("single_thread")


def test_shape_embedding_ignores_turns_of_molecules_but_sees_mirrors():
    torch.manual_seed(0)
    net = ShapeEmbedding(16).double()
    rec = toy_cluster(MOL_A, Z_A, 4, seed=5)

    def embed(x_s: np.ndarray) -> torch.Tensor:
        b = collate([ClusterRecord(x_s=x_s, x_w=x_s, z=Z_A)]).to("cpu", torch.float64)
        frames, c = molecule_frames(b.x_s, b)
        with torch.no_grad():
            return net(frames, b.x_s - c[b.mol], b)

    h = embed(rec.x_s)
    assert h.shape == (4, 16)
    torch.testing.assert_close(h, h[:1].expand_as(h), atol=1e-5, rtol=0)  # rigid copies look alike (float32 data)
    rot = Rotation.random(4, random_state=2).as_matrix()
    centres = rec.x_s.mean(1, keepdims=True)
    turned = np.einsum("mij,mnj->mni", rot, rec.x_s - centres) + centres
    turn_change = float((embed(turned) - h).abs().max())
    mirror_change = float((embed(-rec.x_s) - h).abs().max())
    assert turn_change < 1e-8 and mirror_change > 1e-4  # float64 inputs: turns change nothing
