"""Checkpoint files are read in one place (matex.models.checkpoints): what a file holds is told apart
there, and loading builds models from that answer."""

from __future__ import annotations

import pytest
import torch

from matex.errors import ConfigError
from matex.models.checkpoints import load_weights, read_checkpoint, save_checkpoint
from matex.models.loading import demo_model_cfg, load_model


def test_a_matex_checkpoint_is_told_apart_with_its_config_and_training_record(tmp_path, tiny_model, tiny_demo):
    path = tmp_path / "model.pt"
    save_checkpoint(tiny_model, path, demo_model_cfg(tiny_demo, 224), {"seed": 3, "history": [{"epoch": 1}]})
    ckpt = read_checkpoint(path)
    assert ckpt.kind == "matex" and ckpt.model_cfg == demo_model_cfg(tiny_demo, 224)
    assert ckpt.trained["seed"] == 3 and "history" not in ckpt.trained and "history" in ckpt.meta
    assert ckpt.state_dict.keys() == tiny_model.clip.state_dict().keys()
    loaded = load_model("checkpoint", checkpoint=str(path))
    assert loaded.meta["trained"]["seed"] == 3
    for key, value in tiny_model.clip.state_dict().items():
        assert torch.equal(loaded.clip.state_dict()[key], value), key


def test_plain_state_dicts_are_told_apart_from_openai_format(tmp_path, tiny_model):
    state = tiny_model.clip.state_dict()
    openai_like = tmp_path / "openai.pt"  # open_clip's own key names, no config: OpenAI's format
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, openai_like)
    assert read_checkpoint(openai_like).kind == "openai"
    assert read_checkpoint(openai_like).state_dict.keys() == state.keys()  # DataParallel prefix gone
    other = tmp_path / "other.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("visual.")}, other)
    ckpt = read_checkpoint(other)
    assert ckpt.kind == "state_dict" and ckpt.model_cfg is None and ckpt.meta is None
    with pytest.raises(ConfigError, match=r"other\.pt does not match the model: \d+ missing keys: visual\."):
        load_weights(tiny_model.clip, ckpt)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "checkpoint file not found"),
        (b"not a checkpoint", "could not be read as a torch/safetensors checkpoint"),
        ({"weights": [1, 2, 3]}, "holds no state dict of tensors"),
    ],
)
def test_unreadable_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(ConfigError, match=message) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)
