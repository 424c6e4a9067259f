# Paths shared across the workflow, decided from the config.


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
    return expand(f"{MD}/maps/{{method}}.{{ext}}", method=config["attribution"]["methods"], ext=["npz", "parquet"])


def roar_inputs(wildcards):
    """A method's run (image or text side) needs its training-pair maps, whose NPZ also holds the token
    maps; the clean and random controls need none."""
    inputs = {"pairs": f"{DS}/pairs.parquet", "images": f"{DS}/images.npy", **model_input(wildcards)}
    if wildcards.variant not in ("clean", "random"):
        inputs["npz"] = f"{MD}/roar/maps/{wildcards.variant}.npz"
    return inputs


def sanity_methods():
    return config["evaluation"]["sanity"].get("methods") or config["attribution"]["methods"]


def figure_outputs(name):
    return expand(f"{MD}/figures/{name}.{{ext}}", ext=config["figures"]["formats"])


def final_targets():
    """Every artifact of a run except the pipeline-runtime summary (which is made from their benchmarks)."""
    return [
        f"{DS}/pairs.parquet",
        f"{DS}/alignment_report.json",
        *model_artifacts(),
        *attribution_maps(),
        f"{MD}/tables/results.md",
        f"{MD}/provenance.json",
        *[out for f in ("qualitative", "metrics", "ablation_weights", "ablation_prior_strength", "sanity", "runtime")
          for out in figure_outputs(f)],
        *(figure_outputs("training") if config["model"]["source"] == "demo" else []),
        *(figure_outputs("counterfactual") if config["data"]["source"] == "synthetic" else []),
    ]


def counterfactual_metrics():
    """Per-method counterfactual metrics: only the synthetic generator can re-render a film without an element."""
    if config["data"]["source"] != "synthetic":
        return []
    return expand(f"{MD}/metrics/counterfactual/{{method}}.parquet", method=config["attribution"]["methods"])
