"""The benchmark's bookkeeping (not its timings): ratios against MATEX, the target summary, CPU steal."""

import pandas as pd
import pytest

from matex.bench.methods import steal_fraction, target_summary, to_markdown


def _table() -> pd.DataFrame:
    rows = [
        ("demo", 1, "matex", 20.0, 30),
        ("demo", 1, "chefer", 16.0, 20),
        ("demo", 1, "gradcam", 10.0, 25),
        ("demo", 1, "m2ib", 500.0, 40),
        ("demo", 8, "matex", 5.0, 60),
        ("demo", 8, "chefer", 5.0, 50),
        ("demo", 8, "gradcam", 4.0, 55),
    ]
    df = pd.DataFrame(rows, columns=["model", "batch", "method", "ms_per_pair", "peak_mb"])
    df["pairs_per_s"] = 1000.0 / df["ms_per_pair"]
    ref = df[df["method"] == "matex"].set_index("batch")["ms_per_pair"]
    df["time_vs_matex"] = df["ms_per_pair"] / df["batch"].map(ref)
    return df


def test_target_summary_ratios_come_from_the_table():
    text = target_summary(_table())
    assert "demo, batch 1: MATEX/Chefer time 1.25" in text
    assert "MATEX/Grad-CAM time 2.00" in text
    assert "M2IB/MATEX time 25.0" in text
    assert "MATEX/Chefer peak memory 1.50" in text
    # no M2IB at batch 8: its ratio is left out rather than printed as nan
    batch8 = next(line for line in text.splitlines() if "batch 8" in line)
    assert "M2IB" not in batch8 and "nan" not in text
    assert "batch 8 ÷ batch 1 = 4.00" in text


def test_markdown_has_one_row_per_measurement():
    md = to_markdown(_table()).splitlines()
    assert len(md) == 2 + len(_table()) and md[2].startswith("| demo | 1 | matex |")


def test_steal_fraction():
    before = [100, 0, 50, 800, 0, 0, 0, 50, 0, 0]
    after = [200, 0, 100, 900, 0, 0, 0, 100, 0, 0]  # 300 jiffies elapsed, 50 of them stolen
    assert steal_fraction(before, after) == pytest.approx(50 / 300)
    assert steal_fraction(None, after) is None and steal_fraction(before[:4], after[:4]) is None
