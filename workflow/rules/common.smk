# Paths shared across the workflow, decided from the config.
from matex.pipeline.params import rule_config


def step_config(rule):
    """params for a step (matex.pipeline.params): the settings its rule depends on. A change reruns exactly
    the jobs that use it (Snakemake's params trigger), and the step reads only these."""
    return lambda wildcards: rule_config(config, rule, wildcards)


def raw_csv():
    """The MS-CXR-format CSV: made by the synthetic generator or downloaded from PhysioNet."""
    if config["data"]["source"] == "synthetic":
        return f"{DS}/raw/MS_CXR_Local_Alignment_v1.0.0.csv"
    m = config["data"]["mscxr"]
    return f"{m['root']}/{m['csv']}"


def model_artifacts():
    """The demo model is trained by the pipeline; hub and checkpoint models are used as given."""
    if config["model"]["source"] == "demo":
        return [f"{MD}/model.pt", f"{MD}/train_log.json"]
    return []


def checkpoint_path():
    if config["model"]["source"] == "demo":
        return f"{MD}/model.pt"
    return config["model"].get("checkpoint") or []


def model_input(wildcards):
    """The checkpoint to load, if any (demo model: trained by the pipeline; checkpoint source: the user file)."""
    ckpt = checkpoint_path()
    return {"checkpoint": ckpt} if ckpt else {}


def attribution_maps():
    return expand(
        f"{MD}/maps/{{method}}.{{ext}}", method=config["attribution"]["methods"], ext=["npz", "parquet", "audit.npz"]
    )


def roar_inputs(wildcards):
    """A method's run (image or text side) needs its training-pair maps, whose NPZ also holds the token
    maps; the clean and random controls need none."""
    inputs = {"pairs": f"{DS}/pairs.parquet", "images": f"{DS}/images.npy", **model_input(wildcards)}
    if wildcards.variant not in ("clean", "random"):
        inputs["npz"] = f"{MD}/roar/maps/{wildcards.variant}.npz"
    return inputs


def roar_retrain_inputs(wildcards):
    """A method's curve needs its training-pair maps (ROAR+'s) and its evaluation maps (validation
    pairs); the demo model retrained from its initialisation (mode from_init) needs no checkpoint."""
    inputs = {"pairs": f"{DS}/pairs.parquet", "images": f"{DS}/images.npy"}
    if config["roar"]["retrain"].get("mode") == "finetune" or config["model"]["source"] != "demo":
        inputs.update(model_input(wildcards))
    if wildcards.variant not in ("clean", "random"):
        inputs["train_npz"] = f"{MD}/roar/maps/{wildcards.variant}.npz"
        inputs["val_npz"] = f"{MD}/maps/{wildcards.variant}.npz"
    return inputs


def sanity_methods():
    return config["evaluation"]["sanity"].get("methods") or config["attribution"]["methods"]


def seed_agreement_tables():
    """rules/seed_agreement.smk's per-pair tables: one per stochastic method of the run (none when it has none)."""
    from matex.pipeline.seed_agreement import seed_agreement_methods

    return expand(f"{MD}/metrics/seed_agreement/{{method}}.parquet", method=seed_agreement_methods(config))


def figure_outputs(name):
    return expand(f"{MD}/figures/{name}.{{ext}}", ext=config["figures"]["formats"])


def final_targets():
    """Every artifact of a run except the pipeline-runtime summary (which is made from their benchmarks)."""
    return [
        f"{DS}/pairs.parquet",
        f"{DS}/alignment_report.json",
        f"{DS}/phrases_parsed.parquet",
        *expand(f"{DS}/figures/prior.{{ext}}", ext=config["figures"]["formats"]),
        *model_artifacts(),
        *attribution_maps(),
        f"{MD}/tables/results.md",
        f"{MD}/provenance.json",
        *[
            out
            for f in ("qualitative", "metrics", "ablation_weights", "ablation_prior_strength", "sanity", "runtime")
            for out in figure_outputs(f)
        ],
        *figure_outputs("roar_curve"),  # ROAR (Hooker et al. 2019) curves
        *(figure_outputs("training") if config["model"]["source"] == "demo" else []),
        *(figure_outputs("counterfactual") if config["data"]["source"] == "synthetic" else []),
    ]


def counterfactual_metrics():
    """Per-method counterfactual metrics: only the synthetic generator can re-render a film without an element."""
    if config["data"]["source"] != "synthetic":
        return []
    per_method = expand(f"{MD}/metrics/counterfactual/{{method}}.parquet", method=config["attribution"]["methods"])
    return per_method + [f"{MD}/counterfactual_controls.parquet"]  # oracles and map-free rankings
