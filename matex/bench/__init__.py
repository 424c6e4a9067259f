"""Benchmarks, each run on its own (none is part of the pipeline):

python -m matex.bench        (= ``matex bench``) every attribution method's speed and peak memory
                             at several batch sizes: ``methods``
python -m matex.bench.maps   time and memory to read one pair's maps from a large run: ``maps``
"""

from __future__ import annotations

from .methods import main

__all__ = ["main"]
