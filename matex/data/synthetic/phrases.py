"""MS-CXR-style phrases for the synthetic findings, from the vocabulary in ``phrases.yaml``.

The words live in the data file; this module only chooses among them with the case's random stream
(one ``rng.integers`` per choice, so the same seed gives the same phrase) and fills in side, size
and degree. Sides are in patient terms (the patient's right is the image's left).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, Any]:
    """The parsed ``phrases.yaml`` (loaded once)."""
    text = resources.files(__package__).joinpath("phrases.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def size_words() -> tuple[str, ...]:
    return tuple(vocabulary()["size_words"])


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(rng: np.random.Generator, text: str) -> str:
    return text[0].upper() + text[1:] if rng.random() < 0.5 else text


def _fill(options: Sequence[str], **words: str) -> list[str]:
    return [o.format(**words) for o in options]


def location_words(side: str, zone: str) -> tuple[list[str], list[str]]:
    """(adjectival forms, prepositional forms) naming a location, e.g. 'right basilar' / 'at the right base'."""
    locations = vocabulary()["locations"]
    if side == "bilateral" and "bilateral" not in locations.get(zone, {}):
        zone = "lower"  # bilateral lung findings sit at the bases
    entry = locations[zone]
    entry = entry.get(side, entry) if side in ("right", "left", "bilateral") else entry
    return _fill(entry["adjective"], side=side), _fill(entry["prepositional"], side=side)


def phrase(
    rng: np.random.Generator,
    category: str,
    side: str,
    zone: str,
    named: bool,
    size: str,
) -> str:
    """An MS-CXR-style phrase: the finding, and its location when ``named``."""
    vocab = vocabulary()
    words = {"side": side, "size": size, "degree": vocab["degree_of_size"][size]}
    own = vocab["findings"].get(category)
    if category == "Cardiomegaly" or category == "Edema":
        text = _pick(rng, _fill(own["named" if named else "unnamed"], **words))
    elif category == "Pleural Effusion":
        key = "unnamed" if not named else ("bilateral" if side == "bilateral" else "lateralised")
        text = _pick(rng, _fill(own[key], **words))
    elif category == "Pneumothorax":
        key = "unnamed" if not named else ("apical" if zone == "apical" else "lateral")
        text = _pick(rng, _fill(own[key], **words))
    else:
        finding = _pick(rng, vocab["nouns"][category])
        text = finding if not named else _with_location(rng, category, finding, side, zone)
    return _cap(rng, text)


def _with_location(rng: np.random.Generator, category: str, finding: str, side: str, zone: str) -> str:
    """Insert a location into an opacity-type noun phrase, adjectivally or as a prepositional phrase."""
    adj, pp = location_words(side, zone)
    if rng.random() < 0.5:
        parts = finding.split(" ")
        # keep a leading modifier first: "patchy right basilar opacity"
        if len(parts) > 1 and parts[0] in vocabulary()["leading_modifiers"]:
            return f"{parts[0]} {_pick(rng, adj)} {' '.join(parts[1:])}"
        return f"{_pick(rng, adj)} {finding}"
    head, _, tail = finding.partition(",")
    if head.startswith("opacity "):  # "opacity at the right base concerning for pneumonia"
        text = f"opacity {_pick(rng, pp)} {head[len('opacity ') :]}"
    else:
        text = f"{head} {_pick(rng, pp)}" + (f",{tail}" if tail else "")
    if category == "Pneumonia" and head == "pneumonia" and rng.random() < 0.3:
        text = f"{_pick(rng, adj)} opacity concerning for pneumonia"
    return text


_ALREADY_HEDGED = ("likely", "concerning", "consistent", "possible", "suggestive")


def report_language(rng: np.random.Generator, text: str, category: str, case_categories: Sequence[str]) -> str:
    """``text`` with the report language of ``phrases.yaml`` (``report_language``) added at random:
    an associated "with ..." clause, a hedge in front, a negated finding the case does not have after.

    Always draws the same number of random numbers, so one phrase's choices never shift another's."""
    cfg = vocabulary()["report_language"]
    u_assoc, u_hedge, u_neg = rng.random(3)
    k_assoc, k_hedge, k_neg_cat, k_neg = rng.integers(0, 1 << 30, size=4)
    capital = text[:1].isupper()
    text = text[:1].lower() + text[1:]
    associated = cfg["associated"].get(category)
    if associated and u_assoc < cfg["associated_fraction"] and "," not in text and " with " not in text:
        text = f"{text} {associated[k_assoc % len(associated)]}"
    clause = " is " in f" {text} " or text.startswith("the ")
    if u_hedge < cfg["hedge_fraction"] and not clause and not any(w in text for w in _ALREADY_HEDGED):
        text = f"{cfg['hedges'][k_hedge % len(cfg['hedges'])]} {text}"
    absent = [c for c in cfg["negated"] if c not in case_categories]
    if absent and u_neg < cfg["negated_fraction"]:
        options = cfg["negated"][absent[k_neg_cat % len(absent)]]
        if clause:  # "the heart is enlarged; no pleural effusion", not "... enlarged without ..."
            options = [o for o in options if not o.startswith(" ")] or options
        text = f"{text}{options[k_neg % len(options)]}"
    return text[0].upper() + text[1:] if capital else text
