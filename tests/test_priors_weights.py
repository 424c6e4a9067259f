"""Issue 13's table, phrase by phrase, and the weights of several findings in one phrase."""

from __future__ import annotations

import pytest

from matex.priors import parse_phrase
from matex.priors.tables import load_finding_defaults, load_weights

W = load_weights()


def weights(text: str) -> dict[str, float]:
    p = parse_phrase(text)
    return dict(zip(p.region_names, p.weights))


def top(text: str) -> set[str]:
    w = weights(text)
    return {n for n, v in w.items() if v == max(w.values())}


def test_effusion_reads_as_lower_zone_and_costophrenic_angle():
    assert set(weights("Moderate right pleural effusion, unchanged.")) == {
        "right_lower_zone",
        "right_costophrenic_angle",
    }


def test_layering_bilateral_effusions_larger_on_the_right():
    w = weights("Layering bilateral effusions, larger on the right.")
    assert set(w) == {"right_lower_zone", "left_lower_zone", "right_costophrenic_angle", "left_costophrenic_angle"}
    assert top("Layering bilateral effusions, larger on the right.") == {"right_lower_zone", "right_costophrenic_angle"}
    assert w["left_lower_zone"] == pytest.approx(W.deemphasised)


@pytest.mark.parametrize("text", ["Interstitial edema has worsened.", "Interval increase in pulmonary edema."])
def test_edema_is_perihilar_and_basal_on_both_sides(text):
    """Issue 25.6: edema's default is the perihilar regions and the bases, not the whole lungs."""
    w = weights(text)
    assert set(w) == {"right_perihilar", "left_perihilar", "right_lower_zone", "left_lower_zone"}
    assert "right_lung" not in w and "left_upper_zone" not in w
    assert set(w.values()) == {1.0}


def test_opacities_most_pronounced_at_the_bases():
    text = "Scattered opacities in both lungs, most pronounced at the bases."
    assert set(weights(text)) == {"right_lung", "left_lung", "right_lower_zone", "left_lower_zone"}
    assert top(text) == {"right_lower_zone", "left_lower_zone"}


@pytest.mark.parametrize(
    "text, lobe",
    [
        ("Right middle lobe scarring and atelectasis.", "right_middle_lobe"),
        ("Left lower lobe consolidation and atelectasis.", "left_lower_lobe"),
        ("Right upper lobe mass and collapse.", "right_upper_lobe"),
        ("Lingular opacity and consolidation.", "lingula"),
    ],
)
def test_lobe_x_and_y_keeps_the_lobe(text, lobe):
    assert set(weights(text)) == {lobe}


def test_lingular_opacity_without_effusion_keeps_the_lingula():
    p = parse_phrase("Lingular opacity without effusion.")
    assert p.region_names == ("lingula",) and not p.negated
    assert {(f.finding, f.negated) for f in p.findings} == {("lung opacity", False), ("pleural effusion", True)}


@pytest.mark.parametrize(
    "text",
    [
        "Aeration at both bases has improved, with a persisting right basal effusion.",
        "With a persisting right basal effusion, aeration at both bases has improved.",
        "Aeration at both bases has improved. Persisting right basal effusion.",
        "Persisting right basal effusion. Aeration at both bases has improved.",
    ],
)
def test_improved_statement_is_not_a_finding_whatever_the_order(text):
    assert set(weights(text)) == {"right_lower_zone"}


def test_bibasilar_atelectasis_with_a_small_right_effusion():
    text = "Bibasilar atelectasis with a small right pleural effusion."
    w = weights(text)
    assert set(w) == {"right_lower_zone", "left_lower_zone", "right_costophrenic_angle"}
    assert top(text) == {"right_lower_zone", "right_costophrenic_angle"}
    assert w["left_lower_zone"] == pytest.approx(W.diffuse / W.specific)


def test_specific_outweighs_diffuse():
    w = weights("Diffuse bilateral airspace disease and a left upper lobe consolidation.")
    assert w["left_upper_lobe"] == 1.0 and w["right_lung"] == w["left_lung"] == pytest.approx(0.6)


def test_hedged_finding_keeps_its_region_at_the_hedged_weight_and_sets_the_flag():
    p = parse_phrase("Right lower lobe consolidation, possibly with a small left effusion.")
    w = dict(zip(p.region_names, p.weights))
    assert w["right_lower_lobe"] == 1.0
    assert w["left_lower_zone"] == pytest.approx(W.hedged) and w["left_costophrenic_angle"] == pytest.approx(W.hedged)
    assert p.uncertain
    assert parse_phrase("Possible left lower lobe pneumonia.").uncertain
    assert not parse_phrase("Left lower lobe pneumonia.").uncertain


def test_a_single_location_keeps_full_weight_even_when_hedged_or_diffuse():
    """Weights are relative: a phrase's largest weight is 1, so Eq. 5 is unchanged for one location."""
    assert set(parse_phrase("Possible left lower lobe pneumonia.").weights) == {1.0}
    assert set(parse_phrase("Bilateral pleural effusions.").weights) == {1.0}


def test_explicit_location_wins_over_the_finding_default():
    assert set(weights("Right basilar pleural effusion.")) == {"right_lower_zone"}
    assert set(weights("Right apical pneumothorax.")) == {"right_apex"}
    assert set(weights("Right perihilar edema.")) == {"right_perihilar"}
    assert set(weights("Right pneumothorax.")) == {"right_apex", "right_lateral_pleura"}
    assert set(weights("Pericardial effusion.")) == {"heart"}


def test_finding_defaults_are_data():
    defaults = load_finding_defaults()
    assert defaults["pleural effusion"] == {"{side}_lower_zone": 1.0, "{side}_costophrenic_angle": 1.0}
    assert set(defaults["edema"]) == {"{side}_perihilar", "{side}_lower_zone"}
    assert {"cardiomegaly", "pericardial effusion", "pneumothorax"} <= set(defaults)
    assert 0 < W.diffuse < W.specific and 0 < W.hedged < 1 and 0 < W.deemphasised < 1


def test_negation_in_another_clause_leaves_the_finding_alone():
    assert set(weights("Consolidation in the lingula, without pleural fluid.")) == {"lingula"}
    assert set(weights("No pneumothorax. Small left pleural effusion.")) == {
        "left_lower_zone",
        "left_costophrenic_angle",
    }
    assert not weights("Small left pleural effusion has resolved. No pneumothorax.")
