"""Films as radiology produces them: 12/16-bit PNG and TIFF, float and 16-bit arrays, DICOM (written here
with pydicom), and images too large to decode. Each is read with a documented intensity mapping, or
refused with an error naming the file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import matex
from matex.data.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, read_image
from matex.data.transforms import InputGeometry, Intensity
from matex.errors import DataError
from matex.models.loading import load_model

pydicom = pytest.importorskip("pydicom")

TINY_DEMO = {
    "embed_dim": 32,
    "vision": {"layers": 1, "width": 32, "heads": 2, "patch_size": 32, "mlp_ratio": 2.0, "stem_channels": 0},
    "text": {"layers": 1, "width": 32, "heads": 2, "context_length": 16},
}
PHRASE = "right lower zone opacity"


@pytest.fixture(scope="module")
def model():
    return load_model("demo", demo=TINY_DEMO, seed=0)


def film(lo: float, hi: float, shape=(300, 260)) -> np.ndarray:
    """A smooth synthetic film (two lung fields, a bright blob) spanning exactly [lo, hi]."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    v = 0.3 + 0.4 * y + 0.2 * np.exp(-((x - 0.3) ** 2 + (y - 0.6) ** 2) / 0.02) - 0.25 * (np.abs(x - 0.5) < 0.05)
    v = (v - v.min()) / (v.max() - v.min())
    return lo + v * (hi - lo)


def rescale_8bit(a: np.ndarray) -> np.ndarray:
    """What a user's own export to 8 bits does: min-max onto 0..255, rounded."""
    a = a.astype(np.float64)
    return np.rint((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- 16-bit, 12-bit, float
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("bits", [12, 16])
def test_wide_film_and_its_8bit_rescaling_give_the_same_input_and_map(model, tmp_path, fmt, bits):
    wide = np.rint(film(37, 2**bits - 90)).astype(np.uint16)
    ext = ".png" if fmt == "PNG" else ".tif"
    Image.fromarray(wide).save(tmp_path / f"wide{ext}", format=fmt)
    Image.fromarray(rescale_8bit(wide)).save(tmp_path / "eight.png")
    with Image.open(tmp_path / f"wide{ext}") as im:
        assert im.mode.startswith("I")  # really stored with more than 8 bits
    x_wide = model.preprocess([tmp_path / f"wide{ext}"])
    x_eight = model.preprocess([tmp_path / "eight.png"])
    std = min(model.std)
    assert float((x_wide - x_eight).abs().max()) <= 1.0 / 255 / std + 1e-6  # within one grey level
    grey = model.geometry.image_to_input(read_image(tmp_path / f"wide{ext}")[0])
    assert 60 < grey.mean() < 200  # not the white square convert("L") made of it
    a = matex.explain(model, tmp_path / f"wide{ext}", PHRASE, method="gradcam").image
    b = matex.explain(model, tmp_path / "eight.png", PHRASE, method="gradcam").image
    assert float((a - b).abs().max()) < 1e-3


def test_eight_bit_images_are_used_as_stored(tmp_path):
    a = np.rint(film(20, 200)).astype(np.uint8)  # not spanning 0..255: a rescale would change it
    Image.fromarray(a).save(tmp_path / "f.png")
    img, info = read_image(tmp_path / "f.png")
    assert np.array_equal(np.asarray(img), a) and info["intensity"]["mode"] == "as stored (8-bit)"
    rescaled, _ = read_image(tmp_path / "f.png", InputGeometry(intensity=Intensity(rescale_8bit=True)))
    assert np.asarray(rescaled).min() == 0 and np.asarray(rescaled).max() == 255


def test_percentile_window_ignores_hot_pixels_minmax_does_not():
    a = film(1000, 3000)
    a[:3, :3] = 65535  # a burnt-in marker
    minmax = Intensity("minmax").to_uint8(a)
    pct = Intensity("percentile", 0.5, 99.5).to_uint8(a)
    assert minmax[100:].mean() < 130  # the marker squeezed the film into the dark half
    assert pct[:3, :3].min() == 255 and np.percentile(pct, 99.5) >= 254 and np.percentile(pct, 0.5) <= 1
    with pytest.raises(ValueError, match="low < high"):
        Intensity("percentile", 99.0, 1.0)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
def test_arrays_beyond_8bit_are_windowed_like_their_8bit_rescaling(model, dtype):
    values = film(-900, 2500) if dtype != np.uint16 else film(40, 4000)
    a = values.astype(dtype)
    a8 = rescale_8bit(a)
    m_wide = matex.explain(model, a, PHRASE, method="gradcam")
    m_eight = matex.explain(model, a8, PHRASE, method="gradcam")
    assert np.abs(m_wide.inputs.astype(int) - m_eight.inputs.astype(int)).max() <= 1
    assert float((m_wide.image - m_eight.image).abs().max()) < 1e-2
    assert m_wide.meta["inputs"][0]["intensity"]["mode"] == "minmax"


# ------------------------------------------------------------------------------------------ DICOM
def write_dicom(path: Path, stored: np.ndarray, *, syntax=None, **elements) -> Path:
    """A minimal single-frame DX image written with pydicom (uncompressed unless ``syntax``)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in elements.items():
        setattr(ds, key, value)
    if syntax is None:
        ds.PixelData = stored.astype(np.uint16).tobytes()
    else:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])  # a JPEG 2000 stream start
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_rescale_window_inversion_and_spacing(tmp_path):
    stored = np.rint(film(100, 4000)).astype(np.uint16)
    kw = dict(RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=3000, WindowWidth=4000, PixelSpacing=[0.15, 0.16])
    grey, info = read_image(write_dicom(tmp_path / "f.dcm", stored, **kw))
    modality = stored * 2.0 - 1000
    expected = np.clip((modality - 2999.5) / 3999 + 0.5, 0, 1) * 255  # PS3.3 LINEAR window onto 0..255
    assert np.abs(np.asarray(grey).astype(float) - expected).max() <= 0.5 + 1e-9
    assert info["pixel_spacing_mm"] == [0.15, 0.16] and info["intensity"]["mode"] == "DICOM window"
    inv, info1 = read_image(write_dicom(tmp_path / "m1.dcm", stored, PhotometricInterpretation="MONOCHROME1", **kw))
    assert np.array_equal(np.asarray(inv), 255 - np.asarray(grey)) and info1["inverted"]
    plain, info2 = read_image(write_dicom(tmp_path / "plain.dcm", stored))  # no window: min-max
    assert np.abs(np.asarray(plain).astype(int) - rescale_8bit(stored).astype(int)).max() <= 1
    assert info2["intensity"]["mode"] == "minmax" and info2["pixel_spacing_mm"] is None


def test_dicom_voi_lut_is_applied(tmp_path):
    from pydicom.dataset import Dataset

    stored = np.rint(film(0, 4095)).astype(np.uint16)
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 8]
    curve = np.rint(np.sqrt(np.arange(4096) / 4095) * 255).astype(np.uint16)  # a gamma-like curve
    lut.add_new(0x00283006, "US", [int(v) for v in curve])  # LUT Data
    grey, info = read_image(write_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=[lut]))
    expected = np.rint(np.sqrt(stored / 4095) * 255)
    assert np.abs(np.asarray(grey).astype(float) - expected).max() <= 1 and info["intensity"]["mode"] == "DICOM VOI LUT"


def test_dicom_multiframe_and_undecodable_syntax_are_refused_by_name(tmp_path):
    stored = np.zeros((2, 16, 16), np.uint16)
    multi = write_dicom(tmp_path / "multi.dcm", stored.reshape(32, 16), NumberOfFrames=2)
    with pytest.raises(DataError, match=r"multi-frame DICOM \(2 frames\).*multi\.dcm"):
        read_image(multi)
    from pydicom.uid import JPEG2000Lossless

    j2k = write_dicom(tmp_path / "j2k.dcm", stored[0], syntax=JPEG2000Lossless)
    with pytest.raises(DataError, match=r"JPEG 2000.*1\.2\.840\.10008\.1\.2\.4\.90.*no installed.*j2k\.dcm"):
        read_image(j2k)


def test_explain_keeps_the_dicom_provenance(model, tmp_path):
    path = write_dicom(tmp_path / "f.dcm", np.rint(film(0, 4000)).astype(np.uint16), PixelSpacing=[0.2, 0.2])
    out = matex.explain(model, path, PHRASE, method="gradcam")
    assert out.meta["inputs"][0]["format"] == "DICOM" and out.meta["inputs"][0]["pixel_spacing_mm"] == [0.2, 0.2]


# ----------------------------------------------------------------------------- decompression bombs
def huge_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height grey pixels (the pixel data is not there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


def test_huge_image_is_refused_naming_file_and_limit(model, tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    bomb = huge_png_header(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(DataError) as e:
        matex.explain(model, bomb, PHRASE, method="gradcam")
    msg = str(e.value)
    assert "bomb.png" in msg and f"{DEFAULT_MAX_PIXELS:,}" in msg and "400,000,000" in msg
    assert "input.max_image_pixels" in msg and "--max-image-pixels" in msg and MAX_PIXELS_ENV in msg
    monkeypatch.setenv(MAX_PIXELS_ENV, str(500_000_000))  # raised: now the (absent) pixels fail to decode
    with pytest.raises(DataError, match="cannot be decoded"):
        read_image(bomb)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 30), np.uint8)).save(small)
    with pytest.raises(DataError, match=r"30x40 = 1,200 pixels, over the limit of 1,000"):
        read_image(small, InputGeometry(max_pixels=1000))
