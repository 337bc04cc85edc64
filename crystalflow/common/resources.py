"""Files shipped inside the package (``crystalflow/resources/``): the embedded COD CIFs, the default model,
the search model, the search's ranker, the vendored 3Dmol.js."""
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


#: folder of the model shipped for ``predict --mode model`` (CrystalFlow-LERP), under resources
DEFAULT_MODEL = ("models", "default")


def default_model_dir() -> str:
    """Folder of the pretrained model shipped with the package (``checkpoint.pt`` + ``config.json``)."""
    return resource_path(*DEFAULT_MODEL)


#: folder of the search's refinement model (CrystalFlow-Rigid trained on the 'melt' noise), under resources
SEARCH_MODEL = ("models", "search")


def search_model_dir() -> str:
    """Folder of the model :mod:`crystalflow.search.refine` uses by default (``checkpoint.pt`` + ``config.json``
    + its model card ``README.md``)."""
    return resource_path(*SEARCH_MODEL)


#: the learned ranking of searched crystals (:mod:`crystalflow.search.ranking`), under resources
RANKER = ("models", "ranker", "ranker.json")


def ranker_path() -> str:
    """Path of the ranker :func:`crystalflow.search.ranking.load_ranker` loads by default (its model card is the
    ``README.md`` beside it)."""
    return resource_path(*RANKER)
