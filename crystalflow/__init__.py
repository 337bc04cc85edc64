"""crystalflow: learn molecular crystallization with equivariant flow matching (CrystalFlow and beyond)."""
__version__ = "0.1.0"

from importlib import resources as _resources


def embedded_cif_dir() -> str:
    """Folder of the 63 public-domain COD CIFs shipped with the package (the default dataset)."""
    return str(_resources.files("crystalflow") / "data" / "cod")
