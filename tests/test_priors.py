"""Anatomical phrase parser and text-guided spatial prior (docs/method.md, Eqs. 3-5).

Phrases are written for these tests in the style of MS-CXR; none is taken from MIMIC.
Remember the radiological convention: the patient's right is the IMAGE LEFT (x < 0.5).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from matex.errors import ConfigError
from matex.priors import (
    PhraseParse,
    load_regions,
    parse_phrase,
    region_mask,
    spatial_prior,
)

SIZE = (120, 100)  # (H, W), deliberately not square


def names(text: str) -> set[str]:
    return set(parse_phrase(text).region_names)


def core_centre(text: str, size=SIZE) -> tuple[float, float]:
    """Normalised (x, y) centroid of the pixels where the mask is 1 (inside the named regions)."""
    mask = region_mask(text, size)
    rows, cols = np.nonzero(mask == 1.0)
    assert rows.size, f"no region for {text!r}"
    h, w = size
    return float((cols + 0.5).mean() / w), float((rows + 0.5).mean() / h)


def box_centre(name: str) -> tuple[float, float]:
    x0, x1, y0, y1 = load_regions()[name].box
    return (x0 + x1) / 2, (y0 + y1) / 2


# ---------------------------------------------------------------- the region table


def test_region_table_follows_radiological_convention_and_stated_proportions():
    regions = load_regions()
    sided = [n for n in regions if n.startswith(("right_", "left_"))]
    assert len(sided) >= 20
    for name in sided:
        cx, _ = box_centre(name)
        # patient's right = image left
        assert (cx < 0.5) if name.startswith("right_") else (cx > 0.5), name
    assert regions["right_lung"].box == (0.12, 0.48, 0.12, 0.80)
    assert regions["left_lung"].box == (0.52, 0.88, 0.12, 0.80)
    hx, hy = box_centre("heart")
    assert 0.5 < hx < 0.6 and regions["heart"].box[2:] == (0.45, 0.76)
    # zones: thirds of the apex-to-dome height, the lower zone reaching into the lateral recess
    assert regions["right_upper_zone"].box[2:] == (0.12, 0.31) and regions["right_mid_zone"].box[2:] == (0.31, 0.50)
    assert regions["right_lower_zone"].box[2] == 0.50
    # the hila lie in the mid zone; the lingula and the middle lobe beside the heart borders
    assert 0.31 <= box_centre("right_hilum")[1] <= 0.50
    lx0, lx1, ly0, _ = regions["lingula"].box
    assert lx0 < regions["heart"].box[1] < lx1 and ly0 >= regions["heart"].box[2] - 0.02
    for needed in [
        "right_middle_lobe",
        "lingula",
        "left_lower_lobe",
        "right_hilum",
        "left_perihilar",
        "retrocardiac",
        "right_costophrenic_angle",
        "left_hemidiaphragm",
        "mediastinum",
        "right_apex",
        "right_upper_zone",
        "left_mid_zone",
        "right_lower_zone",
    ]:
        assert needed in regions


def test_retrocardiac_lies_behind_the_heart_on_the_patients_left():
    x0, x1, y0, y1 = load_regions()["retrocardiac"].box
    hx0, hx1, hy0, hy1 = load_regions()["heart"].box
    assert x0 >= 0.5  # image right of the spine = patient's left
    assert hx0 <= x0 and x1 <= hx1 and hy0 <= y0 and y1 <= hy1  # projects inside the heart shadow
    cx, cy = core_centre("retrocardiac opacity")
    assert cx > 0.5 and cy > 0.5


# ---------------------------------------------------------------- locations


def test_left_lower_lobe_is_in_the_image_right_lower_quadrant():
    p = parse_phrase("Left lower lobe consolidation")
    assert p.region_names == ("left_lower_lobe",) and p.has_location and not p.negated
    cx, cy = core_centre("Left lower lobe consolidation")
    assert cx > 0.5 and cy > 0.5


def test_right_apical_pneumothorax_is_in_the_image_upper_left():
    assert names("right apical pneumothorax") == {"right_apex"}
    cx, cy = core_centre("right apical pneumothorax")
    assert cx < 0.5 and cy < 0.3


def test_right_lower_lobe_is_in_the_image_left_half():
    cx, cy = core_centre("Patchy right lower lobe airspace disease")
    assert cx < 0.5 and cy > 0.5


def test_bibasilar_means_both_lower_zones():
    assert names("Mild bibasilar atelectasis") == {"right_lower_zone", "left_lower_zone"}
    mask = region_mask("Mild bibasilar atelectasis", SIZE)
    h, w = SIZE
    assert mask[int(0.7 * h), int(0.3 * w)] == 1 and mask[int(0.7 * h), int(0.7 * w)] == 1
    assert mask[int(0.2 * h), int(0.3 * w)] == 0  # upper zones untouched


def test_cardiomegaly_alone_implies_the_heart():
    for text in [
        "Cardiomegaly",
        "Moderately enlarged cardiac silhouette",
        "Heart is enlarged",
        "heart size is mildly enlarged",
    ]:
        assert names(text) == {"heart"}, text
        assert [f.finding for f in parse_phrase(text).findings] == ["cardiomegaly"], text
    cx, cy = core_centre("cardiomegaly")
    assert cx == pytest.approx(box_centre("heart")[0], abs=0.02)


BOTH_BASES_AND_ANGLES = {"right_lower_zone", "left_lower_zone", "right_costophrenic_angle", "left_costophrenic_angle"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("left base opacity", {"left_lower_zone"}),
        ("Right basilar consolidation", {"right_lower_zone"}),
        ("bilateral lower zone opacities", {"right_lower_zone", "left_lower_zone"}),
        ("opacities at both lung bases", {"right_lower_zone", "left_lower_zone"}),
        ("patchy mid lung opacity", {"right_mid_zone", "left_mid_zone"}),  # zone without side
        ("left upper zone nodular opacity", {"left_upper_zone"}),
        ("Right-sided opacity", {"right_lung"}),  # side alone -> lung field
        ("Right-sided pleural effusion", {"right_lower_zone", "right_costophrenic_angle"}),  # default
        ("small bilateral pleural effusions", BOTH_BASES_AND_ANGLES),
        ("right and left pleural effusions", BOTH_BASES_AND_ANGLES),
        ("RLL consolidation", {"right_lower_lobe"}),
        ("opacity in the LUL", {"left_upper_lobe"}),
        ("R lower lobe opacity", {"right_lower_lobe"}),
        ("L base atelectasis", {"left_lower_zone"}),
        ("right middle lobe pneumonia", {"right_middle_lobe"}),
        ("middle lobe collapse", {"right_middle_lobe"}),  # only the right has one
        ("lingular atelectasis", {"lingula"}),
        ("left upper and lower lobe opacities", {"left_upper_lobe", "left_lower_lobe"}),
        ("bilateral perihilar haziness", {"right_perihilar", "left_perihilar"}),
        ("prominent left hilar contour", {"left_hilum"}),
        ("blunting of the right costophrenic angle", {"right_costophrenic_angle"}),
        ("elevated left hemidiaphragm", {"left_hemidiaphragm"}),
        ("widened mediastinum", {"mediastinum"}),
        ("left retrocardiac opacity", {"retrocardiac"}),
        ("biapical pleural thickening", {"right_apex", "left_apex"}),
        ("retrocardiac and left lower lobe opacity", {"retrocardiac", "left_lower_lobe"}),
    ],
)
def test_phrase_patterns_map_to_regions(text, expected):
    assert names(text) == expected


def test_several_findings_in_one_sentence():
    assert names("right effusion and left lower lobe atelectasis") == {
        "right_lower_zone",
        "right_costophrenic_angle",
        "left_lower_lobe",
    }
    p = parse_phrase("right effusion and left lower lobe atelectasis")
    assert {f.finding for f in p.findings} == {"pleural effusion", "atelectasis"}


# ---------------------------------------------------------------- negation and uncertainty


def test_negated_finding_gives_a_flat_prior():
    p = parse_phrase("No pneumothorax")
    assert p.negated and not p.has_location
    prior = spatial_prior("No pneumothorax", SIZE)
    assert prior.shape == SIZE and np.all(prior == 1.0)


@pytest.mark.parametrize(
    "text",
    [
        "no left pleural effusion",
        "without right lower lobe consolidation",
        "negative for left apical pneumothorax",
        "right lung base is clear",
        "left basilar opacity has resolved",
        "right costophrenic angle is free of fluid",
        "pneumothorax is not seen at the right apex",
    ],
)
def test_negation_cues_remove_the_location(text):
    p = parse_phrase(text)
    assert p.negated and not p.has_location, (text, p)
    assert np.all(spatial_prior(text, (16, 16)) == 1.0)


def test_negation_is_scoped_to_its_clause():
    text = "small left effusion, no right effusion"
    assert names(text) == {"left_lower_zone", "left_costophrenic_angle"}
    assert not parse_phrase(text).negated
    prior = spatial_prior(text, SIZE)
    h, w = SIZE
    cols = (np.arange(w) + 0.5) / w
    # the left lung boxes start at x = 0.52: beyond sigma (0.1) to their left the prior is flat
    assert np.all(prior[:, cols < 0.42] == 1.0)
    assert prior[:, cols > 0.5].max() == pytest.approx(2.5)
    flags = {(f.finding, f.negated) for f in parse_phrase(text).findings}
    assert flags == {("pleural effusion", False), ("pleural effusion", True)}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Left lower lobe opacity with no effusion", {"left_lower_lobe"}),
        ("No pneumothorax but right basilar atelectasis", {"right_lower_zone"}),
        ("no change in the left basilar opacity", {"left_lower_zone"}),  # "no change" is not negation
    ],
)
def test_mixed_clauses_keep_the_positive_location(text, expected):
    assert names(text) == expected
    assert not parse_phrase(text).negated


def test_negation_carries_over_an_anatomy_only_fragment():
    p = parse_phrase("no right upper and middle lobe opacity")
    assert p.negated and not p.has_location


def test_uncertain_finding_keeps_its_location():
    p = parse_phrase("possible right middle lobe pneumonia")
    assert p.uncertain and p.has_location and p.region_names == ("right_middle_lobe",)
    assert p.findings[0].uncertain and not p.findings[0].negated


@pytest.mark.parametrize(
    "text",
    [
        "left basilar opacity may represent atelectasis",
        "likely right lower lobe pneumonia",
        "pneumonia in the left lower lobe cannot be excluded",
        "right apical pneumothorax cannot be excluded",
        "opacity at the right base concerning for pneumonia",
        "left retrocardiac opacity suggestive of consolidation",
        "questionable small left effusion",
    ],
)
def test_uncertainty_cues(text):
    p = parse_phrase(text)
    assert p.uncertain and p.has_location and not p.negated, (text, p)


def test_certain_phrase_is_not_uncertain():
    assert not parse_phrase("Right lower lobe consolidation").uncertain


def test_no_location_gives_a_flat_prior():
    p = parse_phrase("pneumonia")
    assert not p.has_location and not p.negated
    assert [f.finding for f in p.findings] == ["pneumonia"]
    assert np.all(spatial_prior("pneumonia", SIZE) == 1.0)
    assert np.all(region_mask("pneumonia", SIZE) == 0.0)


# ---------------------------------------------------------------- robustness


@pytest.mark.parametrize("text", ["", "   \n\t", "...,;", "¿?", "Épanchement — ∅ 肺"])
def test_odd_text_does_not_crash_and_is_flat(text):
    p = parse_phrase(text)
    assert not p.has_location
    assert np.all(spatial_prior(text, (8, 9)) == 1.0)


def test_non_ascii_punctuation_and_case_are_tolerated():
    assert names("LEFT\u2011SIDED PLEURAL EFFUSION.") == {
        "left_lower_zone",
        "left_costophrenic_angle",
    }  # non-breaking hyphen
    assert names("Left lower lobe consolidation") == names("left LOWER lobe: consolidation!!")
    assert names("opacité at the right base") == {"right_lower_zone"}


def test_very_long_text_is_parsed_quickly():
    text = "left lower lobe opacity, " * 4000 + "no pneumothorax"
    start = time.perf_counter()
    p = parse_phrase(text)
    assert time.perf_counter() - start < 2.0
    assert p.region_names == ("left_lower_lobe",)


def test_non_string_input_is_a_type_error():
    with pytest.raises(TypeError, match="str"):
        parse_phrase(None)  # type: ignore[arg-type]


def test_parse_is_cached():
    parse_phrase.cache_clear()
    first = parse_phrase("right apical pneumothorax")
    second = parse_phrase("right apical pneumothorax")
    assert first is second and parse_phrase.cache_info().hits >= 1


# ---------------------------------------------------------------- prior values (Eqs. 3-5)


def test_prior_dtype_shape_and_orientation_on_a_non_square_image():
    h, w = 30, 50
    prior = spatial_prior("Left lower lobe consolidation", (h, w))
    assert prior.dtype == np.float32 and prior.shape == (h, w)
    x0, x1, y0, y1 = load_regions()["left_lower_lobe"].box
    inside_row, inside_col = int(((y0 + y1) / 2) * h), int(((x0 + x1) / 2) * w)
    assert prior[inside_row, inside_col] == np.float32(2.5)
    assert prior[int(0.2 * h), int(0.2 * w)] == 1.0  # image upper left: far away


@pytest.mark.parametrize("strength", [1.5, 2.5, 3.5])
def test_prior_equals_strength_inside_and_one_far_away(strength):
    prior = spatial_prior("right apical pneumothorax", SIZE, strength=strength)
    assert prior.max() == np.float32(strength) and prior.min() == 1.0
    x0, x1, y0, y1 = load_regions()["right_apex"].box
    h, w = SIZE
    xs, ys = (np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h
    inside = ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
    assert np.all(prior[inside] == np.float32(strength))


def test_prior_falls_linearly_with_distance_up_to_sigma():
    sigma, strength = 0.1, 2.5
    h, w = 200, 400
    prior = spatial_prior("left lower lobe consolidation", (h, w), sigma=sigma, strength=strength)
    x0, x1, y0, y1 = load_regions()["left_lower_lobe"].box
    row = int(((y0 + y1) / 2) * h)  # a row through the box: distance = x - x1
    xs = (np.arange(w) + 0.5) / w
    right = xs > x1
    dist = xs[right] - x1
    expected = 1 + (strength - 1) * np.clip(1 - dist / sigma, 0, 1)
    np.testing.assert_allclose(prior[row, right], expected, atol=1e-6)
    assert np.all(np.diff(prior[row, right]) <= 0)  # monotone outside the box
    assert np.all(prior[row, right][dist >= sigma] == 1.0)
    assert np.any((prior[row, right] > 1) & (prior[row, right] < strength))  # a real ramp


def test_prior_distance_to_a_box_corner_is_euclidean():
    sigma, h, w = 0.2, 100, 100
    mask = region_mask("right apical pneumothorax", (h, w), sigma=sigma)
    x0, x1, y0, y1 = load_regions()["right_apex"].box
    i, j = 30, 50  # below and to the image right of the box
    cx, cy = (j + 0.5) / w, (i + 0.5) / h
    d = np.hypot(cx - x1, cy - y1)
    assert cx > x1 and cy > y1 and d < sigma
    assert mask[i, j] == pytest.approx(1 - d / sigma, abs=1e-6)


def test_prior_of_several_regions_is_their_maximum():
    both = region_mask("right effusion and left lower lobe atelectasis", SIZE)
    right = region_mask("right effusion", SIZE)
    left = region_mask("left lower lobe atelectasis", SIZE)
    np.testing.assert_array_equal(both, np.maximum(right, left))


def test_region_mask_accepts_a_parse_and_returns_a_fresh_array():
    parse = parse_phrase("left base opacity")
    assert isinstance(parse, PhraseParse)
    first = region_mask(parse, SIZE)
    np.testing.assert_array_equal(first, region_mask("left base opacity", SIZE))
    first[:] = 7.0  # callers may write into it ...
    assert region_mask(parse, SIZE).max() == 1.0  # ... without corrupting the cache
    assert first.flags.writeable


def test_sigma_scales_the_ramp():
    narrow = region_mask("left base opacity", SIZE, sigma=0.05)
    wide = region_mask("left base opacity", SIZE, sigma=0.2)
    assert (narrow > 0).sum() < (wide > 0).sum()
    np.testing.assert_array_equal(narrow == 1, wide == 1)  # the core (inside the box) is the same


@pytest.mark.parametrize(
    "kwargs, key",
    [({"sigma": 0.0}, "prior_sigma"), ({"sigma": float("nan")}, "prior_sigma"), ({"strength": 0.5}, "prior_strength")],
)
def test_bad_parameters_name_the_config_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        spatial_prior("left base opacity", SIZE, **kwargs)


def test_bad_size_is_rejected():
    with pytest.raises(ValueError, match="size"):
        spatial_prior("left base opacity", (0, 10))


def test_as_record_for_the_parse_table():
    rec = parse_phrase("possible small left effusion, no pneumothorax").as_record()
    assert rec == {
        "prior_regions": "left_lower_zone;left_costophrenic_angle",
        "prior_weights": "1.00;1.00",
        "prior_has_location": True,
        "prior_negated": False,
        "prior_uncertain": True,
        "prior_findings": "pleural effusion",
        "prior_negated_findings": "pneumothorax",
    }
