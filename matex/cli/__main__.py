"""``python -m matex.cli ...``: the same as the ``matex`` command."""

import sys

from .parser import main

sys.argv[0] = "matex"  # the usage line's name (argparse reads it), not "__main__.py"
sys.exit(main())
