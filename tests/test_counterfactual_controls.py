"""Controls of the counterfactual study: the oracle maps score the shortcut test's ceiling and floor
on real generated films, the map-free rankings, the intervention table's verdicts, and the stratified
choice of evaluation pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from matex.data.synthetic import SyntheticSpec, render_case, sample_findings
from matex.data.transforms import InputGeometry
from matex.maps.store import select_pairs
from matex.metrics.counterfactual import PairCounterfactual, _mask_to_input
from matex.metrics.counterfactual_controls import (
    counterfactual_controls,
    fixed_order_scores,
    intervention_markdown,
    intervention_verdict,
    shortcut_intervention,
)

DELTA = {"drain": 0.2, "lesion0": 0.05, "lesion1": 0.03, "ribs": 0.01, "clavicles": 0.0}


def _truth(masks: dict[str, np.ndarray], deltas: dict[str, float], null: float = 0.001) -> PairCounterfactual:
    names = sorted(masks)
    return PairCounterfactual(
        names=names,
        masks=np.stack([masks[n] for n in names]),
        deltas=np.array([deltas[n] for n in names]),
        lesion="lesion0",
        similarity=0.3,
        null_deltas=np.array([null, -null]),
    )


@pytest.fixture(scope="module")
def drained_films():
    """Truths built from real generated pneumothorax films with a drain (masks at a 224 px centre
    crop), with a model that relies more on the drain than on the lesion."""
    spec, geometry = SyntheticSpec(), InputGeometry(224)
    truths, rows = {}, []
    cases = [
        i
        for i in range(300)
        if [(f.category_name, f.zone) for f in sample_findings(5, i, spec)] == [("Pneumothorax", "apical")]
    ][:8]  # a lateral pneumothorax leaves no course for a drain on its side
    for i in cases:
        _, _, masks = render_case(5, i, spec, drain=True, return_elements=True)
        if "drain" not in masks:
            continue
        at_input = {n: _mask_to_input(m, geometry) for n, m in masks.items()}
        truths[f"p{i}"] = _truth(at_input, DELTA)
        rows.append({"pair_id": f"p{i}", "category": "Pneumothorax", "patient_id": f"pat{i}"})
    return pd.DataFrame(rows), truths


def test_oracle_maps_score_the_shortcut_test_s_ceiling_and_floor(drained_films):
    pairs, truths = drained_films
    assert len(truths) >= 6
    df = counterfactual_controls(pairs, truths)
    assert set(df["method"]) == {"lesion_mask", "drain_mask", "fixed_order", "area_order"}
    by = df.set_index(["method", "pair_id"])
    for pid in truths:
        assert by.loc[("drain_mask", pid), "shortcut_test"] == 1.0  # the ceiling: 100 in the tables
        assert by.loc[("lesion_mask", pid), "shortcut_test"] == 0.0  # the floor: the drain is a patch away
        assert by.loc[("lesion_mask", pid), "lesion_share"] == 1.0
        assert by.loc[("drain_mask", pid), "drain_share"] == 1.0
    # drain_mask is undefined on a film without a drain (its zero map would score as a uniform one)
    pid, t = next(iter(truths.items()))
    no_drain = {pid: _truth({n: m for n, m in zip(t.names, t.masks) if n != "drain"}, DELTA)}
    row = counterfactual_controls(pairs[pairs["pair_id"] == pid], no_drain).set_index("method").loc["drain_mask"]
    assert np.isnan(row[["lesion_share", "counterfactual_agreement", "shortcut_test"]].astype(float)).all()
    # a ranking has no map: no share, no shortcut test
    assert df.loc[df["method"] == "fixed_order", ["lesion_share", "shortcut_test"]].isna().all().all()


def test_fixed_order_agrees_only_where_the_model_follows_its_order(drained_films):
    pairs, truths = drained_films
    t = next(iter(truths.values()))
    scores = dict(zip(t.names, fixed_order_scores(t)))
    assert scores["lesion0"] > scores["drain"] > scores["ribs"] > scores["clavicles"]
    df = counterfactual_controls(pairs, truths)
    fixed = df[df["method"] == "fixed_order"]
    # truth: drain > lesion > ribs > clavicles; fixed_order swaps drain and lesion only
    assert (fixed["counterfactual_agreement"] < 1).all() and (fixed["counterfactual_agreement"] > 0).all()
    assert (fixed["counterfactual_agreement_nonlesion"] == 1.0).all()  # drain > ribs > clavicles: its order
    lesion_first = {pid: _truth(dict(zip(t.names, t.masks)), {**DELTA, "lesion0": 0.5}) for pid, t in truths.items()}
    df = counterfactual_controls(pairs, lesion_first)
    assert (df.loc[df["method"] == "fixed_order", "counterfactual_agreement"] == 1.0).all()


def _intervention_truths(n: int, d_drain: float, d_lesion: float, spread: float = 0.01):
    rng = np.random.default_rng(0)
    masks = {"drain": np.eye(8, dtype=bool), "lesion0": np.fliplr(np.eye(8, dtype=bool))}
    truths = {
        f"p{k}": _truth(
            masks,
            {"drain": d_drain + spread * rng.standard_normal(), "lesion0": d_lesion + spread * rng.standard_normal()},
        )
        for k in range(n)
    }
    pairs = pd.DataFrame(
        {"pair_id": list(truths), "category": "Pneumothorax", "patient_id": [f"pat{k // 2}" for k in range(n)]}
    )
    return pairs, truths


def test_intervention_says_the_score_follows_the_drain_only_when_the_interval_shows_it():
    table = shortcut_intervention(*_intervention_truths(24, 0.1, 0.01), n_resamples=200)
    assert "follows the drain more than the lesion" in intervention_verdict(table)
    row = table[(table["group"] == "shortcut") & (table["measure"] == "delta_s_drain")].iloc[0]
    assert row["n"] == 24 and row["n_patients"] == 12 and row["ci_low"] < 0.1 < row["ci_high"]
    assert "follows the lesion more" in intervention_verdict(
        shortcut_intervention(*_intervention_truths(24, 0.01, 0.1), n_resamples=200)
    )
    pairs, truths = _intervention_truths(24, 0.05, 0.05, spread=0.0)
    for k, t in enumerate(truths.values()):  # the drain's effect above the lesion's on half the pairs, below on half
        t.deltas[t.names.index("drain")] += 0.02 if k % 4 < 2 else -0.02
    assert "not separable" in intervention_verdict(shortcut_intervention(pairs, truths, n_resamples=200))
    few = shortcut_intervention(*_intervention_truths(6, 0.1, 0.01), n_resamples=200)
    assert "no verdict" in intervention_verdict(few)
    assert few[["ci_low", "ci_high"]].isna().all().all()  # below 10 pairs: no interval
    md = intervention_markdown(table)
    assert "| ΔS, drain erased |" in md and "no interval" not in md.split("| ΔS, drain erased |")[1].split("|")[1]


def test_stratified_selection_fills_the_quota_and_keeps_the_budget():
    pairs = pd.DataFrame({"split": ["val"] * 100 + ["train"] * 20})
    priority = np.zeros(120, bool)
    priority[[5, 60, 70, 80, 90, 95, 110]] = True  # 110 is a training pair: never chosen for val
    plain = select_pairs(pairs, "val", 20)
    np.testing.assert_array_equal(plain, np.arange(20))
    chosen = select_pairs(pairs, "val", 20, priority, quota=4)
    assert len(chosen) == 20 and (np.diff(chosen) > 0).all()
    assert priority[chosen].sum() == 4 and {5, 60, 70, 80} <= set(chosen)
    every = select_pairs(pairs, "val", 20, priority, quota=50)  # more quota than priority pairs
    assert len(every) == 20 and priority[every].sum() == 6 and 110 not in every
    np.testing.assert_array_equal(select_pairs(pairs, "val", None, priority, quota=4), np.arange(100))
    with pytest.raises(ValueError, match="one flag per pair"):
        select_pairs(pairs, "val", 20, priority[:10], quota=4)


def test_evaluation_rows_draw_the_quota_from_pneumothorax_phrases_on_drained_films(tmp_path):
    from matex.errors import MapError
    from matex.maps.store import evaluation_rows

    raw = tmp_path / "results" / "synthetic" / "raw"
    raw.mkdir(parents=True)
    films = [f"d{k}" for k in range(40)]
    pd.DataFrame({"dicom_id": films, "drain": [k % 10 == 9 for k in range(40)]}).to_parquet(
        raw / "synthetic_elements.parquet"
    )
    pairs = pd.DataFrame(
        {
            "dicom_id": films,
            "split": "val",
            "category": ["Pneumothorax" if k % 2 else "Edema" for k in range(40)],
        }
    )
    cfg = {
        "results_dir": str(tmp_path / "results"),
        "dataset": "synthetic",
        "data": {"source": "synthetic"},
        "attribution": {"split": "val", "max_pairs": 10, "shortcut_pairs": 3},
    }
    rows = evaluation_rows(cfg, pairs)
    assert len(rows) == 10 and {9, 19, 29} <= set(rows)  # the drained pneumothorax films d9, d19, d29
    cfg["attribution"]["shortcut_pairs"] = 0
    np.testing.assert_array_equal(evaluation_rows(cfg, pairs), np.arange(10))
    cfg["attribution"]["shortcut_pairs"] = 3
    cfg["data"]["source"] = "mscxr"  # no drains on real films: pair order
    np.testing.assert_array_equal(evaluation_rows(cfg, pairs), np.arange(10))
    cfg["data"]["source"], cfg["dataset"] = "synthetic", "elsewhere"
    with pytest.raises(MapError, match="elements table"):
        evaluation_rows(cfg, pairs)
