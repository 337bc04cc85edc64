"""Files shipped inside the package (``crystalflow/resources/``): the embedded COD CIFs, the default model,
the vendored 3Dmol.js."""
from __future__ import annotations

from importlib import resources

#: folder of the package data, relative to the package
RESOURCES = "resources"


def resource_path(*parts: str) -> str:
    """Path of a file or folder under ``crystalflow/resources`` (e.g. ``resource_path("js", "3Dmol-min.js")``)."""
    return str(resources.files("crystalflow").joinpath(RESOURCES, *parts))


def embedded_cif_dir() -> str:
    """Folder of the 63 public-domain COD CIFs shipped with the package (the default dataset).

    >>> import os
    >>> len([f for f in os.listdir(embedded_cif_dir()) if f.endswith(".cif")])
    63
    """
    return resource_path("cod")
