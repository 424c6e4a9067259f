"""Elements of the synthetic films: the chest drain shortcut, per-element pixel masks, and
re-rendering a film without any one element (the counterfactual x without e)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from matex.data.mscxr import split_patients
from matex.data.synthetic import (
    SyntheticSpec,
    generate_synthetic,
    render_case,
    sample_findings,
)
from matex.data.synthetic.writer import read_masks
from matex.errors import ConfigError

SMALL = {"width": (96, 128), "height": (112, 144)}


def _case_with(category: str, seed: int = 0) -> int:
    spec = SyntheticSpec(**SMALL)
    return next(i for i in range(500) if sample_findings(seed, i, spec)[0].category_name == category)


def test_omitting_an_element_changes_only_its_pixels():
    spec = SyntheticSpec(**SMALL)
    i = _case_with("Consolidation")
    full, _, masks = render_case(0, i, spec, drain=True, return_elements=True)
    assert {"lesion0", "drain", "ribs", "clavicles"} <= set(masks)
    for element in ("lesion0", "drain"):
        without, _ = render_case(0, i, spec, drain=True, omit={element})
        changed = np.abs(full.astype(int) - without) > 3
        assert changed.any(), element
        # the change lies on (or within a pixel or two of) the element's mask
        grown = masks[element].copy()
        for axis in (0, 1):
            grown = grown | np.roll(grown, 2, axis) | np.roll(grown, -2, axis)
        assert changed[~grown].mean() < 0.01, element
        assert changed[masks[element]].mean() > 0.5, element


def test_without_the_drain_is_exactly_the_film_never_given_one():
    spec = SyntheticSpec(**SMALL)
    i = _case_with("Consolidation")
    without, _ = render_case(0, i, spec, drain=True, omit={"drain"})
    never, _ = render_case(0, i, spec)
    assert np.array_equal(without, never)


def test_a_drained_apical_pneumothorax_is_mostly_re_expanded():
    """A film given a drain shows a treated (mostly re-expanded) pneumothorax: the same lesion, a thinner air rim (the
    reason a drain is a shortcut in practice); the counterfactual without the drain keeps that rim."""
    spec = SyntheticSpec()
    i = next(
        j
        for j in range(300)
        if [(f.category_name, f.zone) for f in sample_findings(0, j, spec)] == [("Pneumothorax", "apical")]
    )
    _, _, untreated = render_case(0, i, spec, return_elements=True)
    _, _, treated = render_case(0, i, spec, drain=True, return_elements=True)
    assert "drain" in treated
    assert 0.2 < treated["lesion0"].sum() / untreated["lesion0"].sum() < 0.8
    _, _, without_drain = render_case(0, i, spec, drain=True, omit={"drain"}, return_elements=True)
    assert np.array_equal(without_drain["lesion0"], treated["lesion0"])


def _lesion_distance_in_patches(masks: dict[str, np.ndarray]) -> float:
    """Least distance between a drain pixel and a lesion pixel, in patches of a 7 x 7 grid laid over
    the film's longer side (a letterbox patch; a centre-crop patch is smaller)."""
    from scipy.ndimage import distance_transform_edt

    lesions = np.logical_or.reduce([m for k, m in masks.items() if k.startswith("lesion")])
    if not lesions.any():
        return np.inf
    return float(distance_transform_edt(~lesions)[masks["drain"]].min() / (max(lesions.shape) / 7))


def test_drain_enters_laterally_and_never_comes_within_a_patch_of_a_lesion():
    """The property the shortcut test needs, over many seeds and every finding: the drain's pixels and
    the lesions' pixels are at least one patch apart; a film where no course clears has no drain
    (bilateral findings, two findings, or a lateral pneumothorax, whose air rim lines the wall the
    drain must cross on its side)."""
    spec = SyntheticSpec()
    placed, nearest = 0, []
    for seed in (0, 1, 2):
        for i in range(30):
            _, findings, masks = render_case(seed, i, spec, drain=True, return_elements=True)
            if "drain" not in masks:
                lateral_pneumothorax = (findings[0].category_name, findings[0].zone) == ("Pneumothorax", "lateral")
                assert len(findings) > 1 or findings[0].side == "bilateral" or lateral_pneumothorax, (seed, i, findings)
                continue
            placed += 1
            xs = np.flatnonzero(masks["drain"].any(0))
            width = masks["drain"].shape[1]
            assert xs.min() < 0.1 * width or xs.max() > 0.9 * width  # it enters from the side
            nearest.append(_lesion_distance_in_patches(masks))
    assert placed >= 65  # most films keep their drain
    assert min(nearest) >= 1.0, min(nearest)


def test_a_pneumothorax_is_drained_on_its_own_side():
    """The shortcut is a tube in the lung of the pneumothorax (where a clinician puts it), never in
    the other lung; an apical pneumothorax almost always leaves a clear low course on its side."""
    spec = SyntheticSpec()
    apical, drained = 0, 0
    for i in range(400):
        findings = sample_findings(0, i, spec)
        if [f.category_name for f in findings] != ["Pneumothorax"]:
            continue
        _, _, masks = render_case(0, i, spec, drain=True, return_elements=True)
        apical += findings[0].zone == "apical"
        if "drain" not in masks:
            continue
        drained += findings[0].zone == "apical"
        xs = np.flatnonzero(masks["drain"].any(0))
        image_side = "right" if xs.mean() < masks["drain"].shape[1] / 2 else "left"  # patient right = image left
        assert image_side == findings[0].side, (i, findings[0])
    assert apical >= 20 and drained >= 0.8 * apical, (drained, apical)


def test_the_old_course_would_have_crossed_the_pneumothorax():
    """The check above can fail: the usual course (lateral entry, tip at the apex) on the side of an
    apical pneumothorax comes within a patch of the lesion."""
    from scipy.ndimage import distance_transform_edt

    from matex.data.synthetic.anatomy import sample_anatomy
    from matex.data.synthetic.findings import _path_clear, drain_clearance_px, drain_path

    spec = SyntheticSpec()
    i = next(
        j
        for j in range(300)
        if [(f.category_name, f.zone) for f in sample_findings(0, j, spec)] == [("Pneumothorax", "apical")]
    )
    _, findings, masks = render_case(0, i, spec, return_elements=True)
    anatomy = sample_anatomy(np.random.default_rng(np.random.SeedSequence([0, i]).spawn(5)[0]), spec)
    distance = distance_transform_edt(~masks["lesion0"])
    same_side = drain_path(anatomy, np.random.default_rng(0), findings[0].side, route="apical")
    clearance = drain_clearance_px(anatomy.width, anatomy.height)
    assert not _path_clear(same_side, distance, clearance, (anatomy.width, anatomy.height))


def test_generator_draws_drains_by_split_and_records_masks(tmp_path):
    csv = generate_synthetic(
        tmp_path,
        n_images=120,
        seed=2,
        progress=False,
        drain_pneumothorax_train_fraction=1.0,
        drain_eval_fraction=0.5,
        val_fraction=0.3,
        **SMALL,
    )
    elements = pd.read_parquet(tmp_path / "synthetic_elements.parquet")
    truth = pd.read_parquet(tmp_path / "synthetic_truth.parquet")
    rows = pd.read_csv(csv)
    patient = dict(zip(rows["dicom_id"], rows["path"].str.split("/").str[2]))
    val = split_patients(sorted(set(patient.values())), 0.3, 2)
    per_image = elements.drop_duplicates("dicom_id").set_index("dicom_id")
    ptx = set(truth.loc[truth["category_name"] == "Pneumothorax", "dicom_id"])
    for dicom_id, row in per_image.iterrows():
        if patient[dicom_id] not in val:
            assert row["drain"] <= (dicom_id in ptx)  # training pneumothorax films only
    train_ptx = [d for d in per_image.index if patient[d] not in val and d in ptx]
    apical = set(truth.loc[(truth["category_name"] == "Pneumothorax") & (truth["zone"] == "apical"), "dicom_id"])
    train_apical = [d for d in train_ptx if d in apical]
    assert len(train_apical) >= 5 and per_image.loc[train_apical, "drain"].mean() > 0.8  # nearly all apical ones
    assert per_image.loc[train_ptx, "drain"].mean() > 0.5  # a lateral pneumothorax leaves no clear course
    val_ids = [d for d in per_image.index if patient[d] in val]
    assert 0 < per_image.loc[val_ids, "drain"].mean() < 1
    assert {
        c for c in truth.set_index("dicom_id").loc[[d for d in val_ids if per_image.loc[d, "drain"]], "category_name"]
    } - {"Pneumothorax"}, "evaluation drains must be independent of the finding"
    one = per_image.iloc[0]
    masks = read_masks(tmp_path / one["masks_path"])
    assert set(masks) == set(elements.loc[elements["dicom_id"] == per_image.index[0], "element"])
    assert all(m.dtype == bool and m.shape == masks["ribs"].shape for m in masks.values())


@pytest.mark.parametrize("mode", ["center_crop", "letterbox"])
def test_on_every_generated_film_the_drain_dilated_by_a_patch_misses_every_lesion_at_the_model_input(tmp_path, mode):
    """The written masks, laid through the model's alignment (224 px input, 32 px patches): the drain
    grown by one patch never meets a lesion."""
    from scipy.ndimage import distance_transform_edt

    from matex.data.synthetic.writer import read_masks
    from matex.data.transforms import InputGeometry
    from matex.metrics.counterfactual import _mask_to_input

    generate_synthetic(tmp_path, n_images=24, seed=3, progress=False, drain_eval_fraction=1.0, val_fraction=1.0)
    elements = pd.read_parquet(tmp_path / "synthetic_elements.parquet").drop_duplicates("dicom_id")
    geometry = InputGeometry(224, mode)
    checked = 0
    for _, row in elements[elements["drain"]].iterrows():
        masks = {k: _mask_to_input(m, geometry) for k, m in read_masks(tmp_path / row["masks_path"]).items()}
        grown = distance_transform_edt(~masks["drain"]) <= 32  # the drain dilated by a 32 px disc
        for name, mask in masks.items():
            if name.startswith("lesion"):
                assert not (grown & mask).any(), (row["dicom_id"], name, mode)
                checked += 1
    assert checked >= 15


def test_masks_are_byte_identical_for_a_seed(tmp_path):
    a = generate_synthetic(tmp_path / "a", n_images=6, seed=1, progress=False, drain_eval_fraction=1.0, **SMALL)
    b = generate_synthetic(tmp_path / "b", n_images=6, seed=1, progress=False, drain_eval_fraction=1.0, **SMALL)
    for f in sorted((a.parent).rglob("*.npz")):
        assert f.read_bytes() == (b.parent / f.relative_to(a.parent)).read_bytes()


def test_conspicuity_scales_the_lesion_and_is_checked(tmp_path):
    i = _case_with("Lung Opacity")
    base = render_case(0, i, SyntheticSpec(**SMALL))[0].astype(int)
    never = render_case(0, i, SyntheticSpec(**SMALL), with_findings=False)[0].astype(int)
    strong = render_case(0, i, SyntheticSpec(**SMALL, conspicuity=1.6))[0].astype(int)
    assert np.abs(strong - never).sum() > 1.3 * np.abs(base - never).sum()
    with pytest.raises(ConfigError, match="conspicuity"):
        generate_synthetic(tmp_path, n_images=2, conspicuity=0.0, progress=False)
    with pytest.raises(ConfigError, match="drain_eval_fraction"):
        generate_synthetic(tmp_path, n_images=2, drain_eval_fraction=1.5, progress=False)


def test_middle_lobe_and_lingula_lesions_sit_in_the_parser_s_regions():
    """A phrase naming the lingula or the right middle lobe points where the lesion was drawn: the
    lesion box's centre lies in that region of priors/regions.yaml (the text prior's boxes)."""
    from importlib import resources

    import yaml

    regions = yaml.safe_load(resources.files("matex.priors").joinpath("regions.yaml").read_text())["regions"]
    spec = SyntheticSpec()
    seen = 0
    for i in range(400):
        findings = sample_findings(0, i, spec)
        if not any(f.zone == "middle_lobe" and f.category_name != "Atelectasis" for f in findings):
            continue
        image, findings = render_case(0, i, spec)
        h, w = image.shape
        for f in findings:
            if f.zone != "middle_lobe" or not f.boxes:
                continue
            x0, x1, y0, y1 = regions["lingula" if f.side == "left" else "right_middle_lobe"]["box"]
            bx, by, bw, bh = f.boxes[0]
            assert x0 <= (bx + bw / 2) / w <= x1 and y0 <= (by + bh / 2) / h <= y1, (i, f.label_text, f.boxes)
            if f.location_named:
                assert ("lingul" in f.label_text.lower()) == (f.side == "left")
                assert ("middle lobe" in f.label_text.lower()) == (f.side == "right")
            seen += 1
        if seen >= 8:
            break
    assert seen >= 8
