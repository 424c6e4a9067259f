"""Concurrency and state (issue 25.7-8): two ``matex explain`` processes on one output, threads
sharing one model, the model left exactly as it was found, memory stable over many calls."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from matex.config import deep_update, load_config
from matex.models.loading import demo_model_cfg, load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY_DEMO = {
    "embed_dim": 32,
    "vision": {"layers": 2, "width": 32, "heads": 2, "patch_size": 32, "mlp_ratio": 2.0, "stem_channels": 0},
    "text": {"layers": 1, "width": 32, "heads": 2, "context_length": 16},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder laid out like a checkout after ``./run.sh pipeline``, with a tiny untrained demo model."""
    root = tmp_path_factory.mktemp("project")
    cfg = deep_update(
        load_config(ROOT / "config" / "config.yaml"), {"results_dir": "results", "model": {"demo": TINY_DEMO}}
    )
    (root / "config").mkdir()
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    model = load_model("demo", demo=TINY_DEMO, seed=0)
    save_checkpoint(
        model, root / "results" / "synthetic" / "demo" / "model.pt", demo_model_cfg(TINY_DEMO, 224), {"seed": 0}
    )
    shutil.copy(ROOT / "docs" / "img" / "example_chest.jpg", root / "scan.jpg")
    return root


@pytest.mark.slow
def test_two_explain_processes_on_the_same_output_both_succeed(project):
    """Ten rounds of two ``matex explain`` processes started together with the same ``-o``: both
    exit 0 every time, the output is one complete PNG, no temporary file is left, and a hidden file
    of the user's beside it (an editor's swap file) survives."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    swap = project / ".map.png.swp"
    swap.write_bytes(b"editor state")
    cmd = [sys.executable, "-m", "matex.cli", "explain", "scan.jpg", "left apical pneumothorax", "-o", "map.png"]
    for round_ in range(10):
        procs = [
            subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, f"round {round_}: {err[-2000:]}"
        with Image.open(project / "map.png") as im:
            im.load()  # a truncated file fails here
            assert im.format == "PNG" and im.size == (448, 448)
        assert sorted(p.name for p in project.glob(".map.png*")) == [".map.png.swp"], round_
    assert swap.read_bytes() == b"editor state"


# ------------------------------------------------------------------ one model shared by many calls
SIZE = 56
TEXTS = ["small left basal pleural effusion", "right upper lobe consolidation"]


def tiny_model(seed: int = 0):
    import open_clip
    import torch

    from matex.data.transforms import InputGeometry
    from matex.models.base import MatexModel

    torch.manual_seed(seed)
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=dict(image_size=SIZE, patch_size=8, width=32, layers=2, head_width=16),
        text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1),
    ).eval()
    return MatexModel(clip, open_clip.tokenizer.SimpleTokenizer(context_length=16), InputGeometry(SIZE))


def tiny_images(n: int = 2, seed: int = 0):
    import torch

    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def forward_functions(clip) -> dict:
    """Each submodule's ``forward`` / ``attention`` as bound (an instance override shows up here)."""
    return {
        (name, attr): getattr(m, attr).__func__
        for name, m in clip.named_modules()
        for attr in ("forward", "attention")
        if hasattr(getattr(m, attr, None), "__func__")
    }


def test_a_call_that_raises_leaves_the_model_as_it_found_it(monkeypatch):
    """Issue 25.7: a method raising while the towers are patched and hooked: afterwards every
    module has its own forward/attention functions, no instance attribute or hook added, and its own
    training flag (a mixed train/eval state included)."""
    import matex.attribution.registry as registry
    from matex.attribution import explain
    from matex.attribution.recording import module_state
    from matex.attribution.registry import ExplainOutput

    model = tiny_model()
    model.clip.train()
    model.clip.visual.transformer.resblocks[0].eval()  # a mixed state must come back as it was
    before, functions = module_state(model.clip), forward_functions(model.clip)
    seen: dict = {}

    registry._load_methods()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register("raise_midway")
    def raise_midway(ctx) -> ExplainOutput:
        with ctx.recorded_pass(text=True):
            seen["during"] = module_state(ctx.clip)
            raise RuntimeError("raised inside a method")

    with pytest.raises(RuntimeError, match="raised inside a method"):
        explain(model, tiny_images(), TEXTS, "raise_midway")
    assert seen["during"] != before  # the test is not vacuous: the call did patch the model
    assert module_state(model.clip) == before
    assert forward_functions(model.clip) == functions
    with pytest.raises(RuntimeError):  # the lock was released: a second call gets in (and raises)
        explain(model, tiny_images(), TEXTS, "raise_midway")
    assert module_state(model.clip) == before


@pytest.mark.parametrize("method", ["matex", "gradcam", "legrad"])
def test_threads_sharing_one_model_get_the_serial_maps(method):
    """Issue 25.7: six threads calling ``explain`` on one model at once get exactly the maps of the
    same calls made one after another, and the model is left as it was."""
    from concurrent.futures import ThreadPoolExecutor

    from matex.attribution import explain
    from matex.attribution.recording import module_state

    model = tiny_model()
    before = module_state(model.clip)
    jobs = [(tiny_images(2, seed=i), TEXTS[::-1] if i % 2 else TEXTS) for i in range(12)]
    serial = [explain(model, x, t, method).image.numpy() for x, t in jobs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        threaded = list(pool.map(lambda job: explain(model, *job, method).image.numpy(), jobs))
    for i, (a, b) in enumerate(zip(serial, threaded)):
        np.testing.assert_array_equal(a, b, err_msg=f"job {i}")
    assert module_state(model.clip) == before


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the resident size from /proc")
def test_memory_is_stable_over_1000_calls():
    """Issue 25.7: 1000 ``explain`` calls on one tiny model: the number of live Python objects does
    not grow with the calls (a leak of one object per call would add 1000) and the resident size
    grows by less than 32 MiB (one call's maps and traces are ~0.1 MiB here, so a call that kept its
    graph or trace alive would add far more)."""
    import gc

    from matex.attribution import explain

    model = tiny_model()
    x = tiny_images()
    for _ in range(50):  # warm-up: caches, allocator pools, lazily built tables
        explain(model, x, TEXTS, "matex")
    gc.collect()
    objects, rss = len(gc.get_objects()), _rss_bytes()
    for _ in range(1000):
        explain(model, x, TEXTS, "matex")
    gc.collect()
    grown_objects, grown_rss = len(gc.get_objects()) - objects, _rss_bytes() - rss
    assert grown_objects < 200, f"{grown_objects} more live objects after 1000 calls"
    assert grown_rss < 32 * 2**20, f"resident size grew by {grown_rss / 2**20:.1f} MiB over 1000 calls"
