"""``python -m matex.bench``: the attribution methods' benchmark (:mod:`matex.bench.methods`)."""

import sys

from .methods import main

sys.argv[0] = "python -m matex.bench"  # the usage line's name (argparse reads it), not "__main__.py"
main()
