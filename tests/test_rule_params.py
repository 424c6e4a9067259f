"""Each rule sees only the settings it depends on (its params.config), and a step refuses an input
artifact whose recorded settings disagree with the run's, naming the artifact and the setting."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from matex.config import deep_update, load_config
from matex.errors import StaleArtifactError
from matex.pipeline.core import recorded_settings, require_settings
from matex.pipeline.params import RULE_SECTIONS, rule_config

ROOT = Path(__file__).resolve().parents[1]
CFG = load_config(ROOT / "config" / "config.yaml")


def _w(**kw):
    return SimpleNamespace(**kw)


def test_a_methods_jobs_see_only_its_own_parameters():
    a = rule_config(CFG, "attribute", _w(method="rollout"))
    assert set(a["attribution"]["params"]) <= {"rollout"}
    changed = deep_update(CFG, {"attribution": {"params": {"matex": {"alpha": 0.9}}}})
    assert rule_config(changed, "attribute", _w(method="rollout")) == a  # rollout: no rerun
    assert rule_config(changed, "attribute", _w(method="matex")) != rule_config(CFG, "attribute", _w(method="matex"))
    assert rule_config(changed, "ablation") != rule_config(CFG, "ablation")  # the ablation varies MATEX


def test_figure_options_reach_only_figure_rules():
    changed = deep_update(CFG, {"figures": {"qualitative_per_category": 3}})
    moved = {
        r
        for r in RULE_SECTIONS
        if rule_config(changed, r, _w(method="matex")) != rule_config(CFG, r, _w(method="matex"))
    }
    assert moved == {"figure_qualitative"}
    changed = deep_update(CFG, {"figures": {"style": {"width": "single"}, "formats": ["png"]}})
    moved = {
        r
        for r in RULE_SECTIONS
        if rule_config(changed, r, _w(method="matex")) != rule_config(CFG, r, _w(method="matex"))
    }
    assert moved == {r for r in RULE_SECTIONS if r.startswith("figure_")}


def test_model_settings_reach_every_model_rule_but_not_data_rules():
    changed = deep_update(CFG, {"model": {"demo": {"lr": 0.002}}})
    moved = {
        r
        for r in RULE_SECTIONS
        if rule_config(changed, r, _w(method="matex")) != rule_config(CFG, r, _w(method="matex"))
    }
    assert {"train_demo_model", "attribute", "evaluate", "sanity", "ablation", "roar_finetune"} <= moved
    assert not moved & {"make_synthetic", "prepare", "figure_metrics"}


def test_unknown_rule_gets_the_whole_config():
    assert rule_config(CFG, "some_new_rule") == CFG


def test_stale_maps_are_refused_naming_the_setting():
    meta = {"settings": recorded_settings(CFG, "attribute", _w(method="matex"))}
    require_settings("maps/matex.npz", meta, CFG, "attribute", _w(method="matex"))  # same settings: fine
    changed = deep_update(CFG, {"attribution": {"params": {"matex": {"alpha": 0.9}}}})
    with pytest.raises(
        StaleArtifactError,
        match=r"maps/matex\.npz .*attribution\.params\.matex\.alpha "
        r"\(made with the default, now 0\.9\)",
    ):
        require_settings("maps/matex.npz", meta, changed, "attribute", _w(method="matex"))
    # another method's setting is not this artifact's business
    other = deep_update(CFG, {"attribution": {"params": {"rollout": {"discard_ratio": 0.5}}}})
    require_settings("maps/matex.npz", meta, other, "attribute", _w(method="matex"))


def test_key_order_of_a_config_file_does_not_matter():
    """Snakemake compares params by repr: a config written with its keys in another order is the same."""
    import json

    reordered = json.loads(json.dumps(CFG, sort_keys=True))
    assert repr(rule_config(reordered, "attribute", _w(method="matex"))) == repr(
        rule_config(CFG, "attribute", _w(method="matex"))
    )


def test_a_checkpoint_trained_with_other_settings_is_refused(tmp_path, make_tiny_demo):
    """The model edge: steps that load the demo checkpoint check the settings it was trained with."""
    from matex.data.transforms import InputGeometry
    from matex.models.loading import demo_model_cfg, load_model, save_checkpoint
    from matex.pipeline.core import load_configured_model

    tiny = make_tiny_demo(layers=1, context_length=8)  # tests/conftest.py
    cfg = deep_update(CFG, {"model": {"demo": tiny}})
    path = tmp_path / "model.pt"
    model = load_model("demo", demo=tiny, geometry=InputGeometry(224), seed=0)
    save_checkpoint(model, path, demo_model_cfg(tiny, 224), {"settings": recorded_settings(cfg, "train_demo_model")})
    load_configured_model(cfg, str(path))  # same settings: loads
    changed = deep_update(cfg, {"model": {"demo": {"epochs": 9}}})
    with pytest.raises(StaleArtifactError, match=r"model\.pt .*model\.demo\.epochs \(made with 3, now 9\)"):
        load_configured_model(changed, str(path))
