import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run on 2 shared cores: keep torch to one thread and deterministic."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- tiny demo models and a tiny dataset, shared so that a new test is a few lines ---------------------


def _tiny_demo(*, layers: int = 2, input_size: int = 224, context_length: int = 16, mlp_ratio: float = 2.0) -> dict:
    """``model.demo`` of a tiny demo CLIP (width 32, 2 heads, one text layer, no convolutional stem) with
    the paper's 7x7 patch grid at ``input_size`` (224 -> patch 32, 56 -> patch 8)."""
    return {
        "embed_dim": 32,
        "vision": {
            "layers": layers,
            "width": 32,
            "heads": 2,
            "patch_size": input_size // 7,
            "mlp_ratio": mlp_ratio,
            "stem_channels": 0,
        },
        "text": {"layers": 1, "width": 32, "heads": 2, "context_length": context_length},
    }


def _tiny_model(*, layers: int = 2, input_size: int = 224, context_length: int = 16, seed: int = 0, **kwargs):
    """A random tiny demo model (:func:`matex.models.loading.load_model` ``kwargs``: mean, std, checkpoint...)."""
    from matex.data.transforms import InputGeometry
    from matex.models.loading import load_model

    demo = _tiny_demo(layers=layers, input_size=input_size, context_length=context_length)
    return load_model("demo", demo=demo, geometry=InputGeometry(input_size), seed=seed, **kwargs)


@pytest.fixture(scope="session")
def make_tiny_demo():
    """Factory: ``make_tiny_demo(layers=2, input_size=224, context_length=16)`` -> a fresh ``model.demo`` dict."""
    return _tiny_demo


@pytest.fixture
def tiny_demo() -> dict:
    """The default tiny ``model.demo`` dict (2 vision layers, 224 px), a fresh copy for each test."""
    return _tiny_demo()


@pytest.fixture(scope="session")
def make_tiny_model():
    """Factory: ``make_tiny_model(layers=2, input_size=224, context_length=16, seed=0, **load_model_kwargs)``."""
    return _tiny_model


@pytest.fixture(scope="module")
def tiny_model():
    """One random tiny demo model per test module (224 px, seed 0); build your own with make_tiny_model
    when a test changes it."""
    return _tiny_model()


class TinyDataset:
    """Eight synthetic films prepared as the pipeline prepares them (5 train, 3 val pairs at 224 px).

    csv / image_root: the MS-CXR-format CSV and its image folder; pairs_path / images_path: the
    prepared pairs (Parquet) and model inputs (uint8 ``(n, 224, 224)`` .npy). ``pairs`` and ``images``
    read them afresh (``images`` memory-mapped read-only: ``np.array(...)`` makes a writable copy), so no
    test sees another's changes."""

    def __init__(self, folder):
        from matex.data.mscxr import prepare_dataset
        from matex.data.synthetic import generate_synthetic
        from matex.data.transforms import InputGeometry

        self.image_root = folder / "synthetic"
        self.csv = generate_synthetic(
            self.image_root, n_images=8, seed=0, width=(224, 256), height=(224, 256), progress=False
        )
        self.pairs_path, self.images_path = folder / "pairs.parquet", folder / "images.npy"
        prepare_dataset(
            self.csv,
            self.image_root,
            InputGeometry(224),
            0.25,
            0,
            "error",
            self.pairs_path,
            folder / "prepare_report.json",
            self.images_path,
            progress=False,
        )

    @property
    def pairs(self):
        import pandas as pd

        return pd.read_parquet(self.pairs_path)

    @property
    def images(self):
        import numpy as np

        return np.load(self.images_path, mmap_mode="r")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> TinyDataset:
    """The tiny synthetic dataset, built once per test session (about 2 s)."""
    return TinyDataset(tmp_path_factory.mktemp("tiny_dataset"))
