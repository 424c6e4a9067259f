"""Steps of workflow/rules/model.smk: train the demo model."""

from __future__ import annotations

from .core import recorded_settings, step


@step
def train_demo_model(cfg, input, output, params, wildcards, threads):
    from ..models.demo_training import train_demo

    train_demo(
        input.pairs,
        input.images,
        cfg,
        output.checkpoint,
        output.log_json,
        settings=recorded_settings(cfg, "train_demo_model"),
    )
