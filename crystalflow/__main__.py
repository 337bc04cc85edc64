"""python -m crystalflow: the command-line interface."""
import sys

from crystalflow.cli import main

sys.exit(main())
