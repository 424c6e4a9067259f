"""The shared fixtures of tests/conftest.py give what they promise, and show how short a new test is."""

from __future__ import annotations

import numpy as np
import torch

from matex.attribution import explain


def test_tiny_model_has_the_paper_grid_at_either_size(tiny_model, make_tiny_model):
    assert tuple(tiny_model.clip.visual.grid_size) == (7, 7) and tiny_model.geometry.size == 224
    small = make_tiny_model(input_size=56, layers=1, seed=1)
    assert tuple(small.clip.visual.grid_size) == (7, 7) and small.geometry.size == 56
    assert len(small.clip.visual.transformer.resblocks) == 1


def test_tiny_dataset_is_prepared_like_the_pipeline_and_read_only(tiny_dataset):
    pairs, images = tiny_dataset.pairs, tiny_dataset.images
    assert images.shape == (len(pairs), 224, 224) and images.dtype == np.uint8
    assert set(pairs["split"]) == {"train", "val"} and pairs["phrase"].str.len().gt(0).all()
    assert not images.flags.writeable  # no test can change another's data


def test_a_map_of_the_tiny_dataset_in_a_few_lines(tiny_model, tiny_dataset):
    pairs = tiny_dataset.pairs.head(2)
    images = tiny_model.preprocess(np.array(tiny_dataset.images[:2]))  # a writable copy
    out = explain(tiny_model, images, list(pairs["phrase"]), "saliency")
    assert out.image.shape == (2, 224, 224) and torch.isfinite(out.image).all()
    assert out.image.amin() >= 0 and out.image.amax() <= 1 and out.image.amax() > out.image.amin()
