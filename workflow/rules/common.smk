# Paths shared by the rules; decided from the config, never computed in rules.


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
