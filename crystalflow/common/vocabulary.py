"""The names and defaults shared by the command line and the library, each defined once.

Pure constants (no numpy, no torch), so the argument parser is built without importing the library;
the modules that implement each choice import its names from here.
"""
from __future__ import annotations

#: learned methods: CrystalFlow-LERP, CrystalSDE-VE / -VP, GNN-MD (one step), CrystalFlow-Rigid
METHODS = ("lerp", "ve", "vp", "gnn-md", "rigid")
#: non-learned predictors of a dataset split
BASELINES = ("identity", "packmol")

#: the splits of a dataset
SPLITS = ("train", "valid", "test")
#: what selects every split at once
ALL_SPLITS = "all"
#: a split argument: one split or all of them
SPLIT_CHOICES = (*SPLITS, ALL_SPLITS)
#: what shares a split when a build assigns them: all clusters of one crystal, or each cluster alone
SPLIT_BY = ("crystal", "cluster")
DEFAULT_SPLIT_BY = "crystal"

#: names of the noise presets (defined in :mod:`crystalflow.data.noise`)
NOISE_PRESET_NAMES = ("none", "thermal", "melt", "liquid", "solution", "symmetric")
DEFAULT_NOISE_PRESET = "solution"
#: largest molecule a dataset or a prediction takes, hydrogens included
DEFAULT_MAX_ATOMS = 200
#: formats ``crystalflow export`` writes
EXPORT_FORMATS = ("cluster17-csv",)

#: ODE solvers of the flow; the fixed-step ones take DEFAULT_STEPS steps unless told otherwise
SOLVERS = ("euler", "rk4", "dopri5")
DEFAULT_SOLVER = "euler"
DEFAULT_STEPS = 20
#: clusters per batch when sampling a dataset
DEFAULT_BATCH_CLUSTERS = 4

#: weights of a training run to load: EMA of the last checkpoint, EMA of best.pt, raw of the last checkpoint
WEIGHTS = ("ema", "best", "last")
DEFAULT_WEIGHTS = "ema"
#: weights an inference-only export keeps
EXPORT_WEIGHTS = ("best", "ema")
DEFAULT_EXPORT_WEIGHTS = "best"

#: candidates ``predict`` proposes for a molecule
DEFAULT_CANDIDATES = 8
#: crystal search of ``predict``: random crystals generated and relaxed at most, time budget (s; for a small
#: molecule the budget ends the search first: about 0.5-1 s per crystal and core), crystals kept (top K)
DEFAULT_SEARCH_CANDIDATES, DEFAULT_SEARCH_SECONDS, DEFAULT_TOP = 2000, 300.0, 10
#: orders of the searched crystals (``predict --rank``): lattice energy, or the learned ranker
#: (:mod:`crystalflow.search.ranking`); the default is the better on held-out molecules (docs/search.md)
SEARCH_RANKINGS = ("energy", "learned")
DEFAULT_SEARCH_RANKING = "energy"
#: atomic charges of the force field (:mod:`crystalflow.physics.forcefield`, ``predict --charges``):
#: Gasteiger-Marsili or MMFF94 partial charges, both from RDKit; the default measured better (docs/physics.md)
CHARGE_MODELS = ("gasteiger", "mmff")
DEFAULT_CHARGE_MODEL = "mmff"
#: processes of the crystal search (``predict --workers``)
DEFAULT_SEARCH_WORKERS = 1
#: noise variants of the benchmark: its Tables 1 (plain), 2 (inversion) and 3 (melt)
BENCHMARK_VARIANTS = ("plain", "inversion", "melt")
#: training epochs of the demo model
DEMO_EPOCHS = 4

#: peak FWHM of simulated powder patterns (degrees 2θ; defined here for the command line, used by structure.pxrd)
DEFAULT_FWHM = 0.1
#: half-width l of de Gelder's triangular weight in the PXRD similarity (degrees 2θ)
DEFAULT_SIMILARITY_WIDTH = 1.0

#: which clusters of a PRED_DIR ``crystalflow reconstruct`` turns into crystals
RECONSTRUCT_SOURCES = ("pred", "truth", "input")

#: how ``crystalflow predict`` makes candidates: the crystal-structure search or the flow model
PREDICT_MODES = ("search", "model")
