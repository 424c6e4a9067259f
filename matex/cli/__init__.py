"""The ``matex`` command (console script ``matex = matex.cli:main``; also ``python -m matex.cli``).

``parser``: argument parsing and dispatch, one function per command; ``explain``: the work of
``explain``, ``methods`` and ``check-config`` (it never imports the parser). The other commands call
:mod:`matex.bench`, :mod:`matex.data.download` and :mod:`matex.pipeline.records`. Importing this
package, ``matex methods`` and ``--help`` do not import torch.
"""

from __future__ import annotations

from .parser import main

__all__ = ["main"]
