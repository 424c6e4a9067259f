"""The result tables' column metadata: every metric column with its label and reporting scale, the
overall table each belongs to, the paired references, and the pair-count thresholds of a cell
(used by :mod:`matex.metrics.aggregate` and the table builders)."""

from __future__ import annotations

# (column, label, scale): confidence metrics are reported x100 as in M2IB and MATEX.
METRICS: list[tuple[str, str, float]] = [
    ("img_conf_drop", "Img conf. drop ↓", 100.0),
    ("img_conf_increase", "Img conf. incr. ↑", 100.0),
    ("txt_conf_drop", "Txt conf. drop ↓", 100.0),
    ("txt_conf_increase", "Txt conf. incr. ↑", 100.0),
    # equal mass: the same protocol on the rank-normalised map and at fixed top-k % (metrics/equal_mass.py)
    ("img_conf_drop_rank", "Img conf. drop, ranks ↓", 100.0),
    ("img_conf_increase_rank", "Img conf. incr., ranks ↑", 100.0),
    *[
        (f"img_conf_{kind}_top{k}", f"Img conf. {short}, top {k} % {arrow}", 100.0)
        for k in (5, 10, 25, 50)
        for kind, short, arrow in (("drop", "drop", "↓"), ("increase", "incr.", "↑"))
    ],
    ("deletion_auc", "Deletion AUC ↓", 100.0),
    ("insertion_auc", "Insertion AUC ↑", 100.0),
    # ROAD (Rong et al. 2022; metrics/road.py): similarity drop, most / least relevant pixels imputed first
    ("road_morf", "ROAD MoRF drop ↑", 100.0),
    ("road_lerf", "ROAD LeRF drop ↓", 100.0),
    ("road_gap", "ROAD MoRF − LeRF ↑", 100.0),
    ("pointing_game", "Pointing ↑", 100.0),
    ("pointing_game_tol15", "Pointing, 15 px ↑", 100.0),
    ("energy_in_box", "Energy in box ↑", 100.0),
    ("iou_top5", "IoU@5% ↑", 100.0),
    ("auroc", "AUROC ↑", 100.0),
    # MS-CXR's grounding metrics (Boecking et al. 2022), unscaled as the papers print them
    ("cnr", "CNR ↑", 1.0),
    ("miou", "mIoU ↑", 1.0),
    ("box_recall", "Box recall ↑", 100.0),
    ("sanity_abs_spearman", "Sanity abs ρ ↓", 1.0),
    ("sanity_ssim", "Sanity SSIM ↓", 1.0),
    # counterfactual ground truth (synthetic data only; metrics/counterfactual.py)
    ("lesion_share", "Lesion share ↑", 100.0),
    ("drain_share", "Drain share", 100.0),
    ("counterfactual_agreement", "CF concordance ↑", 1.0),
    ("counterfactual_agreement_nonlesion", "CF concordance, non-lesion ↑", 1.0),
    ("shortcut_test", "Shortcut test ↑", 100.0),
    ("runtime_ms", "ms / pair", 1.0),
]
# Which overall table a metric column belongs to when TABLE_GROUPS does not name it (new metrics
# only need a line here): its family, by the title of the table.
_EQUAL_MASS = "All findings: faithfulness at equal mass (pixel order only)"
_LOCALISATION = "All findings: localisation against the boxes"
_COUNTERFACTUAL = "All findings: counterfactual ground truth (synthetic films)"
METRIC_GROUP: dict[str, str] = {
    **{c: _EQUAL_MASS for c in ("img_conf_drop_rank", "img_conf_increase_rank", "road_morf", "road_lerf", "road_gap")},
    **{f"img_conf_{kind}_top{k}": _EQUAL_MASS for k in (5, 10, 25, 50) for kind in ("drop", "increase")},
    "deletion_auc": _EQUAL_MASS,
    "insertion_auc": _EQUAL_MASS,
    "pointing_game": _LOCALISATION,
    "energy_in_box": _LOCALISATION,
    "iou_top5": _LOCALISATION,
    "auroc": _LOCALISATION,
    "pointing_game_tol15": _LOCALISATION,
    "cnr": _LOCALISATION,
    "miou": _LOCALISATION,
    "box_recall": _LOCALISATION,
    "lesion_share": _COUNTERFACTUAL,
    "drain_share": _COUNTERFACTUAL,
    "counterfactual_agreement": _COUNTERFACTUAL,
    "counterfactual_agreement_nonlesion": _COUNTERFACTUAL,
    "shortcut_test": _COUNTERFACTUAL,
}
# Faithfulness scores: also reported relative to the random map on the same pairs.
FAITHFULNESS = [
    "img_conf_drop",
    "img_conf_increase",
    "txt_conf_drop",
    "txt_conf_increase",
    "deletion_auc",
    "insertion_auc",
    *[c for c, g in METRIC_GROUP.items() if g == _EQUAL_MASS and c not in ("deletion_auc", "insertion_auc")],
]
# Localisation scores: also reported per phrase subset and as the gain over prior_only.
LOCALISATION = ["pointing_game", "energy_in_box", "iou_top5", "auroc", "cnr", "miou"]
# Paired references: name -> the metrics compared against it (None = every metric).
REFERENCES: dict[str, list[str] | None] = {
    "matex": None,
    "random": FAITHFULNESS,
    "prior_only": [c for c, g in METRIC_GROUP.items() if g == _LOCALISATION],
}
# Per-finding cells resting on fewer pairs than this are marked with a dagger.
MIN_CELL_PAIRS = 20
# Below this many pairs a cell shows its value and n without an interval, and no sentence ranks it.
MIN_INTERVAL_PAIRS = 10
DAGGER = "†"
DAGGER_NOTE = f"{DAGGER} fewer than {MIN_CELL_PAIRS} pairs in the cell: its interval is unreliable."
# Sanity table column -> tidy metric name (the measures with every block randomised).
SANITY_COLUMNS = {"spearman": "sanity_spearman", "abs_spearman": "sanity_abs_spearman", "ssim": "sanity_ssim"}
SUBSETS = {"all": "All pairs", "location": "Phrase names a location", "no_location": "Phrase names no location"}
