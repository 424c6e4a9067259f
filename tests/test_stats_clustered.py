"""Patient (cluster) bootstrap, paired differences on the same resamples, and the tables built on
them: Δ vs MATEX, faithfulness relative to random, localisation by phrase with the gain over
prior_only, and per-finding cells marked when they rest on fewer than 20 pairs."""

import numpy as np
import pandas as pd
import pytest

from matex.metrics.aggregate import (
    DAGGER,
    MIN_CELL_PAIRS,
    localisation_by_phrase,
    pair_info,
    result_tables,
    summarise_tidy,
    tidy_metrics,
    to_latex,
    to_markdown,
)
from matex.metrics.stats import PatientBootstrap, bootstrap_ci, paired_difference


def width(ci) -> float:
    return ci[2] - ci[1]


def test_pairs_of_one_patient_widen_the_interval_as_one_draw():
    # 60 patients with 5 pairs each that share the patient's value: 60 independent values, not 300
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(60)], 5)
    values = np.repeat(rng.normal(size=60), 5)
    clustered = PatientBootstrap(patients, 3000, 0.95, 0).mean_ci(values, patients)
    per_patient = bootstrap_ci(values[::5], n_resamples=3000, seed=0)
    naive = bootstrap_ci(values, n_resamples=3000, seed=0)
    assert clustered[0] == pytest.approx(values.mean())
    assert clustered[3:] == (300, 60)
    assert width(clustered) == pytest.approx(width(per_patient), rel=0.12)
    assert width(clustered) > 1.8 * width(naive)  # the pair bootstrap is about sqrt(5) too narrow


def test_one_pair_per_patient_matches_the_pair_bootstrap_and_is_seeded():
    rng = np.random.default_rng(1)
    values = rng.random(200)
    values[::17] = np.nan
    patients = [f"p{i}" for i in range(200)]
    boot = PatientBootstrap(patients, 3000, 0.95, 5)
    est, low, high, n, n_pat = boot.mean_ci(values, patients)
    ref = bootstrap_ci(values, n_resamples=3000, seed=5)
    assert est == pytest.approx(ref[0]) and n == n_pat == int(np.isfinite(values).sum())
    assert (high - low) == pytest.approx(ref[2] - ref[1], rel=0.12)
    assert boot.mean_ci(values, patients) == PatientBootstrap(patients, 3000, 0.95, 5).mean_ci(values, patients)
    assert boot.mean_ci(values, patients) != PatientBootstrap(patients, 3000, 0.95, 6).mean_ci(values, patients)
    assert all(np.isnan(v) for v in boot.mean_ci(np.full(200, np.nan), patients)[:3])
    with pytest.raises(KeyError, match="outside"):
        boot.mean_ci([1.0], ["stranger"])


def test_paired_difference_uses_the_same_resamples_and_is_narrow_when_methods_move_together():
    rng = np.random.default_rng(2)
    patients = np.repeat([f"p{i}" for i in range(40)], 3)
    base = np.repeat(rng.normal(0, 1.0, 40), 3)  # large between-patient spread
    a, b = base + 0.3 + rng.normal(0, 0.02, 120), base + rng.normal(0, 0.02, 120)
    boot = PatientBootstrap(patients, 2000, 0.95, 0)
    diff = paired_difference(a, b)
    # same resamples: the resampled means of the difference are the differences of resampled means
    np.testing.assert_allclose(
        boot.resample_means(diff, patients),
        boot.resample_means(a, patients) - boot.resample_means(b, patients),
        atol=1e-12,
    )
    ci_a, ci_b, ci_d = (boot.mean_ci(v, patients) for v in (a, b, diff))
    assert ci_a[1] < ci_b[2]  # unpaired intervals overlap ...
    assert 0.0 < ci_d[1] < 0.3 < ci_d[2] and width(ci_d) < 0.05  # ... the paired one excludes 0
    # a pair one side does not score is left out of the difference
    b_nan = b.copy()
    b_nan[:3] = np.nan
    assert boot.mean_ci(paired_difference(a, b_nan), patients)[3] == 117


# ---------------------------------------------------------------- tables


def _metrics_tables(n_pairs: int, rng) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """Per-method metric tables of ``n_pairs`` pairs from n_pairs // 2 patients; matex is exactly
    0.1 better than prior_only on pointing, random is worse on confidence drop."""
    pair_ids = [f"x{i}" for i in range(n_pairs)]
    pairs = pd.DataFrame(
        {
            "pair_id": pair_ids,
            "patient_id": [f"p{i // 2}" for i in range(n_pairs)],
            "category": ["Pneumonia"] * (n_pairs - 8) + ["Cardiomegaly"] * 8,
            "phrase": ["left lower lobe opacity", "opacity"] * (n_pairs // 2),
        }
    )
    base = rng.random(n_pairs) * 0.8
    values = {
        "matex": (base + 0.1, 0.2 + rng.random(n_pairs) * 0.1),
        "prior_only": (base, 0.3 + rng.random(n_pairs) * 0.1),
        "random": (rng.random(n_pairs), 0.5 + rng.random(n_pairs) * 0.1),
    }
    tables = [
        pd.DataFrame(
            {
                "pair_id": pair_ids,
                "method": m,
                "category": pairs["category"],
                "pointing_game": pg,
                "img_conf_drop": drop,
            }
        )
        for m, (pg, drop) in values.items()
    ]
    return tables, pairs


def test_summary_has_paired_columns_per_reference():
    tables, pairs = _metrics_tables(60, np.random.default_rng(3))
    tidy = tidy_metrics(tables, pair_info(pairs))
    assert tidy["patient_id"].nunique() == 30 and tidy["has_location"].sum() == 3 * 2 * 30
    s = summarise_tidy(tidy, ["method"], 500, 0.95, 0).set_index(["method", "metric"])
    pg = s.loc[("matex", "pointing_game")]
    assert pg["vs_matex"] == 0.0 and s.loc[("prior_only", "pointing_game"), "vs_matex"] == pytest.approx(-10.0)
    assert pg["vs_prior_only"] == pytest.approx(10.0) and pg["vs_prior_only_low"] == pytest.approx(10.0)
    assert pg["n_patients"] == 30 and pg["n"] == 60
    drop = s.loc[("matex", "img_conf_drop")]
    assert drop["vs_random_high"] < 0 and np.isnan(drop["vs_prior_only"])  # prior_only: localisation only
    assert np.isnan(pg["vs_random"])  # random: faithfulness only


def test_localisation_by_phrase_splits_on_the_parser_and_reports_the_gain():
    tables, pairs = _metrics_tables(60, np.random.default_rng(4))
    tidy = tidy_metrics(tables, pair_info(pairs))
    by_phrase = localisation_by_phrase(tidy, 300, 0.95, 0).set_index(["subset", "method", "metric"])
    assert by_phrase.loc[("location", "matex", "pointing_game"), "n"] == 30
    assert by_phrase.loc[("no_location", "matex", "pointing_game"), "n"] == 30
    assert by_phrase.loc[("all", "matex", "pointing_game"), "vs_prior_only"] == pytest.approx(10.0)
    assert ("all", "matex", "img_conf_drop") not in by_phrase.index


def test_result_tables_mark_small_cells_and_explain_the_columns():
    tables, pairs = _metrics_tables(60, np.random.default_rng(5))
    tidy = tidy_metrics(tables, pair_info(pairs))
    overall = summarise_tidy(tidy, ["method"], 200, 0.95, 0)
    per_cat = summarise_tidy(tidy, ["category", "method"], 200, 0.95, 0)
    out = {
        name: (table, note)
        for name, table, note in result_tables(
            overall, per_cat, localisation_by_phrase(tidy, 200, 0.95, 0), None, ["matex", "prior_only", "random"]
        )
    }
    assert set(out) == {
        "All findings: faithfulness, M2IB protocol (contrast-sensitive)",
        "All findings: localisation against the boxes",
        "Δ vs MATEX (paired)",
        "Faithfulness relative to random (paired)",
        "Pointing ↑ by phrase",
        "Cardiomegaly",
        "Pneumonia",
    }
    small, big = out["Cardiomegaly"][0], out["Pneumonia"][0]  # 8 and 52 pairs
    assert MIN_CELL_PAIRS == 20 and DAGGER in out["Cardiomegaly"][1]
    # 8 pairs: under MIN_INTERVAL_PAIRS the cell shows its value and n without an interval, and a dagger
    assert all(c.endswith(DAGGER) and "no interval" in c and "[" not in c for c in small.to_numpy().ravel())
    assert not any(DAGGER in c for c in big.to_numpy().ravel())
    assert list(big.columns) == ["Img conf. drop ↓ (n=52)", "Pointing ↑ (n=52)"]  # every header gives its n
    delta = out["Δ vs MATEX (paired)"][0]
    assert "matex" not in delta.index
    assert delta.loc["prior_only", "Pointing ↑ (n=60)"].startswith("-10.00 [-10.00, -10.00]")
    assert list(out["Faithfulness relative to random (paired)"][0].columns) == ["Img conf. drop ↓ (n=60)"]
    # the overall tables mark small cells too (none here: 60 pairs)
    loc_all = out["All findings: localisation against the boxes"]
    assert list(loc_all[0].columns) == ["Pointing ↑ (n=60)"] and DAGGER in loc_all[1]
    loc = out["Pointing ↑ by phrase"][0]
    assert list(loc.columns)[:3] == [
        "All pairs (n=60)",
        "Phrase names a location (n=30)",
        "Phrase names no location (n=30)",
    ]
    assert loc.loc["matex", "Gain over prior_only: all pairs (n=60)"].startswith("+10.00")
    assert "prior_only" in out["Pointing ↑ by phrase"][1]
    md = to_markdown(small, "Cardiomegaly", out["Cardiomegaly"][1])
    assert DAGGER in md and "fewer than 20 pairs" in md
    assert r"$^\dagger$" in to_latex(small, "c") and r"$\Delta$" in to_latex(delta, "Δ vs MATEX")


def test_aggregate_step_writes_every_table_from_the_pairs_table(tmp_path):
    """The pipeline step: patients and phrase subsets come from pairs.parquet, sanity columns are
    taken from the sanity tables, ROAR+ columns stay in the main table."""
    import types
    from pathlib import Path

    from matex.config import load_config
    from matex.pipeline.evaluation import aggregate

    cfg = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml")
    cfg["attribution"]["methods"] = ["matex", "prior_only", "random"]
    cfg["evaluation"]["bootstrap"]["n_resamples"] = 100
    tables, pairs = _metrics_tables(60, np.random.default_rng(6))
    pairs.to_parquet(tmp_path / "pairs.parquet")
    metrics, sanity = [], []
    for t in tables:
        method = t["method"].iloc[0]
        t.to_parquet(tmp_path / f"{method}.parquet")
        metrics.append(tmp_path / f"{method}.parquet")
        keys = t.iloc[:8][["pair_id", "method", "category"]]
        # two cascade steps: the table reports the last one (everything randomised)
        san = pd.concat(
            [
                keys.assign(cascade_step=1, spearman=-0.9, abs_spearman=0.9, ssim=0.8),
                keys.assign(cascade_step=2, spearman=-0.5, abs_spearman=0.5, ssim=0.25),
            ]
        )
        san.to_parquet(tmp_path / f"sanity_{method}.parquet")
        sanity.append(tmp_path / f"sanity_{method}.parquet")
    pd.DataFrame(
        {"modality": ["image"], "method": ["matex"], "roar_plus_mean": [1.0], "roar_plus_sd": [0.5], "n_seeds": [2]}
    ).to_parquet(tmp_path / "roar.parquet")
    pd.DataFrame(
        {
            "method": ["matex", "matex", "random", "random"],
            "k": [0.3, 0.7, 0.3, 0.7],
            "zero_shot_accuracy": [0.6, 0.3, 0.7, 0.6],
        }
    ).to_parquet(tmp_path / "roar_curve.parquet")
    inp = types.SimpleNamespace(
        metrics=metrics,
        sanity=sanity,
        roar=tmp_path / "roar.parquet",
        pairs=tmp_path / "pairs.parquet",
        roar_curve=tmp_path / "roar_curve.parquet",
    )
    out = types.SimpleNamespace(
        **{k: tmp_path / f"out_{k}.parquet" for k in ("tidy", "summary", "localisation", "roar")},
        markdown=tmp_path / "results.md",
        html=tmp_path / "results.html",
        latex=tmp_path / "results.tex",
    )
    aggregate(cfg, inp, out, None, None, 1)
    md = out.markdown.read_text()
    for title in (
        "All findings: faithfulness, M2IB protocol (contrast-sensitive)",
        "All findings: sanity (cascading randomisation)",
        "Δ vs MATEX (paired)",
        "Faithfulness relative to random (paired)",
        "Pointing ↑ by phrase",
        "Cardiomegaly",
    ):
        assert f"### {title}" in md
    assert "Img ROAR+ ↑" in md and "30 patients, 60 pairs" in md and DAGGER in md
    summary = pd.read_parquet(out.summary)
    assert {"vs_matex", "vs_random", "vs_prior_only", "n_patients"} <= set(summary.columns)
    sanity_all = summary[(summary["category"] == "all") & summary["metric"].str.startswith("sanity_")]
    assert {"sanity_abs_spearman", "sanity_ssim"} <= set(sanity_all["metric"])
    assert np.allclose(sanity_all.set_index("metric").loc[["sanity_abs_spearman"], "mean"], 0.5)
    assert np.allclose(sanity_all.set_index("metric").loc[["sanity_ssim"], "mean"], 0.25)
    assert "Sanity abs ρ ↓" in md and "Sanity SSIM ↓" in md
    assert set(pd.read_parquet(out.localisation)["subset"]) == {"all", "location", "no_location"}
    assert "<table" in out.html.read_text() and r"\begin{table}" in out.latex.read_text()


def test_mscxr_localisation_table_prints_the_published_anchors_without_intervals():
    from matex.metrics.localisation import GROUNDING_ANCHORS

    tables, pairs = _metrics_tables(60, np.random.default_rng(7))
    for t in tables:  # CNR and mIoU columns as the per-pair evaluation writes them
        t["cnr"], t["miou"] = 0.5, 0.1
    tidy = tidy_metrics(tables, pair_info(pairs))
    overall = summarise_tidy(tidy, ["method"], 100, 0.95, 0)
    by_phrase = localisation_by_phrase(tidy, 100, 0.95, 0)
    per_cat = summarise_tidy(tidy, ["category", "method"], 100, 0.95, 0)
    order = ["matex", "prior_only", "random"]

    def loc_table(anchors):
        out = {n: (t, note) for n, t, note in result_tables(overall, per_cat, by_phrase, None, order, anchors)}
        return out["All findings: localisation against the boxes"]

    plain, _ = loc_table(False)
    table, note = loc_table(True)
    assert not any("published" in str(i) for i in plain.index)
    row = table.loc["BioViL (published)"]
    assert row["CNR ↑ (n=60)"] == f"{GROUNDING_ANCHORS['BioViL']['cnr']:.3g}" and "[" not in row["CNR ↑ (n=60)"]
    assert row["mIoU ↑ (n=60)"] == f"{GROUNDING_ANCHORS['BioViL']['miou']:.3g}"
    assert row["Pointing ↑ (n=60)"] == "–" and "not re-run" in note
