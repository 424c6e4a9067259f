"""Energy in box of the text prior alone (prior_only's map, norm(P)) against the synthetic boxes, and
the phrases with a named location that get a flat prior (issue 13). Usage:

    PYTHONPATH=<checkout> python benchmarks/prior_energy.py <dataset dir with pairs.parquet, images.npy, raw/>

Works with the parser of any checkout (an old one has no film-frame mapping: then only 'input' rows).
A flat prior gives an all-zero map, whose energy is undefined; it is scored as a uniform map (box area
fraction), the energy of a map that says nothing."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from matex.data.transforms import box_mask
from matex.metrics.localisation import energy_in_box
from matex.priors import spatial_prior

root = Path(sys.argv[1])
pairs = pd.read_parquet(root / "pairs.parquet")
truth = pd.read_parquet(root / "raw" / "synthetic_truth.parquet")
named = dict(zip(zip(truth["dicom_id"], truth["label_text"].str.strip()), truth["location_named"]))
S = 224
masks = np.stack([box_mask([tuple(b) for b in boxes], S) for boxes in pairs["boxes"]])
framed = "image_size" in inspect.signature(spatial_prior).parameters
located = np.array([bool(named.get((d, p), False)) for d, p in zip(pairs["dicom_id"], pairs["phrase"])])


def centroid_gap(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Distance (in input widths) between the map's centre of mass and its box union's centre: a
    placement measure that, unlike energy, does not reward a smaller map."""
    ys, xs = np.mgrid[0:S, 0:S] + 0.5

    def centre(w):
        t = w.sum(axis=(1, 2))
        return (w * ys).sum(axis=(1, 2)) / t, (w * xs).sum(axis=(1, 2)) / t

    (my, mx), (by, bx) = centre(maps), centre(masks.astype(float))
    return np.hypot(my - by, mx - bx) / S


def energies(frame: bool) -> tuple[np.ndarray, np.ndarray]:
    maps, flat = [], []
    for r in pairs.itertuples():
        kw = {"image_size": (int(r.image_height), int(r.image_width))} if frame else {}
        p = spatial_prior(r.phrase, (S, S), **kw)
        flat.append(bool((p == 1).all()))
        maps.append((p - p.min()) / (p.max() - p.min()) if not flat[-1] else np.ones_like(p))
    maps = np.stack(maps)
    return energy_in_box(maps, masks), np.array(flat), centroid_gap(maps, masks)


print(f"pairs {len(pairs)}, with a named location (synthetic truth) {located.sum()}")
for frame in [False, True] if framed else [False]:
    e, flat, gap = energies(frame)
    tag = "film frame" if frame else "input frame"
    print(
        f"[{tag}] energy in box, all pairs: {np.nanmean(e):.4f}; pairs with a named location: "
        f"{np.nanmean(e[located]):.4f}; flat priors among located phrases: {int((flat & located).sum())}; "
        f"prior-to-box centroid gap (located, non-flat): {np.mean(gap[located & ~flat]):.4f}"
    )
    for cat, idx in pairs.groupby("category").indices.items():
        print(f"    {cat:18s} n={len(idx):3d} energy {np.nanmean(e[idx]):.4f} flat {int(flat[idx].sum())}")
    if frame or not framed:
        bad = pairs.loc[flat & located, "phrase"].head(10).tolist()
        print("    located but flat:", bad)
