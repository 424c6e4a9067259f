"""Report language the prior used to misread (issue 25.4-6): negated lists, change statements,
narrowing qualifiers, two findings in one sentence, and edema's perihilar-and-basal default.

Every phrase was written for these tests; none is taken from a report corpus. Radiological
convention: the patient's right is the IMAGE LEFT (x < 0.5)."""

from __future__ import annotations

import numpy as np
import pytest

from matex.priors import load_regions, parse_phrase, spatial_prior

SIZE = (100, 100)


def names(text: str) -> set[str]:
    return set(parse_phrase(text).region_names)


def prior_at(text: str, x: float, y: float) -> float:
    """The prior (strength 2.5) at normalised film point (x, y)."""
    p = spatial_prior(text, SIZE, sigma=0.05, strength=2.5)
    return float(p[int(y * SIZE[0]), int(x * SIZE[1])])


# -------------------------------------------------------------- 4. a negation scopes over a list
@pytest.mark.parametrize(
    "text",
    [
        "No pneumothorax, pleural effusion, or focal consolidation.",
        "No focal airspace opacity, effusion or pneumothorax.",
        "Negative for pleural effusion or pneumothorax.",
        "Negative for consolidation, effusion, and pneumothorax.",
        "Without evidence of pneumothorax.",
        "Without evidence of focal consolidation, pleural effusion, or pneumothorax.",
        "The lungs are clear, with no pleural effusion or pneumothorax.",
        "The lungs are clear bilaterally, with no consolidation, effusion or pneumothorax.",
        "There is no pulmonary edema, pleural effusion, or pneumothorax.",
        "No cardiomegaly, vascular congestion, or effusion.",
    ],
)
def test_a_fully_negated_list_gives_a_flat_prior(text):
    parse = parse_phrase(text)
    assert parse.negated and not parse.has_location, parse.region_names
    assert np.all(spatial_prior(text, SIZE) == 1.0)
    assert parse.findings and all(f.negated for f in parse.findings)  # every listed finding negated


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("No pneumothorax, small right pleural effusion.", {"right_lower_zone", "right_costophrenic_angle"}),
        ("No effusion or pneumothorax, but a left basilar opacity persists.", {"left_lower_zone"}),
        ("Negative for pneumothorax, with a small left effusion.", {"left_lower_zone", "left_costophrenic_angle"}),
        ("No pneumothorax; right upper lobe consolidation.", {"right_upper_lobe"}),
        ("No pneumothorax, possible right lower lobe pneumonia.", {"right_lower_lobe"}),
        ("Left basilar atelectasis, no pleural effusion or pneumothorax.", {"left_lower_zone"}),
    ],
)
def test_the_negated_list_ends_where_a_finding_is_said_to_be_there(text, kept):
    """The list ends at a size or course word, "but", "with", ";" or a hedge; words before the
    negation stay positive."""
    assert names(text) == kept
    assert not parse_phrase(text).negated


# ----------------------------------------------------- 5a. a changed finding is still in its place
@pytest.mark.parametrize(
    ("text", "place"),
    [
        ("Improved left lower lobe consolidation.", {"left_lower_lobe"}),
        ("Interval improvement of the right perihilar opacity.", {"right_perihilar"}),
        ("Decreased right pleural effusion.", {"right_lower_zone", "right_costophrenic_angle"}),
        ("The left pneumothorax has decreased in size.", {"left_apex", "left_lateral_pleura"}),
        ("Residual right apical pneumothorax.", {"right_apex"}),
        ("Resolving lingular pneumonia.", {"lingula"}),
        ("Partially resolved right basilar atelectasis.", {"right_lower_zone"}),
        ("No improvement in the retrocardiac opacity.", {"retrocardiac"}),
    ],
)
def test_a_finding_described_as_changed_keeps_its_place(text, place):
    parse = parse_phrase(text)
    assert set(parse.region_names) == place and not parse.negated
    assert all(not f.negated for f in parse.findings)


@pytest.mark.parametrize(
    "text",
    ["Improved aeration of the right base.", "The left effusion has resolved.", "The lungs are clear."],
)
def test_a_change_or_status_without_a_finding_adds_no_region(text):
    assert not parse_phrase(text).has_location and parse_phrase(text).negated


# ------------------------------------------------------------- 5b. a qualifier narrows the zone
def test_predominantly_basal_narrows_both_lungs_to_the_bases():
    text = "Bilateral patchy opacities, predominantly basal."
    assert names(text) == {"right_lower_zone", "left_lower_zone"}
    assert prior_at(text, 0.30, 0.20) == pytest.approx(1.0)  # right upper zone: no lift any more
    assert prior_at(text, 0.30, 0.65) == pytest.approx(2.5)  # right base: full strength


@pytest.mark.parametrize(
    ("text", "narrowed"),
    [
        ("Pulmonary edema, predominantly perihilar.", {"right_perihilar", "left_perihilar"}),
        ("Left lung opacities, mainly in the upper zone.", {"left_upper_zone"}),
        ("Reticular opacities in both lungs, mostly at the bases.", {"right_lower_zone", "left_lower_zone"}),
        ("Right-sided opacity, chiefly apical.", {"right_apex"}),
    ],
)
def test_a_narrowing_qualifier_keeps_only_the_zone_it_names(text, narrowed):
    assert names(text) == narrowed


def test_a_narrowing_word_with_only_a_side_weights_instead_of_dropping():
    """ "predominantly on the right" names no zone: both effusions stay, the right one weighs more."""
    parse = parse_phrase("Bilateral pleural effusions, predominantly on the right.")
    w = dict(zip(parse.region_names, parse.weights))
    assert set(w) == {"right_lower_zone", "left_lower_zone", "right_costophrenic_angle", "left_costophrenic_angle"}
    assert w["right_lower_zone"] == 1.0 and w["left_lower_zone"] < 1.0


# ------------------------------------------------ 5c. two findings in one sentence, each its place
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Right lower lobe pneumonia and a small pleural effusion.",
            {"right_lower_lobe", "right_lower_zone", "right_costophrenic_angle"},
        ),
        (
            "Left pleural effusion with a pneumothorax.",
            {"left_lower_zone", "left_costophrenic_angle", "left_apex", "left_lateral_pleura"},
        ),
        ("Retrocardiac opacity and effusion.", {"retrocardiac", "left_lower_zone", "left_costophrenic_angle"}),
        (
            "Cardiomegaly and interstitial edema.",
            {"heart", "right_perihilar", "left_perihilar", "right_lower_zone", "left_lower_zone"},
        ),
    ],
)
def test_two_findings_in_one_sentence_each_get_their_own_place(text, expected):
    assert names(text) == expected


def test_a_finding_without_a_place_of_its_own_still_inherits_the_location():
    assert names("Right middle lobe consolidation and atelectasis.") == {"right_middle_lobe"}
    assert names("Left effusion with adjacent atelectasis.") == {"left_lower_zone", "left_costophrenic_angle"}


# --------------------------------------------------------- 6. edema: perihilar and basal, bilateral
def test_edema_prior_lifts_the_perihilar_regions_and_bases_not_the_whole_lungs():
    text = "Moderate pulmonary edema."
    assert names(text) == {"right_perihilar", "left_perihilar", "right_lower_zone", "left_lower_zone"}
    regions = load_regions()
    for name in ("right_perihilar", "left_lower_zone"):
        x0, x1, y0, y1 = regions[name].box
        assert prior_at(text, (x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx(2.5), name
    assert prior_at(text, 0.15, 0.15) == pytest.approx(1.0)  # lateral right upper zone: flat
    assert prior_at(text, 0.85, 0.15) == pytest.approx(1.0)  # lateral left upper zone: flat


def test_one_sided_edema_keeps_its_side():
    assert names("Left-sided pulmonary edema.") == {"left_perihilar", "left_lower_zone"}
