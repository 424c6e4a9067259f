"""A synthetic MS-CXR stand-in: frontal chest radiographs with findings, boxes and phrases.

Why: the paper's data (MS-CXR on MIMIC-CXR-JPG) needs credentials. This generator writes the same
on-disk contract: grey-scale JPGs under the MIMIC-CXR-JPG layout
``files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg`` and ``MS_CXR_Local_Alignment_v1.0.0.csv`` with
MS-CXR's exact columns, one row per box. Because every lesion is drawn by us, its box is ground
truth: a model trained on these images has to *see* the lesion to localise it.

Modules: ``anatomy`` (thorax, lungs, heart, ribs, diaphragm; drawing helpers), ``findings`` (the case
plan and one painter per finding), ``phrases`` (+ ``phrases.yaml``, the vocabulary), ``render``
(one case, seeded streams) and ``writer`` (files, CSV, truth table).

Radiological convention: the patient's RIGHT is the image's LEFT. A "right" finding lies in the
left half of the image. Zones recorded in ``synthetic_truth.parquet``: upper, mid, middle_lobe, lower,
retrocardiac, perihilar, apical, lateral, cardiac. Sides are in PATIENT terms: right, left,
bilateral, none.
"""

from .anatomy import BOX_THRESHOLD, Anatomy, Lung, SyntheticSpec
from .findings import CATEGORIES, CATEGORY_COUNTS, Finding
from .render import WORK_DOWNSAMPLE, render_case, sample_findings
from .writer import (
    CSV_COLUMNS,
    CSV_NAME,
    ELEMENTS_NAME,
    TRUTH_COLUMNS,
    TRUTH_NAME,
    generate_synthetic,
)

__all__ = [
    "BOX_THRESHOLD",
    "CATEGORIES",
    "CATEGORY_COUNTS",
    "CSV_COLUMNS",
    "CSV_NAME",
    "ELEMENTS_NAME",
    "TRUTH_COLUMNS",
    "TRUTH_NAME",
    "WORK_DOWNSAMPLE",
    "Anatomy",
    "Finding",
    "Lung",
    "SyntheticSpec",
    "generate_synthetic",
    "render_case",
    "sample_findings",
]
