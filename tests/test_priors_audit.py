"""The audit artifacts of the prior (issue 13): the parse table and the figure of one phrase per
category."""

from __future__ import annotations

import numpy as np
import pandas as pd

from matex.priors.audit import PARSE_COLUMNS, example_pairs, parse_table

S = 64


def pairs_table() -> pd.DataFrame:
    rows = [
        ("a1", "Pleural Effusion", "Effusion.", 300, 400),
        ("a2", "Pleural Effusion", "Small left pleural effusion, no pneumothorax.", 300, 400),
        ("b1", "Cardiomegaly", "Cardiomegaly.", 400, 300),
        ("c1", "Pneumonia", "Possible pneumonia.", 320, 320),
        ("c2", "Pneumonia", "No focal consolidation.", 320, 320),
    ]
    return pd.DataFrame(
        [
            {
                "pair_id": p,
                "category": c,
                "phrase": t,
                "image_width": w,
                "image_height": h,
                "boxes": [[4.0, 30.0, 28.0, 60.0]],
            }
            for p, c, t, w, h in rows
        ]
    )


def test_parse_table_has_one_row_per_pair_with_the_parse():
    table = parse_table(pairs_table())
    assert list(table.columns) == PARSE_COLUMNS and len(table) == 5
    row = table.set_index("pair_id").loc["a2"]
    assert row.prior_regions == "left_lower_zone;left_costophrenic_angle"
    assert row.prior_weights == "1.00;1.00"
    assert row.prior_findings == "pleural effusion" and row.prior_negated_findings == "pneumothorax"
    assert bool(table.set_index("pair_id").loc["c2"].prior_negated)
    assert bool(table.set_index("pair_id").loc["c1"].prior_uncertain)
    assert not table.set_index("pair_id").loc["c1"].prior_has_location


def test_example_pairs_prefer_a_phrase_with_a_location():
    chosen = example_pairs(pairs_table())
    assert chosen == ["b1", "a1", "c1"]  # one per category (sorted); "Effusion." has its default


def test_prior_figure_draws_one_panel_per_pair(tmp_path):
    from matex.figures.plots import save
    from matex.figures.prior import prior_grid

    pairs = pairs_table()
    images = np.zeros((len(pairs), S, S), np.uint8)
    fig = prior_grid(pairs, images, example_pairs(pairs), show_images=False)
    assert sum(ax.has_data() for ax in fig.axes) == 3
    save(fig, [tmp_path / "prior.png"])
    assert (tmp_path / "prior.png").stat().st_size > 0


def test_synthetic_phrases_with_a_location_never_get_a_flat_prior_and_keep_their_side():
    """On the synthetic default's phrases (issue 13): every phrase the generator says names a
    location gets a prior, on the side the lesion was drawn."""
    from matex.data.synthetic import sample_findings
    from matex.priors import parse_phrase
    from matex.priors.vocabulary import side_of_region

    n = 0
    for i in range(600):
        for f in sample_findings(0, i):
            if not f.location_named:
                continue
            n += 1
            parse = parse_phrase(f.label_text)
            assert parse.has_location, f.label_text
            sides = {side_of_region(r) for r in parse.region_names} - {None}
            if f.side in ("right", "left"):
                assert sides == {f.side}, (f.label_text, parse.region_names)
            elif f.side == "bilateral":
                assert sides == {"right", "left"}, (f.label_text, parse.region_names)
    assert n > 400


def test_synthetic_phrases_speak_report_language_and_the_parser_reads_it():
    """The generator's phrases carry hedges, "no X" clauses and "with ..." clauses (issue 13), and
    the parser reads each as a report would: a hedge flags the finding uncertain and keeps its place;
    a "no X" clause negates X only, never the film's own finding; a finding-only "with" clause adds
    no region of its own."""
    from matex.data.synthetic import sample_findings
    from matex.data.synthetic.phrases import vocabulary
    from matex.priors import parse_phrase
    from matex.priors.vocabulary import side_of_region

    language = vocabulary()["report_language"]
    hedges = tuple(h.lower() for h in language["hedges"])
    negations = {o.strip(" ,;.").lower() for options in language["negated"].values() for o in options}
    seen = {"hedged": 0, "negated": 0, "associated": 0}
    for i in range(800):
        for f in sample_findings(0, i):
            text = f.label_text.lower()
            parse = parse_phrase(f.label_text)
            own = f.category_name.lower()
            if text.startswith(hedges):
                seen["hedged"] += 1
                assert parse.uncertain, f.label_text
                assert parse.has_location == f.location_named or not f.location_named, f.label_text
            if any(text.endswith(n) for n in negations):
                seen["negated"] += 1
                if text.endswith("heart size is normal"):  # a normal statement: no finding, no region
                    assert "heart" not in parse.region_names, f.label_text
                else:
                    assert any(m.negated for m in parse.findings), f.label_text
                assert any(m.finding == own and not m.negated for m in parse.findings), (f.label_text, parse.findings)
                assert not parse.negated, f.label_text
            if any(a in text for options in language["associated"].values() for a in options):
                seen["associated"] += 1
                if f.location_named and f.side in ("right", "left"):
                    sides = {side_of_region(r) for r in parse.region_names}
                    assert sides == {f.side}, (f.label_text, parse.region_names)
    assert all(n >= 20 for n in seen.values()), seen
