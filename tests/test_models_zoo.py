"""The models researchers use, as tiny random local stand-ins (no network): ViT-B/16 and ViT-L/14
patch geometries (14x14 and 16x16 grids at 224 px, width and depth shrunk), a CheXzero-style
OpenAI-format state dict, open_clip naming in ``load_model``, fast offline failures, and the example
configs' dry runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from matex.attribution import explain
from matex.errors import ConfigError
from matex.models.loading import PYTHON_NAMES, _resolve, load_model, load_model_from_config

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["left lower lobe consolidation", "small right pleural effusion"]
# every method with a single backward pass or none (the iterative ones are covered on the demo grid)
METHODS = ["matex", "raw_attention", "rollout", "gradcam", "chefer", "saliency", "legrad", "grad_eclip"]


def tiny_config(name: str, patch: int, tmp: Path) -> str:
    """Register an open_clip config ``name``: 224 px, patch ``patch``, width 64, 3 vision blocks."""
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 3, "width": 64, "head_width": 32, "patch_size": patch},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return name


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch, patch, grid", [("matex-tiny-ViT-B-16", 16, 14), ("matex-tiny-ViT-L-14", 14, 16)])
def test_patch_geometries_work_with_every_method(tmp_path, images, arch, patch, grid):
    model = load_model(tiny_config(arch, patch, tmp_path))  # open_clip naming, random weights
    assert model.meta["source"] == "hub" and model.meta["arch"] == arch and model.geometry.size == 224
    for method in METHODS:
        out = explain(model, images, TEXTS, method)
        assert out.image.shape == (2, 224, 224) and torch.isfinite(out.image).all(), method
        assert out.image.amax((1, 2)).min() == 1.0, method  # not a flat map
    from matex.attribution.wrapper import ForwardContext

    ctx = ForwardContext(model=model, images=images, tokens=model.tokenize(TEXTS), texts=TEXTS)
    assert ctx.trace().vision.attention[0].shape[-1] == grid * grid + 1


def test_open_clip_names_resolve_without_building():
    assert _resolve("ViT-B-32", None, None, PYTHON_NAMES)[:2] == ("hub", "ViT-B-32")
    assert _resolve("hf-hub:org/some-clip", None, None, PYTHON_NAMES)[:2] == ("hub", "hf-hub:org/some-clip")
    assert _resolve("hub", "ViT-B-16", None, PYTHON_NAMES)[:2] == ("hub", "ViT-B-16")  # config form
    with pytest.raises(ConfigError, match="argument model: 'ViT-Q-99' is none of"):
        _resolve("ViT-Q-99", None, None, PYTHON_NAMES)


def test_errors_name_the_argument_from_python_and_the_key_from_a_config(tmp_path):
    with pytest.raises(ConfigError, match="^argument checkpoint"):
        load_model("checkpoint")
    cfg = {"input": {"size": 224}, "model": {"source": "checkpoint", "checkpoint": None}}
    with pytest.raises(ConfigError, match="^config key model.checkpoint"):
        load_model_from_config(cfg)
    with pytest.raises(ConfigError, match="^config key model.source"):
        load_model_from_config({"input": {"size": 224}, "model": {"source": "ViT-B-32"}})


def test_demo_without_a_config_uses_the_demo_architecture():
    import yaml

    model = load_model("demo")
    assert model.meta["model_cfg"]["vision_cfg"]["patch_size"] == 32 and model.geometry.size == 224
    demo_cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["model"]["demo"]
    from matex.models.loading import DEMO_ARCH

    for key in ("embed_dim", "vision", "text"):
        assert DEMO_ARCH[key] == demo_cfg[key], f"DEMO_ARCH.{key} drifted from config.yaml model.demo.{key}"


# ----------------------------------------------------------------------------------------- offline
@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """A Hub endpoint nothing listens on and an empty cache."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    return hf


@pytest.mark.parametrize("name, pretrained", [("ViT-B-32", "openai"), ("hf-hub:someone/medical-clip", None)])
def test_offline_hub_fails_fast_naming_the_ways_out(unreachable_hub, name, pretrained):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_model(name, pretrained=pretrained)
    assert time.perf_counter() - t0 < 5.0
    msg = str(err.value)
    assert (
        "cannot be reached" in msg
        and "HF_HUB_OFFLINE=1" in msg
        and "local weights file" in msg
        and "load_model('demo')" in msg
    )
    assert msg.startswith("argument pretrained" if pretrained else "argument model")


def test_offline_env_fails_fast_too(unreachable_hub, monkeypatch):
    monkeypatch.setattr(unreachable_hub, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set"):
        load_model("ViT-B-32", pretrained="openai")
    assert time.perf_counter() - t0 < 5.0


def test_probe_fails_quickly_for_unknown_hosts_and_closed_ports():
    from matex.models.hub import hub_reachable

    t0 = time.perf_counter()
    assert not hub_reachable("https://hub.invalid", timeout=1.0)  # no DNS answer (.invalid is reserved)
    assert not hub_reachable("http://127.0.0.1:9", timeout=1.0)  # nothing listens
    assert not hub_reachable("not a url", timeout=1.0)
    assert time.perf_counter() - t0 < 3.0


# ------------------------------------------------------------------------------------------ CheXzero
def test_chexzero_style_openai_state_dict(tmp_path, images):
    """CheXzero ships ``torch.save(model.state_dict())`` of OpenAI's CLIP ViT-B/32: no config, QuickGELU."""
    torch.manual_seed(3)
    reference = open_clip.CLIP(
        embed_dim=64,
        quick_gelu=True,
        vision_cfg={"image_size": 224, "layers": 2, "width": 64, "head_width": 64, "patch_size": 32},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
    ).eval()
    path = tmp_path / "best_64_5e-05_original_22000_0.864.pt"
    torch.save(reference.state_dict(), path)
    model = load_model(str(path))
    assert model.meta["source"] == "checkpoint" and "openai-format" in model.meta["arch"]
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        expected = torch.nn.functional.cosine_similarity(reference.encode_image(images), reference.encode_text(tokens))
    torch.testing.assert_close(model.similarity(images, tokens), expected, atol=1e-5, rtol=0)
    for method in ("matex", "legrad", "grad_eclip"):
        out = explain(model, images, TEXTS, method)
        assert out.image.shape == (2, 224, 224) and out.text is not None or method == "legrad"


# --------------------------------------------------------------------------------- example configs
@pytest.mark.parametrize("example", ["biomedclip", "chexzero"])
def test_example_configs_dry_run(tmp_path, example):
    """Each example merged onto config/config.yaml is valid and its DAG builds (CheXzero's checkpoint
    file is an input of the DAG, so the dry run points it at a stand-in file)."""
    import yaml

    from matex.config import deep_update, validate_config

    override = yaml.safe_load((ROOT / "config" / f"{example}.yaml").read_text())
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    validate_config(deep_update(base, override))
    if override["model"].get("checkpoint"):
        stand_in = tmp_path / "chexzero.pt"
        stand_in.write_bytes(b"stand-in")
        override["model"]["checkpoint"] = str(stand_in)
    path = tmp_path / f"{example}.yaml"
    path.write_text(yaml.safe_dump(override))
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(path), "--cores", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "attribute" in res.stdout and "train_demo_model" not in res.stdout


# ----------------------------------------------------------------------------------- BiomedCLIP-style
WORDS = ["left", "right", "lower", "upper", "lobe", "small", "pleural", "effusion", "consolidation", "opacity"]
TIMM_TINY = "matex_test_vit_b16_tiny"


def tiny_biomedclip_dir(root: Path) -> Path:
    """An open_clip ``hf-hub``-style folder: open_clip_config.json (timm ViT-B/16 geometry tower + local
    Hugging Face BERT text tower, BiomedCLIP's pooler and projection kinds) and random weights."""
    transformers = pytest.importorskip("transformers")
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    if TIMM_TINY not in timm.list_models():

        @register_model
        def matex_test_vit_b16_tiny(pretrained: bool = False, **kwargs):  # noqa: ARG001 - timm's signature
            kwargs = {
                k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
            }
            vit = VisionTransformer(
                **{"img_size": 224, "patch_size": 16, "embed_dim": 64, "depth": 3, "num_heads": 2, **kwargs}
            )
            vit.pretrained_cfg = vit.default_cfg = {}
            return vit

    bert = root / "bert"
    bert.mkdir(parents=True)
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS) + "\n")
    from tokenizers import BertWordPieceTokenizer

    wordpiece = BertWordPieceTokenizer(str(bert / "vocab.txt"), lowercase=True)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=wordpiece._tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    tok = root / "tokenizer"  # its own folder: next to a BERT config.json, AutoTokenizer would
    tokenizer.save_pretrained(str(tok))  # rebuild a BertTokenizer from the vocabulary instead
    transformers.BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    ).save_pretrained(str(bert))
    folder = root / "tiny-biomedclip"
    folder.mkdir()
    tokenizer.save_pretrained(str(folder))  # open_clip reads a local-dir model's tokenizer from the folder
    config = {
        "model_cfg": {
            "embed_dim": 32,
            "vision_cfg": {
                "timm_model_name": TIMM_TINY,
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": 224,
            },
            "text_cfg": {
                "hf_model_name": str(bert),
                "hf_tokenizer_name": str(tok),
                "hf_model_pretrained": False,
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": 24,
            },
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(11)
    reference = open_clip.create_model(f"local-dir:{folder}", pretrained_hf=False)  # no BERT weights to read yet
    torch.save(reference.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def biomedclip(tmp_path_factory):
    folder = tiny_biomedclip_dir(tmp_path_factory.mktemp("biomedclip"))
    return load_model(f"local-dir:{folder}"), folder


def test_biomedclip_style_model_loads_its_weights(biomedclip, images):
    model, folder = biomedclip
    reference = open_clip.create_model(f"local-dir:{folder}").eval()  # reads the same weights file
    tokens = model.tokenize(TEXTS)
    with torch.no_grad():
        expected = torch.nn.functional.cosine_similarity(reference.encode_image(images), reference.encode_text(tokens))
    torch.testing.assert_close(model.similarity(images, tokens), expected, atol=1e-5, rtol=0)
    assert type(model.clip.visual).__name__ == "TimmModel" and type(model.clip).__name__ == "CustomTextCLIP"


def test_biomedclip_style_trace_equals_the_model(biomedclip, images):
    """The recording attention of the timm and BERT adapters computes what the model computes."""
    from matex.attribution.wrapper import ForwardContext

    model, _ = biomedclip
    ctx = ForwardContext(model=model, images=images, tokens=model.tokenize(TEXTS), texts=TEXTS)
    tr = ctx.trace(text=True)
    torch.testing.assert_close(tr.similarity, model.similarity(images, ctx.tokens), atol=1e-5, rtol=0)
    assert len(tr.vision.attention) == 3 and tr.vision.attention[0].shape[-1] == 14 * 14 + 1
    assert len(tr.text.attention) == 2
    query, last = ctx.text_positions()
    assert query.tolist() == [0, 0]  # BiomedCLIP pools [CLS]
    sep = model.tokenizer.tokenizer.sep_token_id
    assert all(int(ctx.tokens[i, j]) == sep for i, j in enumerate(last.tolist()))
    # padding keys get no attention
    pad = ctx.tokens == 0
    assert float(tr.text.attention[0].masked_select(pad[:, None, None, :].expand_as(tr.text.attention[0])).max()) < 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_biomedclip_style_maps_for_every_method(biomedclip, images, method):
    model, _ = biomedclip
    out = explain(model, images, TEXTS, method)
    assert out.image.shape == (2, 224, 224) and torch.isfinite(out.image).all()
    assert out.image.amax((1, 2)).min() == 1.0
    if method in ("matex", "grad_eclip"):  # the methods with a text side
        assert out.text is not None
        for scores, ids in zip(out.text, model.tokenize(TEXTS)):
            n_real = int((ids != 0).sum())
            assert scores.shape == (n_real,) and np.isfinite(scores).all() and scores.max() > 0


def test_biomedclip_style_from_an_offline_hub_cache(tmp_path, monkeypatch, images):
    """``hf-hub:`` names resolve from a filled Hugging Face cache with HF_HUB_OFFLINE and no network."""
    import huggingface_hub.constants as hf

    folder = tiny_biomedclip_dir(tmp_path / "src")
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = cache / "models--matex--tiny-biomedclip" / "snapshots" / commit
    snap.mkdir(parents=True)
    for name in ("open_clip_config.json", "open_clip_pytorch_model.bin"):
        (snap / name).write_bytes((folder / name).read_bytes())
    (cache / "models--matex--tiny-biomedclip" / "refs").mkdir()
    (cache / "models--matex--tiny-biomedclip" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "ENDPOINT", "http://127.0.0.1:9")
    model = load_model("hf-hub:matex/tiny-biomedclip")
    local = load_model(f"local-dir:{folder}")
    tokens = model.tokenize(TEXTS)
    torch.testing.assert_close(model.similarity(images, tokens), local.similarity(images, tokens), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "method, params",
    [
        ("m2ib", {"steps": 1, "n_noise": 1}),
        ("rise", {"n_masks": 8, "batch": 8}),
        ("m2ib_token", {"steps": 1, "n_noise": 1}),
        ("matex_noprior", {}),
        ("grad_input", {}),
        ("prior_only", {}),
        ("random", {}),
    ],
)
def test_biomedclip_style_iterative_and_control_methods(biomedclip, images, method, params):
    model, _ = biomedclip
    out = explain(model, images, TEXTS, method, **params)
    assert out.image.shape == (2, 224, 224) and torch.isfinite(out.image).all()


def test_unknown_architecture_names_the_architecture_key_even_with_weights_given():
    with pytest.raises(ConfigError, match="^config key model.arch: unknown open_clip architecture 'ViT-Q-99'"):
        load_model_from_config(
            {"input": {"size": 224}, "model": {"source": "hub", "arch": "ViT-Q-99", "pretrained": "openai"}}
        )


def test_a_matex_checkpoint_keeps_its_context_length_whatever_arch_the_config_names(tmp_path, make_tiny_demo):
    """A config's model.arch (ViT-B-32 by default, context 77) must not replace the checkpoint's own
    tokenizer: a demo-architecture checkpoint with context 32 tokenises to 32."""
    from matex.models.loading import demo_model_cfg, load_model, save_checkpoint

    demo = make_tiny_demo(layers=1, context_length=32)  # tests/conftest.py; ViT-B-32's context is 77
    path = tmp_path / "tiny.pt"
    save_checkpoint(load_model("demo", demo=demo, seed=0), path, demo_model_cfg(demo, 224), {"seed": 0})
    model = load_model("checkpoint", checkpoint=str(path), arch="ViT-B-32")
    assert model.tokenize(["left basal effusion"]).shape == (1, 32)
