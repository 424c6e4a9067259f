"""Rule-based parser from a radiology phrase to anatomical regions (DESIGN.md 3.4, feeding Eqs. 3-5).

The phrase is lower-cased, reduced to ASCII and split into clauses (on ``, ; . : ( )`` and the words
"and", "but", "with", "however", "although", "though", "whereas", "while"). In each clause we find:

* uncertainty cues ("possible", "may", "likely", "cannot exclude", "concerning for", ...): they set
  ``uncertain`` but keep the clause's regions;
* negation cues ("no", "not", "without", "negative for", "clear", "resolved", "free of", "normal",
  ...): they drop the regions of *their own clause only*, so "small left effusion, no right effusion"
  keeps the left side;
* finding words (the 8 MS-CXR categories and common synonyms) -> :class:`FindingMention`;
* anatomy: lobes (spelled out or RUL/RML/RLL/LUL/LLL, lingula), sided structures (apex, hilum,
  perihilar, costophrenic angle, hemidiaphragm), unsided structures (heart / cardiac silhouette /
  cardiomegaly, mediastinum, retrocardiac), zones (upper, mid, lower/base/basal/basilar) and
  laterality (right, left, bilateral, both, bibasilar = both lower zones, biapical = both apices).

A zone or sided structure without a side means both sides; a side with no other anatomy means that
lung field. A clause that names anatomy but no finding ("left upper" in "left upper and lower lobe
opacities") passes its side and its negation on to the next clause joined by "and".

Radiological convention: the patient's RIGHT is the IMAGE LEFT; the boxes in ``regions.yaml`` already
follow it, the parser only names regions.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from matex.errors import DataError

REGIONS_FILE = "regions.yaml"

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Region:
    """A named anatomical region; ``box`` = (x0, x1, y0, y1) normalised image coordinates
    (x to the image right, y down)."""
    name: str
    box: Box


@dataclass(frozen=True)
class FindingMention:
    """One finding word in the phrase, with the state of the clause it sits in."""
    finding: str      # canonical MS-CXR-style category, e.g. "pleural effusion"
    text: str         # the words matched
    negated: bool
    uncertain: bool


@dataclass(frozen=True)
class PhraseParse:
    """What the parser read from a phrase. ``regions`` holds only regions of non-negated clauses;
    ``negated`` is True when every clause that mentions a finding or anatomy is negated;
    ``has_location`` is True when at least one region survives (the spatial prior is present)."""
    text: str
    regions: tuple[Region, ...]
    negated: bool
    uncertain: bool
    findings: tuple[FindingMention, ...]

    @property
    def has_location(self) -> bool:
        return len(self.regions) > 0

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    def as_record(self) -> dict[str, Any]:
        """Flat row for a Parquet table of parsed phrases (the pipeline's audit artifact)."""
        positive = sorted({f.finding for f in self.findings if not f.negated})
        return {
            "prior_regions": ";".join(self.region_names),
            "prior_has_location": self.has_location,
            "prior_negated": self.negated,
            "prior_uncertain": self.uncertain,
            "prior_findings": ";".join(positive),
        }


# --------------------------------------------------------------------------------------------
# Region table (regions.yaml), loaded once
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def load_regions() -> dict[str, Region]:
    """Every region of ``regions.yaml`` by name; validates the boxes (x0 < x1, y0 < y1, in [0, 1])."""
    source = resources.files("matex.priors").joinpath(REGIONS_FILE)
    where = str(source)
    try:
        table = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read the region table: {exc}", file=where) from exc
    if not isinstance(table, dict) or not isinstance(table.get("regions"), dict):
        raise DataError("region table needs a top-level 'regions' mapping", file=where)
    regions: dict[str, Region] = {}
    for name, entry in table["regions"].items():
        box = entry.get("box") if isinstance(entry, dict) else None
        try:
            x0, x1, y0, y1 = (float(v) for v in box)
        except (TypeError, ValueError) as exc:
            raise DataError(f"region {name!r}: box must be 4 numbers [x0, x1, y0, y1], got {box!r}",
                            file=where) from exc
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise DataError(f"region {name!r}: box {box!r} must satisfy 0 <= x0 < x1 <= 1 and "
                            f"0 <= y0 < y1 <= 1", file=where)
        regions[name] = Region(str(name), (x0, x1, y0, y1))
    return regions


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

_CLAUSE_SPLIT = re.compile(
    r"([,;.:!?()\[\]\n]|\b(?:and|but|with|however|although|though|whereas|while)\b)")

# Uncertainty first: its phrases contain negation words ("cannot exclude", "not excluded").
_UNCERTAINTY = re.compile(
    r"\b(?:possible|possibly|probable|probably|may|might|could|likely|unlikely|suspected|suspect|"
    r"suspicious for|concerning for|concern for|suggestive of|suggests?|questionable|"
    r"cannot (?:be )?(?:excluded?|ruled? out)|can ?not (?:be )?(?:excluded?|ruled? out)|"
    r"can t (?:be )?(?:excluded?|ruled? out)|not (?:be )?(?:excluded|ruled out)|"
    r"rule out|r o|versus|vs|equivocal|borderline|presumed|compatible with|consistent with|"
    r"differential|indeterminate)\b")
# "no change" etc. are not negations of the finding.
_PSEUDO_NEGATION = re.compile(
    r"\b(?:no|without) (?:significant |appreciable |substantial |interval |definite )?"
    r"(?:change|progression|increase|worsening)\b|\bnot (?:significantly )?changed\b")
_NEGATION = re.compile(
    r"\b(?:no|not|without|negative for|free of|clear|cleared|resolved|resolution|absent|absence of|"
    r"none|normal|unremarkable)\b")

_FINDINGS: tuple[tuple[str, str], ...] = (
    ("atelectasis", r"atelectas[ie]s|atelectatic|collapse"),
    ("cardiomegaly", r"cardiomegaly|cardiac enlargement|enlarged (?:heart|cardiac silhouette)|"
                     r"enlargement of the (?:heart|cardiac silhouette)|"
                     r"(?:heart|cardiac silhouette)(?: size)? (?:is |remains |appears )?(?:\w+ )?enlarged"),
    ("consolidation", r"consolidations?|consolidative|airspace disease"),
    ("edema", r"o?edema|vascular congestion|pulmonary congestion|congestion"),
    ("lung opacity", r"opacit(?:y|ies)|opacification|opacified|infiltrates?|densit(?:y|ies)|"
                     r"haziness|hazy"),
    ("pleural effusion", r"effusions?|pleural fluid"),
    ("pneumonia", r"pneumonias?|pneumonic|infection|infectious"),
    ("pneumothorax", r"pneumothora(?:x|ces)|ptx"),
)
_FINDING_PATTERNS = tuple((name, re.compile(rf"\b(?:{pat})\b")) for name, pat in _FINDINGS)

_SIDE_WORD = r"right|left|rt|lt|r|l"
# Lobes: "right lower lobe", "lower lobe", "RLL", "lingula".
_LOBE = re.compile(rf"\b(?:({_SIDE_WORD})\s+)?(upper|middle|mid|lower)\s+lobes?\b")
_LOBE_ABBREV = re.compile(r"\b(rul|rml|rll|lul|lll)\b")
_LINGULA = re.compile(r"\blingula[r]?\b")
_BI_ZONE = re.compile(r"\b(bibasilar|bibasal|bibasally|bibasilarly|biapical|biapically)\b")
# Structures that exist on both sides.
_SIDED_STRUCTURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("perihilar", re.compile(r"\b(?:perihilar|parahilar|peri hilar|para hilar)\b")),
    ("hilum", re.compile(r"\b(?:hilar|hilum|hila|hilus)\b")),
    ("costophrenic_angle", re.compile(r"\b(?:costophrenic|cp)(?: (?:angles?|sulc(?:us|i)))?\b")),
    ("hemidiaphragm", re.compile(r"\b(?:hemidiaphragms?|diaphragms?|diaphragmatic)\b")),
    ("apex", re.compile(r"\b(?:apex|apices|apical|apically)\b")),
)
# Structures without a side.
_UNSIDED_STRUCTURES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("retrocardiac",), re.compile(r"\bretrocardiac\b")),
    (("heart", "mediastinum"), re.compile(r"\bcardiomediastinal\b")),
    (("heart",), re.compile(r"\b(?:heart|cardiac|cardiomegaly|pericardial)\b")),
    (("mediastinum",), re.compile(r"\b(?:mediastinum|mediastinal|pneumomediastinum)\b")),
)
_SIDE_ANATOMY = (r"sided|upper|middle|mid|lower|lobes?|lungs?|base|bases|basal|basilar|apex|"
                 r"apical|apices|hilar|hilum|perihilar|costophrenic|hemidiaphragm|hemithorax|"
                 r"pleural|effusion|pneumothorax|chest")
_LATERALITY = re.compile(
    rf"\b(right|left|bilateral|bilaterally|both)\b|\b(rt|lt|r|l)\b(?= (?:{_SIDE_ANATOMY})\b)")
_ZONES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("upper", re.compile(r"\b(?:upper|superior)\b")),
    ("mid", re.compile(r"\b(?:mid|middle|midlung|midzone)\b")),
    ("lower", re.compile(r"\b(?:lower|base|bases|basal|basally|basilar|basilarly|inferior)\b")),
)
# "right upper and lower lobes" -> "right upper lobe and lower lobe" before clause splitting.
_SHARED_LOBE = re.compile(r"\b(upper|middle|mid|lower) (and|or) (upper|middle|mid|lower) lobes?\b")
_BOTH_SIDES = re.compile(r"\b(?:right and left|left and right|right or left|left or right)\b")

_GENERIC_ANATOMY = re.compile(r"\b(?:lungs?|pulmonary|pleura|pleural|hemithora(?:x|ces)|chest)\b")
_SIDE_ORDER = ("right", "left")

_SIDE_OF = {"right": "right", "rt": "right", "r": "right", "left": "left", "lt": "left", "l": "left"}
_ZONE_OF_LOBE_WORD = {"upper": "upper", "middle": "middle", "mid": "middle", "lower": "lower"}
_LOBE_ABBREVIATIONS = {"rul": "right_upper_lobe", "rml": "right_middle_lobe",
                       "rll": "right_lower_lobe", "lul": "left_upper_lobe", "lll": "left_lower_lobe"}


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

def _to_ascii_lower(text: str) -> str:
    """Lower-case ASCII: accents stripped, other non-ASCII letters and all dashes/slashes -> space."""
    out = []
    for ch in unicodedata.normalize("NFKD", text):
        if ch.isascii():
            out.append(ch)
        elif unicodedata.category(ch) == "Mn":  # combining accent: drop
            continue
        else:
            out.append(" ")
    s = "".join(out).lower()
    s = re.sub(r"[-_/'\"`*&+=<>#~|\\]", " ", s)  # "left-sided", "r/o", "can't" -> words
    return re.sub(r"[ \t\r\f\v]+", " ", s)


@dataclass
class _Clause:
    text: str
    joined_by: str            # separator before this clause ("and", ",", ...; "" for the first)
    negated: bool = False
    uncertain: bool = False
    sides: frozenset[str] = frozenset()
    anatomy: tuple[str, ...] = ()         # region names before side resolution
    findings: tuple[tuple[str, str], ...] = ()
    mentions_lungs: bool = False          # "lungs", "pleura": anatomy without a box of its own

    @property
    def has_content(self) -> bool:
        return bool(self.anatomy or self.findings or self.sides or self.mentions_lungs)


def _consume(pattern: re.Pattern[str], text: str, found: list[re.Match[str]]) -> str:
    """Record every match of ``pattern`` in ``found`` and blank it out of ``text``."""
    def blank(match: re.Match[str]) -> str:
        found.append(match)
        return " "
    return pattern.sub(blank, text)


def _read_clause(text: str, joined_by: str) -> _Clause:
    clause = _Clause(text=text.strip(), joined_by=joined_by)
    rest = " " + text + " "

    hits: list[re.Match[str]] = []
    rest = _consume(_UNCERTAINTY, rest, hits)
    clause.uncertain = bool(hits)
    rest = _consume(_PSEUDO_NEGATION, rest, [])
    clause.negated = bool(_NEGATION.search(rest))

    clause.findings = tuple((name, m.group(0)) for name, pat in _FINDING_PATTERNS
                            for m in pat.finditer(rest))

    anatomy: list[str] = []     # names; "{side}" placeholder = resolve with the clause's sides
    hits = []
    rest = _consume(_LOBE, rest, hits)
    sides: set[str] = set()   # a lobe's own side also counts, so an "and" fragment can lend it
    for m in hits:
        zone = _ZONE_OF_LOBE_WORD[m.group(2)]
        if m.group(1) is None:
            anatomy.append(f"{{side}}_{zone}_lobe")
            continue
        side = _SIDE_OF[m.group(1)]
        sides.add(side)
        # the left lung has no middle lobe: "left middle lobe" can only mean the lingula
        anatomy.append("lingula" if (side, zone) == ("left", "middle") else f"{side}_{zone}_lobe")
    hits = []
    rest = _consume(_LOBE_ABBREV, rest, hits)
    for m in hits:
        anatomy.append(_LOBE_ABBREVIATIONS[m.group(1)])
        sides.add("right" if m.group(1).startswith("r") else "left")
    hits = []
    rest = _consume(_LINGULA, rest, hits)
    if hits:
        anatomy.append("lingula")
        sides.add("left")

    hits = []
    rest = _consume(_BI_ZONE, rest, hits)
    for m in hits:
        sides |= {"right", "left"}
        anatomy.append("{side}_apex" if m.group(1).startswith("biapical") else "{side}_lower_zone")

    for name, pat in _SIDED_STRUCTURES:
        hits = []
        rest = _consume(pat, rest, hits)
        if hits:
            anatomy.append(f"{{side}}_{name}")
    for names, pat in _UNSIDED_STRUCTURES:
        hits = []
        rest = _consume(pat, rest, hits)
        if hits:
            anatomy.extend(names)

    hits = []
    rest = _consume(_LATERALITY, rest, hits)
    for m in hits:
        word = m.group(1) or m.group(2)
        sides |= {"right", "left"} if word in ("bilateral", "bilaterally", "both") else {_SIDE_OF[word]}

    for zone, pat in _ZONES:
        if pat.search(rest):
            anatomy.append(f"{{side}}_{zone}_zone")

    clause.mentions_lungs = bool(_GENERIC_ANATOMY.search(rest))
    clause.sides = frozenset(sides)
    clause.anatomy = tuple(anatomy)
    return clause


def _resolve(clause: _Clause, sides: frozenset[str]) -> list[str]:
    """Region names of a clause: side placeholders filled with ``sides`` (both if none)."""
    use = [s for s in _SIDE_ORDER if s in (sides or _SIDE_ORDER)]
    names: list[str] = []
    for item in clause.anatomy:
        if "{side}" not in item:
            names.append(item)
        elif item == "{side}_middle_lobe":
            # only the right lung has a middle lobe (no side named: the right one); a named left
            # side can only mean its counterpart, the lingula
            names.extend("right_middle_lobe" if s == "right" else "lingula"
                         for s in _SIDE_ORDER if s in (sides or {"right"}))
        else:
            names.extend(item.format(side=s) for s in use)
    if not clause.anatomy and sides:
        names.extend(f"{s}_lung" for s in _SIDE_ORDER if s in sides)
    return names


def _split_clauses(text: str) -> list[tuple[str, str]]:
    """(separator, clause text) pairs; the first separator is ''."""
    text = _BOTH_SIDES.sub(" bilateral ", text)
    text = _SHARED_LOBE.sub(r"\1 lobe \2 \3 lobe", text)
    parts = _CLAUSE_SPLIT.split(text)
    clauses = [("", parts[0])]
    for i in range(1, len(parts), 2):
        clauses.append((parts[i], parts[i + 1]))
    return [(sep, body) for sep, body in clauses if body.strip()]


@functools.lru_cache(maxsize=8192)
def parse_phrase(text: str) -> PhraseParse:
    """Parse a radiology phrase into regions, negation, uncertainty and finding mentions.

    Never raises on odd text: empty, whitespace-only, non-ASCII or very long phrases give a parse
    (empty -> no location). Results are cached on the text (the pipeline calls this per pair).
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_phrase expects a str phrase, got {type(text).__name__}: {text!r:.80}")
    table = load_regions()
    clean = _to_ascii_lower(text)

    names: list[str] = []
    mentions: list[FindingMention] = []
    positive_content = negative_content = False
    uncertain = False
    previous: _Clause | None = None
    for sep, body in _split_clauses(clean):
        clause = _read_clause(body, sep)
        if previous is not None and sep == "and" and not previous.findings and previous.has_content:
            # "left upper and lower lobe opacities": the anatomy-only fragment lends its side and
            # its negation to the clause it is joined to
            if not clause.sides:
                clause.sides = previous.sides
            clause.negated = clause.negated or previous.negated
        if clause.has_content:
            if clause.negated:
                negative_content = True
            else:
                positive_content = True
                names.extend(_resolve(clause, clause.sides))
        if clause.uncertain and not clause.negated:
            uncertain = True
        mentions.extend(FindingMention(finding, words, clause.negated, clause.uncertain)
                        for finding, words in clause.findings)
        previous = clause

    unique = list(dict.fromkeys(names))
    missing = [n for n in unique if n not in table]
    if missing:  # a vocabulary entry without a box: a bug in this module or regions.yaml
        raise DataError(f"parser produced regions {missing} that the region table lacks",
                        file=REGIONS_FILE)
    regions = tuple(table[n] for n in unique)
    return PhraseParse(text=text, regions=regions, negated=negative_content and not positive_content,
                       uncertain=uncertain, findings=tuple(mentions))
