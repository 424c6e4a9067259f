"""Model loading: demo config geometry, checkpoint round trips, open_clip raw state dicts and hub
loads from a local file, and clear errors for bad files."""

import copy

import numpy as np
import pytest
import torch

from matex.data.transforms import InputGeometry
from matex.errors import ConfigError
from matex.io import file_sha256
from matex.models.loading import demo_model_cfg, load_model, load_model_from_config, resolve_device, save_checkpoint

GEOMETRY = InputGeometry(56)
TEXTS = ["left upper opacity", "right lower effusion", "cardiomegaly"]
TINY_ARCH = "matex-test-tiny-vit"
TINY_ARCH_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 56, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _inputs(model, n=3, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (n, 56, 56), dtype=np.uint8)
    return model.preprocess(images), model.tokenize(TEXTS[:n])


def _similarity(model):
    return model.similarity(*_inputs(model))


@pytest.fixture
def tiny56(make_tiny_demo):
    """The tiny demo config (tests/conftest.py) at 56 px: patch 8, the 7x7 grid."""
    return make_tiny_demo(input_size=56)


@pytest.fixture
def tiny_arch(monkeypatch):
    import open_clip

    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY_ARCH, copy.deepcopy(TINY_ARCH_CFG))
    return TINY_ARCH


def test_demo_model_has_vit_b32_grid_and_scores_pairs(tiny56):
    model = load_model("demo", demo=tiny56, geometry=GEOMETRY)
    assert tuple(model.clip.visual.grid_size) == (7, 7)
    assert not model.clip.training
    assert model.tokenize(TEXTS).shape == (3, 16)
    sim = _similarity(model)
    assert sim.shape == (3,) and torch.isfinite(sim).all() and (sim.abs() <= 1 + 1e-5).all()
    assert model.meta["source"] == "demo" and model.meta["model_cfg"]["vision_cfg"]["patch_size"] == 8


def test_default_demo_config_is_7x7_at_224():
    cfg = demo_model_cfg(
        {
            "embed_dim": 128,
            "vision": {"layers": 6, "width": 192, "heads": 4, "patch_size": 32},
            "text": {"layers": 3, "width": 128, "heads": 4, "context_length": 32},
        },
        224,
    )
    assert cfg["vision_cfg"]["image_size"] // cfg["vision_cfg"]["patch_size"] == 7
    assert cfg["vision_cfg"]["head_width"] == 48 and cfg["text_cfg"]["vocab_size"] == 49408


@pytest.mark.parametrize("patch", [16, 9])
def test_bad_patch_size_names_the_key(patch, tiny56):
    demo = copy.deepcopy(tiny56)
    demo["vision"]["patch_size"] = patch
    with pytest.raises(ConfigError, match=r"argument demo\.vision\.patch_size"):
        load_model("demo", demo=demo, geometry=GEOMETRY)


def test_demo_seed_controls_initialisation(tiny56):
    a = load_model("demo", demo=tiny56, geometry=GEOMETRY, seed=1)
    b = load_model("demo", demo=tiny56, geometry=GEOMETRY, seed=1)
    c = load_model("demo", demo=tiny56, geometry=GEOMETRY, seed=2)
    assert torch.equal(_similarity(a), _similarity(b))
    assert not torch.equal(_similarity(a), _similarity(c))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, tiny56):
    model = load_model("demo", demo=tiny56, geometry=GEOMETRY, seed=3)
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(model, path, demo_model_cfg(tiny56, 56), {"config_hash": "abc", "history": [{"epoch": 1}]})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    for loaded in (
        load_model("checkpoint", checkpoint=str(path), geometry=GEOMETRY),
        load_model("demo", demo=tiny56, checkpoint=str(path), geometry=GEOMETRY, seed=99),
    ):
        assert torch.equal(_similarity(loaded), _similarity(model))
        assert loaded.meta["checkpoint_sha256"] == file_sha256(path)
        assert loaded.meta["trained"]["config_hash"] == "abc" and "history" not in loaded.meta["trained"]


def test_demo_checkpoint_from_other_config_is_refused(tmp_path, tiny56):
    model = load_model("demo", demo=tiny56, geometry=GEOMETRY)
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, demo_model_cfg(tiny56, 56), {})
    other = copy.deepcopy(tiny56)
    other["vision"]["layers"] = 3
    with pytest.raises(ConfigError, match="model.pt"):
        load_model("demo", demo=other, checkpoint=str(path), geometry=GEOMETRY)


def test_open_clip_raw_state_dict_for_named_arch(tmp_path, tiny_arch):
    import open_clip

    torch.manual_seed(5)
    reference = open_clip.create_model(tiny_arch, pretrained=None).eval()
    path = tmp_path / "openclip_ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = load_model("checkpoint", arch=tiny_arch, checkpoint=str(path))
    assert model.geometry.size == 56
    images, tokens = _inputs(model)
    expected = torch.nn.functional.cosine_similarity(reference.encode_image(images), reference.encode_text(tokens))
    assert torch.allclose(model.similarity(images, tokens), expected, atol=1e-6)
    assert model.meta["checkpoint_sha256"] == file_sha256(path) and model.meta["arch"] == tiny_arch


def test_hub_load_from_local_pretrained_file(tmp_path, tiny_arch):
    import open_clip

    torch.manual_seed(6)
    reference = open_clip.create_model(tiny_arch, pretrained=None).eval()
    path = tmp_path / "weights.pt"
    torch.save(reference.state_dict(), path)
    model = load_model("hub", arch=tiny_arch, pretrained=str(path))
    images, tokens = _inputs(model)
    expected = torch.nn.functional.cosine_similarity(reference.encode_image(images), reference.encode_text(tokens))
    assert torch.allclose(model.similarity(images, tokens), expected, atol=1e-6)
    assert model.meta["pretrained"] == str(path) and model.meta["checkpoint_sha256"] == file_sha256(path)
    assert tuple(model.mean) == pytest.approx(open_clip.OPENAI_DATASET_MEAN)


def test_hub_errors_name_the_argument(tiny_arch):
    with pytest.raises(ConfigError, match="argument pretrained"):
        load_model("hub", arch=tiny_arch, pretrained="/no/such/weights.pt")
    with pytest.raises(ConfigError, match="argument geometry"):
        load_model("hub", arch=tiny_arch, geometry=InputGeometry(224))
    with pytest.raises(ConfigError, match="argument model"):
        load_model("onnx")


def test_wrong_files_give_clear_errors(tmp_path, tiny_arch, tiny56):
    missing = tmp_path / "absent.pt"
    with pytest.raises(ConfigError, match="absent.pt"):
        load_model("checkpoint", arch=tiny_arch, checkpoint=str(missing))
    text_file = tmp_path / "notes.pt"
    text_file.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="notes.pt"):
        load_model("checkpoint", arch=tiny_arch, checkpoint=str(text_file))
    # a demo model's weights under a different architecture: keys and shapes do not match
    demo = load_model("demo", demo=tiny56, geometry=GEOMETRY)
    foreign = tmp_path / "foreign.pt"
    torch.save(demo.clip.state_dict(), foreign)
    with pytest.raises(ConfigError, match=r"foreign\.pt.*(unexpected keys|shape mismatches).*visual\.transformer"):
        load_model("checkpoint", arch=tiny_arch, checkpoint=str(foreign))
    with pytest.raises(ConfigError, match="argument arch"):
        load_model("checkpoint", checkpoint=str(foreign))


def test_load_model_from_config_uses_input_section(tmp_path, tiny56):
    cfg = {
        "seed": 4,
        "input": {"size": 56, "mode": "letterbox", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "model": {
            "name": "tiny",
            "source": "demo",
            "arch": "ViT-B-32",
            "pretrained": None,
            "checkpoint": None,
            "demo": tiny56,
        },
    }
    model = load_model_from_config(cfg)
    assert model.geometry == InputGeometry(56, "letterbox") and model.name == "tiny"
    assert tuple(model.mean) == (0.5, 0.5, 0.5) and tuple(model.std) == (0.25, 0.25, 0.25)
    assert torch.equal(
        _similarity(model),
        _similarity(load_model("demo", demo=tiny56, geometry=GEOMETRY, seed=4, mean=[0.5] * 3, std=[0.25] * 3)),
    )


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError):
        resolve_device("tpu")


def test_checkpoints_of_the_same_model_are_byte_identical(tmp_path, tiny56):
    """The checkpoint's sha256 goes into every artifact's metadata, so saving must be deterministic."""
    model = load_model("demo", demo=tiny56, geometry=GEOMETRY)
    cfg = demo_model_cfg(tiny56, 56)
    save_checkpoint(model, tmp_path / "a.pt", cfg, {"seed": 0})
    save_checkpoint(model, tmp_path / "b.pt", cfg, {"seed": 0})
    assert file_sha256(tmp_path / "a.pt") == file_sha256(tmp_path / "b.pt")
