"""The parse of every pair's phrase, as a table (the pipeline's audit artifact, issue 13): regions,
their weights, negation, uncertainty and the findings read, so a reader can check the prior pair by
pair."""

from __future__ import annotations

import pandas as pd

from matex.priors.parser import parse_phrase

PARSE_COLUMNS = [
    "pair_id",
    "category",
    "phrase",
    "prior_regions",
    "prior_weights",
    "prior_has_location",
    "prior_negated",
    "prior_uncertain",
    "prior_findings",
    "prior_negated_findings",
]


def parse_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: the pair's id, category and phrase, then ``PhraseParse.as_record()``."""
    rows = [
        {"pair_id": r.pair_id, "category": r.category, "phrase": r.phrase, **parse_phrase(r.phrase).as_record()}
        for r in pairs[["pair_id", "category", "phrase"]].itertuples(index=False)
    ]
    return pd.DataFrame.from_records(rows, columns=PARSE_COLUMNS)


def example_pairs(pairs: pd.DataFrame) -> list[str]:
    """One pair per category, for the prior figure: the first (by pair id) whose phrase names a
    location, else the category's first pair."""
    chosen = []
    for _, grp in pairs.sort_values("pair_id").groupby("category", sort=True):
        located = [pid for pid, text in zip(grp["pair_id"], grp["phrase"]) if parse_phrase(text).has_location]
        chosen.append(located[0] if located else grp["pair_id"].iloc[0])
    return chosen
