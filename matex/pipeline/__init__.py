"""Entry points of the Snakemake rules: one module per rule file (``workflow/rules/<name>.smk`` ->
``matex.pipeline.<name>``), one function per rule, called by ``workflow/scripts/step.py``.

Rules stay thin (inputs, outputs, params); every computation happens here or deeper in the package.
Each step logs to the rule's ``log:`` file (its error and traceback too) and writes its artifacts atomically.
"""

from __future__ import annotations

from . import attribution, data, evaluation, figures, model, provenance, roar, seed_agreement  # noqa: F401  (register the steps)
from .core import STEPS, run_step

__all__ = ["STEPS", "run_step"]
