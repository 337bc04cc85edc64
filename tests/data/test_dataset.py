"""Tests of crystalflow.data.dataset.FreshNoiseDataset: new input draws every epoch, rigid copies of the crystal."""
from __future__ import annotations

import numpy as np
import pytest


def test_fresh_noise_dataset_draws_rigid_copies_per_epoch(tmp_path):
    import shutil

    import crystalflow
    from crystalflow.common.errors import UserError
    from crystalflow.data.build import build_dataset
    from crystalflow.data.dataset import ClusterDataset, FreshNoiseDataset, dataset_noise
    from crystalflow.data.noise import noise_model
    from crystalflow.data.pipeline import BuildSettings

    cifs = tmp_path / "cifs"
    cifs.mkdir()
    shutil.copy(f"{crystalflow.embedded_cif_dir()}/2100348-benzene.cif", cifs)
    build_dataset(str(cifs), str(tmp_path / "d"), BuildSettings(noise=noise_model("solution", inversion=True)),
                  workers=1, progress=False)
    noise = dataset_noise(str(tmp_path / "d"))
    assert noise == noise_model("solution", inversion=True)
    base = ClusterDataset(str(tmp_path / "d"), "all")
    fresh = FreshNoiseDataset(base, noise, seed=3)
    a = fresh[0]
    np.testing.assert_array_equal(fresh[0].x_w, a.x_w)  # a function of (seed, epoch, index)
    np.testing.assert_array_equal(a.x_s, base[0].x_s)
    assert not np.allclose(a.x_w, base[0].x_w)
    fresh.set_epoch(1)
    assert not np.allclose(fresh[0].x_w, a.x_w)
    for m in range(a.x_s.shape[0]):  # every molecule is a rigid (or mirrored) copy of its crystal pose
        d_w = np.linalg.norm(a.x_w[m][:, None] - a.x_w[m][None], axis=-1)
        d_s = np.linalg.norm(a.x_s[m][:, None] - a.x_s[m][None], axis=-1)
        np.testing.assert_allclose(d_w, d_s, atol=1e-4)
    (tmp_path / "d" / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="noise settings"):
        dataset_noise(str(tmp_path / "d"))

