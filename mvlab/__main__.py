"""``python -m mvlab``: the ``mvlab`` command without its console script (a copied tree, a
machine where the package is on PYTHONPATH but not installed)."""
import sys

from mvlab.cli import main

sys.exit(main())
