"""The step registry, logging into the rule's log file, and the helpers every step shares."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import section_hash

log = logging.getLogger("matex")
STEPS: dict[str, Callable[..., None]] = {}

# PyTorch's intra-op threads in every step: fixed, never the job's ``threads``. A reduction split over
# more threads adds in another order, so a SLURM job granted 2 cores and a local job on 1 differed by
# ~1e-6 in maps and metrics. The rule's ``threads`` only reserves cores; demo training runs with
# ``model.demo.threads`` (a config value, so also fixed).
TORCH_THREADS = 1
# Steps whose ``threads`` size a process pool whose output is the same bytes for any pool size: they get
# the job's threads; every other step gets TORCH_THREADS.
POOL_STEPS = frozenset({"make_synthetic", "download_mscxr"})


def step(fn: Callable[..., None]) -> Callable[..., None]:
    STEPS[fn.__name__] = fn
    return fn


@contextlib.contextmanager
def logged(log_path: str | None):
    """Send logging and stderr (tqdm progress) of the step to its log file as well as the console."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    root = logging.getLogger()
    old = list(root.handlers)
    root.handlers = []
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        for h in handlers:
            h.close()
        root.handlers = old


def run_step(smk: Any) -> None:
    """Dispatch a Snakemake ``script:`` call to the step named like its rule."""
    name = smk.rule
    fn = STEPS.get(name)
    if fn is None:
        raise KeyError(f"no matex pipeline step for rule {name!r}; known: {sorted(STEPS)}")
    # the rule's own settings (params.config, see matex.pipeline.params), never the global config
    cfg = dict(smk.params.config) if hasattr(smk.params, "config") else dict(smk.config)
    with logged(smk.log[0] if len(smk.log) else None):
        t0 = time.perf_counter()
        log.info("step %s started", name)
        if name.startswith("figure_"):
            from ..figures.style import use

            use((cfg.get("figures") or {}).get("style"))
        threads = int(smk.threads) if name in POOL_STEPS else fix_torch_threads()
        try:
            fn(cfg, smk.input, smk.output, smk.params, smk.wildcards, threads)
        except BaseException as exc:
            # the error goes into the rule's own log (where Snakemake points a SLURM user), message first
            log.error("step %s failed: %s: %s", name, type(exc).__name__, exc, exc_info=exc)
            raise
        log.info("step %s finished in %.1f s", name, time.perf_counter() - t0)


def fix_torch_threads() -> int:
    """Set PyTorch's intra-op threads to :data:`TORCH_THREADS` (results independent of the job's
    cores) and return that number. Without importing torch: a step that never uses it stays quick,
    and one that imports it later starts with OMP_NUM_THREADS (Snakemake sets the job's threads)."""
    import os

    os.environ["OMP_NUM_THREADS"] = str(TORCH_THREADS)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(TORCH_THREADS)
    return TORCH_THREADS


def geometry(cfg: dict):
    from ..data.transforms import InputGeometry

    return InputGeometry.from_config(cfg["input"])  # size, mode, intensity mapping, pixel limit


def base_meta(cfg: dict, *sections: str) -> dict:
    """What every artifact carries: the hash of the config sections that made it, the seed, the
    package version and, once a model is involved, the model's checkpoint sha256."""
    from .. import __version__

    meta = {"config_hash": section_hash(cfg, *sections), "seed": cfg["seed"], "matex_version": __version__}
    if "model" in sections:
        from .records import model_fingerprint

        meta["model_checkpoint_sha256"] = model_fingerprint(cfg)["checkpoint_sha256"]
    return meta


def load_configured_model(cfg: dict, checkpoint: str | None, device_pref: str = "cpu"):
    """The run's model; a demo checkpoint trained with other data/input/model settings than this
    run's is refused (:func:`require_settings`), naming the setting."""
    from ..models.loading import load_model_from_config, resolve_device

    model = load_model_from_config(cfg, checkpoint=checkpoint or None, device=resolve_device(device_pref))
    trained = model.meta.get("trained") or {}
    if checkpoint and "settings" in trained:
        require_settings(str(checkpoint), trained, cfg, "train_demo_model")
    return model


def load_step_inputs(cfg: dict, input, threads: int | None = None):
    """The pairs table, the decoded images (memory-mapped) and the configured model of a step.
    ``threads`` is accepted for the steps' uniform call and ignored: PyTorch runs with
    :data:`TORCH_THREADS` whatever the job was granted (:func:`fix_torch_threads`)."""
    import torch  # noqa: F401 (imported before fixing its threads)

    from ..io import read_npy, read_parquet

    fix_torch_threads()
    pairs = read_parquet(input.pairs)  # a damaged table or image array: an error naming the file
    images = read_npy(input.images)
    model = load_configured_model(cfg, getattr(input, "checkpoint", None), cfg["attribution"]["device"])
    return pairs, images, model


def method_params(cfg: dict, method: str) -> dict:
    return dict((cfg["attribution"].get("params") or {}).get(method) or {})


# ------------------------------------------------------------------ settings recorded in artifacts
def recorded_settings(cfg: dict, rule: str, wildcards: Any = None) -> dict:
    """The settings an artifact of ``rule`` records (its params.config without the output folder), so
    that a consumer can check them and name the setting that differs."""
    from .params import rule_config

    out = rule_config(cfg, rule, wildcards)
    out.pop("results_dir", None)
    return out


_DEFAULT = object()  # a key absent from the settings: the method's (or step's) default applies


def _differences(recorded: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(recorded, dict) or isinstance(current, dict):
        recorded = recorded if isinstance(recorded, dict) else {}
        current = current if isinstance(current, dict) else {}
        keys = sorted(set(recorded) | set(current))
        return [
            d for k in keys for d in _differences(recorded.get(k, _DEFAULT), current.get(k, _DEFAULT), f"{prefix}{k}.")
        ]
    if recorded == current:
        return []

    def show(v: Any) -> str:
        return "the default" if v is _DEFAULT or v is None and prefix.startswith("attribution.params.") else repr(v)

    return [f"{prefix[:-1]} (made with {show(recorded)}, now {show(current)})"]


def require_settings(artifact: str, meta: dict, cfg: dict, rule: str, wildcards: Any = None) -> None:
    """Refuse an input artifact whose recorded settings disagree with the config of this run (e.g. a
    map file left over from another ``alpha``), naming the artifact and the setting."""
    from ..errors import StaleArtifactError

    recorded = meta.get("settings")
    if recorded is None:
        return  # made before settings were recorded: nothing to compare
    diffs = _differences(recorded, recorded_settings(cfg, rule, wildcards))
    if diffs:
        raise StaleArtifactError(
            f"{artifact} was made with other settings than this run's: {'; '.join(diffs[:5])}"
            f"{' ...' if len(diffs) > 5 else ''}. Rerun the rule that makes it "
            f"(snakemake --forcerun {rule}) or delete it."
        )
