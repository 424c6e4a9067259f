"""Steps of workflow/rules/evaluation.smk: per-pair metrics, aggregate tables, sanity and ablation studies."""

from __future__ import annotations

from .core import base_meta, load_step_inputs, method_params, require_settings, step


@step
def evaluate(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..io import read_npz_meta, write_parquet
    from ..metrics.evaluate import evaluate_maps

    require_settings(input.npz, read_npz_meta(input.npz), cfg, "attribute", wildcards)
    pairs, images, model = load_step_inputs(cfg, input, threads)
    df = evaluate_maps(model, wildcards.method, pairs, images, input.npz, cfg)
    runtime = pd.read_parquet(input.runtime)[["pair_id", "runtime_s"]]
    df = df.merge(runtime, on="pair_id", how="left")
    df["runtime_ms"] = df.pop("runtime_s") * 1000.0
    meta = base_meta(cfg, "data", "input", "model", "attribution", "evaluation")
    meta["method"] = wildcards.method
    write_parquet(output.metrics, df, meta)


@step
def aggregate(cfg, input, output, params, wildcards, threads):
    import pandas as pd

    from ..io import write_parquet, write_text
    from ..metrics.aggregate import localisation_by_phrase, pair_info, summarise_tidy, to_html, to_latex

    info = pair_info(pd.read_parquet(input.pairs))
    tidy = _tidy_table(input, info)
    n, ci, seed = _bootstrap_settings(cfg)
    overall = summarise_tidy(tidy, ["method"], n, ci, seed)
    per_cat = summarise_tidy(tidy, ["category", "method"], n, ci, seed)
    by_phrase = localisation_by_phrase(tidy, n, ci, seed)
    meta = base_meta(cfg, "data", "input", "model", "attribution", "evaluation")
    write_parquet(output.tidy, tidy, meta)
    write_parquet(output.summary, pd.concat([overall.assign(category="all"), per_cat], ignore_index=True), meta)
    write_parquet(output.localisation, by_phrase, meta)
    roar = pd.read_parquet(input.roar)
    write_parquet(output.roar, roar, meta)
    notes = _table_notes(cfg, input, info, tidy, n, ci)
    tables = _result_tables(cfg, input, overall, per_cat, by_phrase, roar)
    title = f"Results: {cfg['dataset']} / {cfg['model']['name']}"
    md = _results_markdown(cfg, input, output, meta, title, notes, tables, tidy, (n, ci, seed))
    tex = [to_latex(t, f"{cfg['dataset']}: {name}. {note}".strip()) for name, t, note in tables]
    write_text(output.markdown, md)
    write_text(output.html, to_html(tables, title, notes))
    write_text(output.latex, "\n".join(tex))


def _roar_plus_note(cfg, fill: str) -> str:
    """The ROAR+ columns' note; says when the text side was not run (empty ``roar.text_methods``)."""
    roar = cfg["roar"]
    image = (
        f"ROAR+: mean ± sd over {len(roar['seeds'])} seed(s) of 100 (L_deg - L_clean)/L_clean; "
        f"image: the top {roar['top_fraction']:.0%} pixels of each map removed (fill: {fill})"
    )
    random_maps = "image 'random' = smooth random maps (patch-grid noise, upsampled, like the methods' maps)"
    if not roar.get("text_methods"):
        return (
            f"{image}; {random_maps}. Text ROAR+ was not run (roar.text_methods is empty: a reduced protocol; "
            "config/mscxr.yaml runs it)."
        )
    return (
        f"{image}, text: top word tokens removed (both against the same clean run); {random_maps}, "
        "text 'random' = random tokens removed."
    )


def _bootstrap_settings(cfg) -> tuple[int, float, int]:
    """(resamples, interval level, seed) of the patient bootstrap."""
    boot = cfg["evaluation"].get("bootstrap", {})
    return int(boot.get("n_resamples", 1000)), float(boot.get("ci", 0.95)), cfg["seed"]


def _tidy_table(input, info):
    """Every per-pair metric as one tidy table (pair_id, method, category, metric, value) with the
    pairs' patient and phrase columns: the evaluate jobs', the sanity columns, the counterfactual ones."""
    import pandas as pd

    from ..metrics.aggregate import SANITY_COLUMNS, attach_pair_info, tidy_metrics

    tidy = tidy_metrics([pd.read_parquet(p) for p in input.metrics])
    # sanity columns: the measures at the last cascade step run ("full": every parameter of both towers
    # re-initialised; lower = the map depends on the model)
    san = pd.concat([pd.read_parquet(p) for p in input.sanity], ignore_index=True)
    full = san[san["cascade_step"] == san.groupby("method")["cascade_step"].transform("max")]
    sanity_rows = [
        full.assign(metric=name, value=full[col])[["pair_id", "method", "category", "metric", "value"]]
        for col, name in SANITY_COLUMNS.items()
        if col in full.columns
    ]
    counterfactual = _counterfactual_tidy(getattr(input, "counterfactual", []))
    return attach_pair_info(pd.concat([tidy, *sanity_rows, *counterfactual], ignore_index=True), info)


def _table_notes(cfg, input, info, tidy, n: int, ci: float) -> list[str]:
    """The notes above the result tables: intervals, the ROAR+ protocol, a reduced ROAD protocol and
    absent counterfactual columns where they apply."""
    from ..roar.imputation import FillSpec

    pct = f"{round(ci * 100)} %"
    scored = info[info["pair_id"].isin(set(tidy["pair_id"]))]  # the evaluated pairs, not the whole table
    notes = [
        (
            f"Mean [{pct} interval] over pairs; confidence, deletion/insertion and localisation x100. Intervals: "
            f"percentile bootstrap resampling patients ({n} resamples; {scored['patient_id'].nunique()} patients, "
            f"{len(scored)} pairs), so pairs of one patient move together."
        ),
        _roar_plus_note(cfg, FillSpec.from_config(cfg["roar"]).describe()),
    ]
    road_share = float(cfg["roar"].get("road_fraction", 1.0))
    if road_share < 1.0:
        notes.append(
            f"ROAD (MoRF, LeRF and their gap) is scored on {road_share:.0%} of the evaluation pairs (the same pairs "
            "for every method, chosen by a hash of the pair id): a reduced protocol for the demo's time budget; "
            "config/mscxr.yaml scores every pair."
        )
    if not getattr(input, "counterfactual", []):
        notes.append(
            "Counterfactual columns (lesion share, drain share, counterfactual agreement, shortcut test) "
            "need the synthetic generator's re-rendering and are absent on this dataset."
        )
    return notes


def _result_tables(cfg, input, overall, per_cat, by_phrase, roar) -> list:
    """The (name, table, note) result tables in report order; the first carries the ROAR AUC column
    (ROAR, Hooker et al.) and its note."""
    import pandas as pd

    from ..metrics.aggregate import result_tables
    from ..roar.curve import roar_note, with_roar_auc

    order = cfg["attribution"]["methods"]
    tables = result_tables(overall, per_cat, by_phrase, roar, order, cfg["data"]["source"] == "mscxr")
    first, first_note = tables[0][1], tables[0][2]
    tables[0] = (
        tables[0][0],
        with_roar_auc(first, pd.read_parquet(input.roar_curve)),
        f"{first_note} {roar_note(cfg)}",
    )
    return tables


def _results_markdown(cfg, input, output, meta, title, notes, tables, tidy, bootstrap) -> str:
    """results.md: title, notes, the ranking sentences (every one from the paired intervals), the
    tables, and the stochastic methods' seed-to-seed agreement (whose own table this writes)."""
    from ..metrics.aggregate import to_markdown
    from ..metrics.claims import claims_markdown, ranked_metrics
    from .seed_agreement import seed_agreement_summary

    n, ci, seed = bootstrap
    order = cfg["attribution"]["methods"]
    md = [f"# {title}\n", *[f"{line}\n" for line in notes], *[to_markdown(t, name, note) for name, t, note in tables]]
    md.insert(1 + len(notes), claims_markdown(tidy, ranked_metrics(tidy), order, "matex", n, ci, seed))
    md.append(seed_agreement_summary(cfg, input, output, meta, n, ci, seed))
    return "\n".join(md)


def _eval_rows(cfg: dict, pairs, cap: int | None):
    from ..maps.store import evaluation_rows

    rows = evaluation_rows(cfg, pairs)
    return rows[:cap] if cap else rows


@step
def sanity(cfg, input, output, params, wildcards, threads):

    from ..io import write_npz, write_parquet
    from ..metrics.sanity import cascade_plan
    from ..metrics.studies import cascade_points, sanity_curve

    pairs, images, model = load_step_inputs(cfg, input, threads)
    sanity_cfg = cfg["evaluation"]["sanity"]
    rows = _eval_rows(cfg, pairs, sanity_cfg.get("max_pairs"))
    plan = cascade_plan(model)  # every tensor of both towers; the last step ("full") is always run
    kept: dict = {}
    df = sanity_curve(
        model,
        wildcards.method,
        method_params(cfg, wildcards.method),
        pairs,
        images,
        rows,
        int(cfg["attribution"]["batch_size"]),
        cfg["seed"],
        steps=cascade_points(plan.n_image, plan.n_text, sanity_cfg.get("cascade_points")),
        keep_maps=kept,
    )
    meta = base_meta(cfg, "data", "input", "model", "attribution", "evaluation")
    write_parquet(output.table, df, meta)
    write_npz(
        output.maps,
        kept,
        {
            **meta,
            "method": wildcards.method,
            "steps": {int(k): lab for k, lab in zip(df["cascade_step"], df["randomized"])},
        },
    )


@step
def ablation(cfg, input, output, params, wildcards, threads):

    from ..io import write_parquet
    from ..metrics.studies import ablation_study

    pairs, images, model = load_step_inputs(cfg, input, threads)
    rows = _eval_rows(cfg, pairs, cfg["figures"].get("ablation_pairs"))
    df = ablation_study(
        model, method_params(cfg, "matex"), pairs, images, rows, cfg, int(cfg["attribution"]["batch_size"])
    )
    write_parquet(output.table, df, base_meta(cfg, "data", "input", "model", "attribution", "evaluation", "figures"))


@step
def counterfactual_truth(cfg, input, output, params, wildcards, threads):
    """ΔS_e of every element of every evaluation pair's film (synthetic data only; once per model)."""
    import pandas as pd

    from ..io import write_npz
    from ..metrics.counterfactual import compute_truths, truths_to_arrays

    pairs, _, model = load_step_inputs(cfg, input, threads)
    ids = pairs["pair_id"].to_numpy()[_eval_rows(cfg, pairs, None)]
    truths = compute_truths(model, pairs, ids, pd.read_parquet(input.truth), pd.read_parquet(input.elements), cfg)
    write_npz(output.truth, truths_to_arrays(truths), base_meta(cfg, "data", "input", "model", "attribution"))


@step
def counterfactual(cfg, input, output, params, wildcards, threads):
    """Counterfactual metrics of one method: lesion/drain share, agreement with ΔS, shortcut test."""
    import pandas as pd

    from ..io import read_npz, write_parquet
    from ..metrics.counterfactual import evaluate_counterfactual, truths_from_arrays

    truths = truths_from_arrays(read_npz(input.truth)[0])
    df = evaluate_counterfactual(
        wildcards.method, pd.read_parquet(input.pairs), input.npz, truths, pd.read_parquet(input.elements)
    )
    meta = base_meta(cfg, "data", "input", "model", "attribution", "evaluation")
    meta["method"] = wildcards.method
    write_parquet(output.metrics, df, meta)


@step
def counterfactual_controls(cfg, input, output, params, wildcards, threads):
    """The counterfactual study's controls: oracle maps (lesion_mask, drain_mask), map-free rankings
    (fixed_order, area_order) and the drain-vs-lesion intervention table (no model: the truth holds it)."""
    import pandas as pd

    from ..io import read_npz, write_parquet, write_text
    from ..metrics import counterfactual_controls as cc
    from ..metrics.counterfactual import truths_from_arrays

    truths = truths_from_arrays(read_npz(input.truth)[0])
    pairs = pd.read_parquet(input.pairs)
    boot = cfg["evaluation"].get("bootstrap", {})
    n, ci = int(boot.get("n_resamples", 1000)), float(boot.get("ci", 0.95))
    meta = base_meta(cfg, "data", "input", "model", "attribution", "evaluation")
    write_parquet(output.metrics, cc.counterfactual_controls(pairs, truths), meta)
    table = cc.shortcut_intervention(pairs, truths, n, ci, cfg["seed"])
    write_parquet(output.intervention, table, meta)
    write_text(output.intervention_md, cc.intervention_markdown(table, ci))


COUNTERFACTUAL_METRICS = (
    "lesion_share",
    "drain_share",
    "counterfactual_agreement",
    "counterfactual_agreement_nonlesion",
    "shortcut_test",
)


def _counterfactual_tidy(paths) -> list:
    """The counterfactual metrics as tidy rows (pair_id, method, category, metric, value), NaN dropped."""
    import pandas as pd

    out = []
    for p in paths:
        df = pd.read_parquet(p)
        long = df.melt(["pair_id", "method", "category"], list(COUNTERFACTUAL_METRICS), "metric", "value")
        out.append(long.dropna(subset=["value"]))
    return out
