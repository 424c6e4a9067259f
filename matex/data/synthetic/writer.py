"""Writing the synthetic dataset: MIMIC-like ids and folders, JPGs, the MS-CXR-format CSV and the
truth table (side, zone, whether the phrase names the location) of every finding."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ...io import atomic_path, write_parquet
from ..mscxr import REQUIRED_COLUMNS, split_patients
from .anatomy import SyntheticSpec
from .render import render_case, sample_findings

CSV_NAME = "MS_CXR_Local_Alignment_v1.0.0.csv"
TRUTH_NAME = "synthetic_truth.parquet"
ELEMENTS_NAME = "synthetic_elements.parquet"
ELEMENT_COLUMNS = (
    "dicom_id",
    "case_index",
    "element",
    "kind",
    "finding_index",
    "drain",
    "masks_path",
    "n_pixels",
)
# elements whose removal leaves a plausible film: lesions, devices, and the bones (a bone-suppressed
# film, as dual-energy subtraction makes); the lungs, heart and soft tissue are never removed
ELEMENT_KINDS = {"drain": "device", "ribs": "anatomy", "clavicles": "anatomy"}
CSV_COLUMNS = tuple(REQUIRED_COLUMNS)  # the MS-CXR CSV's columns, as the loader requires them
TRUTH_COLUMNS = (
    "dicom_id",
    "finding_index",
    "label_text",
    "category_name",
    "side",
    "zone",
    "location_named",
    "n_boxes",
)


def _layout(seed: int, n_images: int) -> list[tuple[str, str, str]]:
    """(patient folder, study folder, dicom_id) per image: 1-3 images per patient, MIMIC-like ids."""
    rng = np.random.default_rng([seed, 2**31 - 1])
    per_patient = []
    while sum(per_patient) < n_images:
        per_patient.append(int(rng.choice([1, 2, 3], p=[0.6, 0.28, 0.12])))
    per_patient[-1] -= sum(per_patient) - n_images
    step = max(2, 9_990_000 // len(per_patient))
    patient_ids = 10_000_000 + np.cumsum(rng.integers(1, step, size=len(per_patient)))
    used_studies: set[int] = set()
    out = []
    for pid, count in zip(patient_ids, per_patient):
        for _ in range(count):
            study = int(rng.integers(50_000_000, 60_000_000))
            while study in used_studies:
                study = int(rng.integers(50_000_000, 60_000_000))
            used_studies.add(study)
            words = rng.integers(0, 2**32, size=5, dtype=np.uint64)
            dicom_id = "-".join(f"{int(w):08x}" for w in words)
            out.append((f"p{int(pid)}", f"s{study}", dicom_id))
    return out


# 64 lines, 28 of them its parameters and docstring: the steps are _checked_spec, _write_case, _write_tables
def generate_synthetic(
    out_dir: str | Path,
    n_images: int = 3000,
    seed: int = 0,
    width: tuple[int, int] = (288, 352),
    height: tuple[int, int] = (320, 384),
    no_location_fraction: float = 0.15,
    second_finding_fraction: float = 0.1,
    jpeg_quality: int = 92,
    progress: bool = True,
    conspicuity: float = 1.0,
    drain_pneumothorax_train_fraction: float = 0.0,
    drain_eval_fraction: float = 0.0,
    val_fraction: float = 0.2,
    workers: int = 1,
) -> Path:
    """Write ``n_images`` synthetic radiographs under ``out_dir/files/...`` plus the MS-CXR-format CSV,
    ``synthetic_truth.parquet`` (one row per finding) and ``synthetic_elements.parquet`` (one row per
    drawn element, with its pixel masks in ``<image>.masks.npz`` next to the JPG); return the CSV's
    path. Same seed -> byte-identical outputs.

    The chest drain (the known shortcut, as in Oakden-Rayner et al. 2020) is drawn on a
    ``drain_pneumothorax_train_fraction`` share of training films with a pneumothorax, and on a
    ``drain_eval_fraction`` share of validation films of every class, always at least one patch of the
    model's grid away from every lesion (``findings.place_drain``; a film where no course keeps that
    clearance, e.g. with bilateral findings, gets none, and its ``drain`` column says so). Training and validation are the
    patient split ``prepare`` will make (same ``val_fraction`` and seed). ``workers`` > 1 renders the
    cases in that many processes; the files are the same bytes whatever the number of workers."""
    spec = _checked_spec(
        n_images, jpeg_quality, width, height, no_location_fraction, second_finding_fraction, conspicuity
    )
    for key, value in (
        ("drain_pneumothorax_train_fraction", drain_pneumothorax_train_fraction),
        ("drain_eval_fraction", drain_eval_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"data.synthetic.{key} must lie in [0, 1], got {value}")
    out_dir = Path(out_dir)
    layout = _layout(seed, n_images)
    val_patients = split_patients([p for p, _, _ in layout], val_fraction, seed)
    write_case = functools.partial(
        _write_case, out_dir, seed, spec, drain_pneumothorax_train_fraction, drain_eval_fraction, int(jpeg_quality)
    )
    cases = [(i, layout[i], layout[i][0] in val_patients) for i in range(n_images)]
    rows, truth, element_rows = _concatenate(_map_cases(write_case, cases, workers, progress))
    truth_meta = {
        "generator": "matex.data.synthetic",
        "seed": seed,
        "n_images": n_images,
        "width": list(spec.width),
        "height": list(spec.height),
        "no_location_fraction": spec.no_location_fraction,
        "second_finding_fraction": spec.second_finding_fraction,
        "jpeg_quality": jpeg_quality,
    }
    elements_meta = {
        "generator": "matex.data.synthetic",
        "seed": seed,
        "conspicuity": spec.conspicuity,
        "drain_pneumothorax_train_fraction": drain_pneumothorax_train_fraction,
        "drain_eval_fraction": drain_eval_fraction,
        "val_fraction": val_fraction,
    }
    return _write_tables(out_dir, rows, truth, element_rows, truth_meta, elements_meta)


def _checked_spec(
    n_images: int,
    jpeg_quality: int,
    width: tuple[int, int],
    height: tuple[int, int],
    no_location_fraction: float,
    second_finding_fraction: float,
    conspicuity: float,
) -> SyntheticSpec:
    """The per-case settings, after checking the image count, the JPEG quality and the spec (errors
    name the ``data.synthetic`` key)."""
    if n_images < 1:
        raise ConfigError(f"data.synthetic.n_images must be >= 1, got {n_images}")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"data.synthetic.jpeg_quality must lie in [1, 100], got {jpeg_quality}")
    spec = SyntheticSpec(
        width=tuple(int(x) for x in width),
        height=tuple(int(x) for x in height),
        no_location_fraction=float(no_location_fraction),
        second_finding_fraction=float(second_finding_fraction),
        conspicuity=float(conspicuity),
    )
    spec.validate()
    return spec


def _concatenate(results) -> tuple[list, list, list]:
    """The cases' CSV rows, truth rows and element rows, each concatenated in case order."""
    rows, truth, element_rows = [], [], []
    for case_rows, case_truth, case_elements in results:
        rows += case_rows
        truth += case_truth
        element_rows += case_elements
    return rows, truth, element_rows


def _write_tables(
    out_dir: Path, rows: list, truth: list, element_rows: list, truth_meta: dict, elements_meta: dict
) -> Path:
    """Write the MS-CXR-format CSV, the truth table and the elements table (atomically, with their
    metadata); return the CSV's path."""
    import pandas as pd

    csv_path = out_dir / CSV_NAME
    with atomic_path(csv_path) as tmp:
        pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(tmp, index=False)
    write_parquet(out_dir / TRUTH_NAME, pd.DataFrame(truth, columns=list(TRUTH_COLUMNS)), meta=truth_meta)
    write_parquet(
        out_dir / ELEMENTS_NAME, pd.DataFrame(element_rows, columns=list(ELEMENT_COLUMNS)), meta=elements_meta
    )
    return csv_path


def _map_cases(write_case, cases: list[tuple], workers: int, progress: bool):
    """Yield ``write_case(*case)`` for every case, in order, in ``workers`` processes (1 = this one)."""
    from tqdm import tqdm

    with tqdm(total=len(cases), desc="synthetic radiographs", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(cases) < 2:
            for case in cases:
                yield write_case(*case)
                bar.update()
            return
        import multiprocessing

        # fork: the children need only numpy and PIL, and a spawned child would re-run the calling
        # script (Snakemake's step script) as its main module
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        # leaving the with-block (also on an error) terminates the workers
        with multiprocessing.get_context(method).Pool(min(int(workers), len(cases))) as pool:
            for result in pool.imap(_star(write_case), cases, chunksize=16):
                yield result
                bar.update()


class _star:
    """``f(*args)`` as a picklable one-argument callable, for ``Pool.imap``."""

    def __init__(self, f):
        self.f = f

    def __call__(self, args: tuple):
        return self.f(*args)


def _write_case(
    out_dir: Path,
    seed: int,
    spec: SyntheticSpec,
    train_fraction: float,
    eval_fraction: float,
    quality: int,
    i: int,
    ids: tuple[str, str, str],
    is_val: bool,
) -> tuple[list, list, list]:
    """Render case ``i`` (``ids``: patient, study, dicom id), write its JPG and element masks; return
    its CSV rows, truth rows and element rows."""
    from PIL import Image

    patient, study, dicom_id = ids
    rel = f"files/{patient[:3]}/{patient}/{study}/{dicom_id}.jpg"
    drain = _draws_drain(seed, i, spec, is_val, train_fraction, eval_fraction)
    image, findings, masks = render_case(seed, i, spec, drain=drain, return_elements=True)
    drain = "drain" in masks  # False where no course kept its clearance from the lesions (render._drain)
    masks_rel = rel[: -len(".jpg")] + ".masks.npz"
    write_masks(out_dir / masks_rel, masks)
    element_rows = [
        (
            dicom_id,
            i,
            name,
            ELEMENT_KINDS.get(name, "lesion"),
            int(name[len("lesion") :]) if name.startswith("lesion") else -1,
            drain,
            masks_rel,
            int(mask.sum()),
        )
        for name, mask in masks.items()
    ]
    path = out_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    path.write_bytes(buf.getvalue())
    h, w = image.shape
    rows, truth = [], []
    for k, f in enumerate(findings):
        for bx, by, bw, bh in f.boxes:
            rows.append((dicom_id, f.category_name, f.label_text, rel, bx, by, bw, bh, w, h))
        truth.append((dicom_id, k, f.label_text, f.category_name, f.side, f.zone, f.location_named, len(f.boxes)))
    return rows, truth, element_rows


def write_masks(path: Path, masks: dict[str, np.ndarray]) -> None:
    """An NPZ (readable with ``np.load``) of boolean masks, byte-identical for identical masks: the
    zip entries carry a fixed timestamp (``np.savez_compressed`` stamps the current time)."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_path(path) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf,
    ):
        for name in sorted(masks):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(masks[name], dtype=bool), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def read_masks(path: str | Path) -> dict[str, np.ndarray]:
    """The element masks written by :func:`write_masks`."""
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def _draws_drain(
    seed: int,
    index: int,
    spec: SyntheticSpec,
    is_val: bool,
    train_fraction: float,
    eval_fraction: float,
) -> bool:
    """Whether case ``index`` gets a chest drain: every class on validation films, only films with a
    pneumothorax in training (the shortcut). Its own random stream, so other cases are unaffected."""
    share = eval_fraction if is_val else train_fraction
    if share <= 0.0:
        return False
    if not is_val and not any(f.category_name == "Pneumothorax" for f in sample_findings(seed, index, spec)):
        return False
    return bool(np.random.default_rng([seed, index, 0xD8A1]).random() < share)


def synthetic_spec(syn: dict) -> SyntheticSpec:
    """The generator's per-case settings from the config's ``data.synthetic`` section (defaults as
    :func:`generate_synthetic`'s)."""
    return SyntheticSpec(
        width=tuple(int(x) for x in syn.get("width", (288, 352))),
        height=tuple(int(x) for x in syn.get("height", (320, 384))),
        no_location_fraction=float(syn.get("no_location_fraction", 0.15)),
        second_finding_fraction=float(syn.get("second_finding_fraction", 0.1)),
        conspicuity=float(syn.get("conspicuity", 1.0)),
    )
