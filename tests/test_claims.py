"""Ranking sentences are generated from the paired intervals and cannot say more than the tables."""

import re

import numpy as np
import pandas as pd
import pytest

from matex.metrics.aggregate import summarise_tidy
from matex.metrics.claims import (
    BETTER,
    NOT_SEPARABLE,
    TOO_FEW,
    WORSE,
    Comparer,
    UnsupportedClaim,
    claim,
    claims_markdown,
    leader_sentence,
    reference_sentence,
)


def _tidy(n_pairs: int, shifts: dict[str, float], metric: str = "pointing_game", noise: float = 0.05, seed: int = 0):
    """Long rows for one metric: every method = a shared per-pair base + its shift + its own noise;
    two pairs per patient."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, n_pairs)
    rows = []
    for m, shift in shifts.items():
        v = base + shift + rng.normal(0, noise, n_pairs)
        rows.append(
            pd.DataFrame(
                {
                    "pair_id": [f"p{i}" for i in range(n_pairs)],
                    "method": m,
                    "category": "Pneumonia",
                    "metric": metric,
                    "value": v,
                    "patient_id": [f"pt{i // 2}" for i in range(n_pairs)],
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_claim_refuses_a_verdict_the_interval_does_not_support():
    comparer = Comparer(_tidy(60, {"matex": 0.0, "chefer": 0.0, "random": -0.3}), 300, 0.95, 0)
    tie = comparer.compare("pointing_game", "matex", "chefer")
    assert tie.verdict == NOT_SEPARABLE and tie.low < 0 < tie.high
    with pytest.raises(UnsupportedClaim, match="not 'better'"):
        claim(tie, BETTER)
    assert "not separable" in claim(tie, NOT_SEPARABLE)
    win = comparer.compare("pointing_game", "matex", "random")
    assert win.verdict == BETTER and win.low > 0
    assert claim(win, BETTER).startswith("matex is better than random on Pointing")
    with pytest.raises(UnsupportedClaim):
        claim(win, NOT_SEPARABLE)


def test_lower_is_better_metrics_turn_the_sign():
    comparer = Comparer(_tidy(60, {"matex": 0.0, "gradcam": 0.3}, metric="deletion_auc"), 300, 0.95, 0)
    c = comparer.compare("deletion_auc", "matex", "gradcam")
    assert c.diff < 0 and c.verdict == BETTER  # a lower deletion AUC is better
    assert comparer.compare("deletion_auc", "gradcam", "matex").verdict == WORSE


def test_sentences_agree_with_the_paired_columns_of_the_tables():
    tidy = _tidy(80, {"matex": 0.0, "chefer": 0.005, "rollout": -0.2, "prior_only": 0.25, "random": -0.4})
    summary = summarise_tidy(tidy, ["method"], 400, 0.95, 3).set_index("method")
    sentence = reference_sentence(Comparer(tidy, 400, 0.95, 3), "pointing_game", "matex", list(summary.index))
    groups = dict(re.findall(r"(better than|worse than|not separable from) ([^;.]+)", sentence))
    named = {v: re.findall(r"`(\w+)`", groups.get(v, "")) for v in ("better than", "worse than", "not separable from")}
    for method, row in summary.drop(index="matex").iterrows():
        # the table's Δ column is method − MATEX: MATEX is better when that interval lies below 0
        low, high = -row["vs_matex_high"], -row["vs_matex_low"]
        expected = "better than" if low > 0 else "worse than" if high < 0 else "not separable from"
        assert method in named[expected], (method, sentence)
    assert set(named["better than"]) == {"rollout", "random"} and named["worse than"] == ["prior_only"]
    assert named["not separable from"] == ["chefer"]
    # and the numbers quoted are the table's own (same pairs, same patient resamples)
    c = Comparer(tidy, 400, 0.95, 3).compare("pointing_game", "rollout", "matex")
    assert c.diff == pytest.approx(summary.loc["rollout", "vs_matex"])
    assert (c.low, c.high) == pytest.approx(
        (summary.loc["rollout", "vs_matex_low"], summary.loc["rollout", "vs_matex_high"])
    )


def test_best_is_said_only_when_every_paired_interval_excludes_zero():
    clear = Comparer(_tidy(60, {"matex": 0.3, "chefer": 0.0, "random": -0.3}), 300, 0.95, 0)
    assert "`matex` is better than every other method" in leader_sentence(
        clear, "pointing_game", ["matex", "chefer", "random"]
    )
    close = Comparer(_tidy(60, {"matex": 0.3, "chefer": 0.295, "random": -0.3}), 300, 0.95, 0)
    s = leader_sentence(close, "pointing_game", ["matex", "chefer", "random"])
    assert "no single best method" in s and "`chefer`" in s and "every other" not in s


def test_few_pairs_rank_nothing():
    comparer = Comparer(_tidy(8, {"matex": 0.5, "random": -0.5}), 300, 0.95, 0)
    assert comparer.compare("pointing_game", "matex", "random").verdict == TOO_FEW
    md = claims_markdown(
        _tidy(8, {"matex": 0.5, "random": -0.5}), ["pointing_game"], ["matex", "random"], n_resamples=100
    )
    body = md.split("\n", 4)[-1]
    assert "better" not in body and "not compared" in body and "not ranked" in body
