"""The public Python API: every name crystalflow exports resolves lazily and documents itself with an example."""
from __future__ import annotations

import subprocess
import sys

import crystalflow


def test_every_public_name_resolves_and_has_an_example() -> None:
    for name in crystalflow.__all__:
        if name == "__version__":
            continue
        obj = getattr(crystalflow, name)
        doc = obj.__doc__ or ""
        assert ">>>" in doc or "Example" in doc, f"{name} has no docstring example"


def test_import_is_light() -> None:
    """``import crystalflow`` loads neither torch nor the subpackages until a name is used."""
    code = "import sys, crystalflow; print('torch' in sys.modules, 'crystalflow.flow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
