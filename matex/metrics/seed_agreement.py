"""Seed-to-seed agreement of a stochastic attribution method (docs/fidelity.md).

A method that draws random numbers (RISE's masks, M2IB's noise, the random control) gives another
map under another seed; a map that changes a lot with the seed cannot be read pixel by pixel, and a
localisation score computed on it carries that noise. ``seed_agreement`` explains the same pairs
under two seeds and returns the per-pair Spearman ρ of the two maps (1 = the same order of pixels).
A method without a ``seed`` parameter (NIB, the gradient methods) is run twice: ρ = 1 shows it is
deterministic. RISE with 500 masks on ViT-B/32 agrees at ρ ≈ 0.35–0.57 between two seeds, which is
why the paper configuration uses 4000 masks (Petsiuk et al. 2018 use 2000–6000).

In the pipeline, the ``seed_agreement`` rule runs :func:`seed_agreement_rows` for each stochastic
method of the run (the first ``evaluation.seed_agreement.max_pairs`` evaluation pairs) and the
``aggregate`` rule summarises them (:func:`seed_agreement_table`) into ``tables/seed_agreement``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError

# Kept free of torch and scipy at import: the workflow reads STOCHASTIC_METHODS while it is parsed.
STOCHASTIC_METHODS = ("rise", "m2ib", "m2ib_cxr", "m2ib_token", "nib", "random")
# The parameters that set a stochastic method's budget: the table's settings column shows their values.
BUDGET_PARAMS = ("n_masks", "steps", "n_noise")


def seed_agreement(
    model,
    images,
    texts: Sequence[str],
    method: str,
    seeds: tuple[int, int] = (0, 1),
    **params: Any,
) -> np.ndarray:
    """Per-pair Spearman ρ (B,) between the maps of ``method`` under ``seeds[0]`` and ``seeds[1]``
    (other parameters ``params``, e.g. the run's ``n_masks``). NaN where a map is constant."""
    from ..attribution import explain
    from .sanity import spearman_maps

    maps = [explain(model, images, list(texts), method, **p).image for p in _seeded_params(method, params, seeds)]
    return spearman_maps(maps[0].numpy(), maps[1].numpy())


def _seeded_params(method: str, params: Mapping[str, Any], seeds: Sequence[int]) -> list[dict]:
    """The method's parameters under each of the two seeds (unchanged for a method without a seed)."""
    from ..attribution.registry import get_method

    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ConfigError(f"seed_agreement needs two different seeds, got {tuple(seeds)!r}")
    if "seed" in params:
        raise ConfigError("seed_agreement: pass the seeds as seeds=(a, b), not seed=")
    seeded = "seed" in get_method(method).defaults
    return [{**params, "seed": int(s)} if seeded else dict(params) for s in seeds]


def seed_agreement_rows(
    model,
    method: str,
    params: Mapping[str, Any],
    pairs: pd.DataFrame,
    images_u8: np.ndarray,
    rows: Sequence[int],
    batch_size: int,
    seeds: Sequence[int] = (0, 1),
) -> pd.DataFrame:
    """Seed agreement of the pairs ``rows`` explained as the pipeline explains them (the run's
    parameters ``params``, batches of ``batch_size``, each film's original size, the training boxes):
    one row per pair with ``pair_id``, ``patient`` (the pair itself when the table has no
    ``patient_id``), ``method`` and ``rho``, the Spearman ρ between its maps under the two seeds."""
    from ..maps.store import explain_batch, training_boxes_of
    from .sanity import spearman_maps

    per_seed = _seeded_params(method, params, seeds)
    rows = np.asarray(rows, dtype=np.int64)
    boxes = training_boxes_of(pairs, model.geometry.size)
    rho = []
    for start in range(0, len(rows), int(batch_size)):
        idx = rows[start : start + int(batch_size)]
        images = model.preprocess(np.ascontiguousarray(images_u8[idx]))
        maps = [
            explain_batch(model, method, p, pairs.iloc[idx], images, boxes).image.detach().float().cpu().numpy()
            for p in per_seed
        ]
        rho.append(spearman_maps(maps[0], maps[1]))
    chosen = pairs.iloc[rows]
    patient = chosen["patient_id"] if "patient_id" in chosen.columns else chosen["pair_id"]
    return pd.DataFrame(
        {
            "pair_id": chosen["pair_id"].astype(str).to_numpy(),
            "patient": patient.astype(str).to_numpy(),
            "method": method,
            "rho": np.concatenate(rho) if rho else np.zeros(0),
        }
    )


def settings_text(method: str, params: Mapping[str, Any]) -> str:
    """The run's settings of ``method`` as the table shows them: its budget parameters (configured or
    default, from the method catalogue) and every other configured parameter."""
    from ..catalog import load_catalog

    spec = (load_catalog().get(method) or {}).get("params") or {}
    shown = {k: params.get(k, spec[k]["default"]) for k in BUDGET_PARAMS if k in spec}
    shown.update({k: v for k, v in params.items() if k not in shown})
    text = ", ".join(f"{k}={v}" for k, v in shown.items()) or "defaults"
    return text if "seed" in spec else f"{text}; no seed: run twice"


TABLE_COLUMNS = ["method", "mean", "ci_low", "ci_high", "median", "n", "n_patients", "n_constant", "settings"]


def seed_agreement_table(
    per_pair: pd.DataFrame,
    settings: Mapping[str, str],
    order: Sequence[str] = (),
    n_resamples: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per method of ``per_pair`` (pair_id, patient, method, rho): mean ρ and its percentile
    interval from the patient (cluster) bootstrap (none below ``MIN_INTERVAL_PAIRS`` pairs), median ρ,
    n pairs with a finite ρ and their patients, n pairs whose map was constant (ρ undefined), and the
    settings text. Methods in ``order`` first."""
    from .aggregate import MIN_INTERVAL_PAIRS
    from .stats import PatientBootstrap

    present = list(dict.fromkeys(per_pair["method"])) if len(per_pair) else []
    methods = [m for m in order if m in present] + [m for m in present if m not in order]
    out = []
    for m in methods:
        sub = per_pair[per_pair["method"] == m]
        boot = PatientBootstrap(sub["patient"].unique(), n_resamples, ci, seed)
        mean, low, high, n, n_pat = boot.mean_ci(sub["rho"], sub["patient"])
        if n < MIN_INTERVAL_PAIRS:
            low = high = np.nan
        rho = sub["rho"].to_numpy(dtype=np.float64)
        median = float(np.median(rho[np.isfinite(rho)])) if n else np.nan
        out.append([m, mean, low, high, median, n, n_pat, int((~np.isfinite(rho)).sum()), settings.get(m, "")])
    return pd.DataFrame(out, columns=TABLE_COLUMNS)


def seed_agreement_markdown(table: pd.DataFrame, seeds: Sequence[int], n_pairs: int, ci: float = 0.95) -> str:
    """The table under its caption: what ρ means, the seeds, the pairs and the run's settings."""
    from .aggregate import DAGGER, MIN_CELL_PAIRS, MIN_INTERVAL_PAIRS

    lines = ["### Seed-to-seed agreement of the stochastic methods", ""]
    lines.append(
        f"Spearman ρ between each pair's two maps, made with seeds {seeds[0]} and {seeds[1]} and otherwise the "
        f"run's own settings (the maps the other tables score), on the first {n_pairs} evaluation pairs: mean "
        f"[{round(ci * 100)} % interval, percentile bootstrap resampling patients] and median. ρ = 1: another "
        "seed gives the same order of pixels; a low ρ: the map changes with the seed and cannot be read pixel "
        "by pixel (its localisation and faithfulness scores carry that noise). A method without a seed (NIB) "
        f"is run twice: ρ = 1 shows it is deterministic. {DAGGER} fewer than {MIN_CELL_PAIRS} pairs; no "
        f"interval below {MIN_INTERVAL_PAIRS}."
    )
    lines.append("")
    if not len(table):
        return "\n".join([*lines, "No stochastic method (RISE, M2IB, NIB, random) is in this run's methods.", ""])
    lines += ["| method | seed-to-seed ρ | median ρ | n pairs | settings |", "|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        mark = DAGGER if r.n < MIN_CELL_PAIRS else ""
        if not np.isfinite(r.mean):
            cell = "–"
        elif np.isfinite(r.ci_low):
            cell = f"{r.mean:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]{mark}"
        else:
            cell = f"{r.mean:.2f} (no interval){mark}"
        n = f"{r.n}" + (f" ({r.n_constant} constant maps left out)" if r.n_constant else "")
        median = f"{r.median:.2f}" if np.isfinite(r.median) else "–"
        lines.append(f"| {r.method} | {cell} | {median} | {n} | {r.settings} |")
    return "\n".join(lines) + "\n"
