"""From a phrase to clauses, and what each clause says (docs/method.md): text normalisation, sentence
and clause splitting, and the reading of one clause (cues, findings, anatomy, sides).

Negation scope: a status cue (resolved, clear, normal, "is not seen") negates its whole clause; a
negation cue ("no", "without", "negative for") governs what follows it in its clause, so the words
before it stay positive ("lingular opacity without effusion" keeps the lingula), and the parser
carries it on over the rest of a coordinated list (``parser.py``). A change word (improved,
decreased, residual) leaves its finding present; a change clause with no finding is a status."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from matex.priors import vocabulary as V


@dataclass
class Clause:
    """One clause: its separator, cues, finding words and anatomy (region names, ``{side}`` left
    open until the clause's sides are known)."""

    text: str
    joined_by: str  # "and", "with", ",", ";", "" (first), "neg" (negated tail)
    negated: bool = False
    uncertain: bool = False
    emphasis: bool = False
    narrowing: bool = False  # "predominantly basal": narrows the clause before it (with emphasis)
    negation_cue: bool = False  # negated by a forward-scope cue ("no", "without"), not by a status
    sides: frozenset[str] = frozenset()
    anatomy: tuple[str, ...] = ()
    findings: tuple[tuple[str, str], ...] = ()
    mentions_lungs: bool = False  # "lungs", "pleura": anatomy without a box of its own
    inherited: tuple[str, ...] = ()  # region names taken from a default-located clause before it
    regions: dict[str, float] = field(default_factory=dict)  # weighted regions, once composed

    @property
    def has_content(self) -> bool:
        return bool(self.anatomy or self.findings or self.sides or self.mentions_lungs)

    @property
    def has_location(self) -> bool:
        return bool(self.anatomy or self.sides)


def to_ascii_lower(text: str) -> str:
    """Lower-case ASCII: accents stripped, other non-ASCII letters and all dashes/slashes -> space."""
    out = []
    for ch in unicodedata.normalize("NFKD", text):
        if ch.isascii():
            out.append(ch)
        elif unicodedata.category(ch) != "Mn":  # combining accents dropped, anything else a space
            out.append(" ")
    s = "".join(out).lower()
    s = re.sub(r"[-_/'\"`*&+=<>#~|\\]", " ", s)  # "left-sided", "r/o", "can't" -> words
    return re.sub(r"[ \t\r\f\v]+", " ", s)


def split_sentences(text: str) -> list[str]:
    """Sentences of normalised text (never share negation, emphasis or inherited location)."""
    text = V.BOTH_SIDES.sub(" bilateral ", text)
    text = V.SIDE_COMPARISON.sub(r"greater on the \1", text)
    text = V.SHARED_LOBE.sub(r"\1 lobe \2 \3 lobe", text)
    return [s for s in V.SENTENCE_SPLIT.split(text) if s.strip()]


def split_clauses(sentence: str) -> list[tuple[str, str]]:
    """(separator, clause text) pairs of one sentence; the first separator is ''."""
    parts = V.CLAUSE_SPLIT.split(sentence)
    clauses = [("", parts[0])] + [(parts[i], parts[i + 1]) for i in range(1, len(parts), 2)]
    return [(sep, body) for sep, body in clauses if body.strip()]


def _blank(pattern: re.Pattern[str], text: str, found: list[re.Match[str]] | None = None) -> str:
    """Blank every match of ``pattern`` out of ``text`` (same length, so positions hold)."""

    def blank(match: re.Match[str]) -> str:
        if found is not None:
            found.append(match)
        return " " * len(match.group(0))

    return pattern.sub(blank, text)


def read_clauses(body: str, joined_by: str) -> list[Clause]:
    """Read one clause; a negation cue after some words splits off a negated tail clause."""
    rest = " " + body + " "
    hits: list[re.Match[str]] = []
    rest = _blank(V.UNCERTAINTY, rest, hits)
    uncertain = bool(hits)
    rest = _blank(V.PSEUDO_NEGATION, rest)
    changes: list[re.Match[str]] = []
    rest = _blank(V.CHANGE, rest, changes)  # "improved opacity": still there
    if V.STATUS.search(rest):
        return [_read(body, rest, joined_by, negated=True, uncertain=uncertain)]
    cue = V.NEGATION.search(rest)
    if cue is None:
        clause = _read(body, rest, joined_by, negated=False, uncertain=uncertain)
        clause.negated = bool(changes) and not clause.findings  # "improved aeration at the base"
        return [clause]
    head = _read(body, rest[: cue.start()], joined_by, negated=False, uncertain=uncertain)
    if not head.findings:  # "right costophrenic angle is free of fluid": the anatomy goes with it
        head = _read(body, rest, joined_by, negated=True, uncertain=uncertain)
        head.negation_cue = True
        return [head]
    tail = _read(body, rest[cue.start() :], "neg", negated=True, uncertain=uncertain)
    tail.negation_cue = True
    return [head, tail]


def _read(body: str, rest: str, joined_by: str, *, negated: bool, uncertain: bool) -> Clause:
    """One clause's findings, cues, anatomy and sides from ``rest`` (its text with cue words blanked)."""
    clause = Clause(text=body.strip(), joined_by=joined_by, negated=negated, uncertain=uncertain)
    findings = _read_findings(rest)
    clause.findings = tuple(findings)
    clause.narrowing = not findings and bool(V.NARROWING.search(rest))
    clause.emphasis = clause.narrowing or (not findings and bool(V.EMPHASIS.search(rest)))

    anatomy: list[str] = []  # "{side}" placeholder = resolve with the clause's sides
    sides: set[str] = set()  # a lobe's own side also counts, so an "and" fragment can lend it
    rest = _read_lobes(rest, anatomy, sides)
    rest = _read_structures(rest, anatomy, sides)
    hits: list[re.Match[str]] = []
    rest = _blank(V.LATERALITY, rest, hits)
    for m in hits:
        word = m.group(1) or m.group(2)
        sides |= {"right", "left"} if word in ("bilateral", "bilaterally", "both") else {V.SIDE_OF[word]}
    for zone, pat in V.ZONES:
        if pat.search(rest):
            anatomy.append(f"{{side}}_{zone}_zone")
    clause.mentions_lungs = bool(V.GENERIC_ANATOMY.search(rest))
    clause.sides = frozenset(sides)
    clause.anatomy = tuple(dict.fromkeys(anatomy))
    return clause


def _read_findings(rest: str) -> list[tuple[str, str]]:
    """(finding, words) for every finding pattern's matches, in vocabulary order; a pattern sees the
    text with the earlier patterns' matches blanked, so words count for one finding only."""
    words = rest
    findings: list[tuple[str, str]] = []
    for name, pat in V.FINDING_PATTERNS:
        hits: list[re.Match[str]] = []
        words = _blank(pat, words, hits)
        findings.extend((name, m.group(0)) for m in hits)
    return findings


def _read_lobes(rest: str, anatomy: list[str], sides: set[str]) -> str:
    """Add the lobes (named, abbreviated, the lingula) and the biapical/bibasal zones to ``anatomy``
    and their sides to ``sides``; return ``rest`` with them blanked."""
    hits: list[re.Match[str]] = []
    rest = _blank(V.LOBE, rest, hits)
    for m in hits:
        zone = V.ZONE_OF_LOBE_WORD[m.group(2)]
        if m.group(1) is None:
            anatomy.append(f"{{side}}_{zone}_lobe")
            continue
        side = V.SIDE_OF[m.group(1)]
        sides.add(side)
        # the left lung has no middle lobe: "left middle lobe" can only mean the lingula
        anatomy.append("lingula" if (side, zone) == ("left", "middle") else f"{side}_{zone}_lobe")
    hits = []
    rest = _blank(V.LOBE_ABBREV, rest, hits)
    for m in hits:
        anatomy.append(V.LOBE_ABBREVIATIONS[m.group(1)])
        sides.add("right" if m.group(1).startswith("r") else "left")
    hits = []
    rest = _blank(V.LINGULA, rest, hits)
    if hits:
        anatomy.append("lingula")
        sides.add("left")
    hits = []
    rest = _blank(V.BI_ZONE, rest, hits)
    for m in hits:
        sides |= {"right", "left"}
        anatomy.append("{side}_apex" if m.group(1).startswith("biapical") else "{side}_lower_zone")
    return rest


def _read_structures(rest: str, anatomy: list[str], sides: set[str]) -> str:
    """Add the upper abdomen, the sided structures and the unsided ones to ``anatomy`` (an upper
    abdomen's named side to ``sides``); return ``rest`` with them blanked."""
    hits: list[re.Match[str]] = []
    rest = _blank(V.UPPER_ABDOMEN, rest, hits)
    for m in hits:
        anatomy.append("{side}_upper_abdomen")
        if m.group(1):
            sides.add(V.SIDE_OF[m.group(1)])
    for name, pat in V.SIDED_STRUCTURES:
        hits = []
        rest = _blank(pat, rest, hits)
        if hits:
            anatomy.append(f"{{side}}_{name}")
    for names, pat in V.UNSIDED_STRUCTURES:
        hits = []
        rest = _blank(pat, rest, hits)
        if hits:
            anatomy.extend(names)
    return rest


def resolve(anatomy: tuple[str, ...], sides: frozenset[str]) -> list[str]:
    """Region names: side placeholders filled with ``sides`` (both if none); a side with no
    anatomy means that lung field."""
    use = [s for s in V.SIDE_ORDER if s in (sides or V.SIDE_ORDER)]
    names: list[str] = []
    for item in anatomy:
        if "{side}" not in item:
            names.append(item)
        elif item == "{side}_middle_lobe":
            # only the right lung has a middle lobe (no side named: the right one); a named left
            # side can only mean its counterpart, the lingula
            names.extend(
                "right_middle_lobe" if s == "right" else "lingula" for s in V.SIDE_ORDER if s in (sides or {"right"})
            )
        else:
            names.extend(item.format(side=s) for s in use)
    if not anatomy and sides:
        names.extend(f"{s}_lung" for s in V.SIDE_ORDER if s in sides)
    return names
