"""Rule-based parser from a radiology phrase to weighted anatomical regions (docs/method.md, feeding
Eqs. 3-5). Vocabulary: ``vocabulary.py``; clause reading and negation scope: ``clauses.py``; region
boxes, finding defaults and weights: ``regions.yaml`` (``tables.py``).

Composition, per sentence (sentences never share anything):

* **negation and status** drop only the clauses they govern (``clauses.py``); negated, resolved,
  clear and normal statements never add regions; a negation carries on over a coordinated list
  ("no pneumothorax, effusion, or consolidation": all three), up to "but"/"with"/";", a hedge, or an
  item saying its finding is there ("no pneumothorax, small left effusion"); a finding described as
  improved, decreased or residual is still present where the sentence puts it;
* **inheritance**: a finding-only clause joined by "and"/"with"/","/";" takes the full location
  (lobe, zone, side) of the clause before it when that location is pulmonary ("right middle lobe
  scarring and atelectasis" -> right middle lobe), unless its finding has a place of its own: then
  it takes only the side ("right lower lobe pneumonia and effusion" -> the right base and
  costophrenic angle for the effusion); an anatomy fragment without a side takes the side of the
  clause before it ("left upper and lower lobe");
* **finding defaults**: a clause naming no anatomy of its own gets its finding's default regions on
  the named side(s), both sides if none (effusion -> lower zone and costophrenic angle; edema ->
  perihilar and basal; cardiomegaly -> heart; pneumothorax -> apex and lateral pleura); an explicit
  location always wins; a side alone with no default means that lung field;
* **narrowing**: "predominantly basal", "mainly in the upper lobes" replaces the regions of the
  clause before it by the zone named, on that clause's sides;
* **weights**: a one-sided or unsided location weighs ``specific``, a two-sided one ``diffuse``,
  times the default's own weight, times ``hedged`` for a hedged clause; an emphasis clause ("most
  pronounced at the bases", "larger on the right") lifts its regions to ``specific`` and caps the
  others at ``deemphasised``; a region named twice keeps its largest weight; the phrase's weights
  are finally divided by their maximum.

Radiological convention: the patient's RIGHT is the IMAGE LEFT; the boxes in ``regions.yaml`` follow
it, the parser only names regions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from matex.errors import DataError
from matex.priors import vocabulary as V
from matex.priors.clauses import (
    Clause,
    read_clauses,
    resolve,
    split_clauses,
    split_sentences,
    to_ascii_lower,
)
from matex.priors.tables import (
    REGIONS_FILE,
    Box,
    Region,
    load_finding_defaults,
    load_regions,
    load_weights,
)

__all__ = ["Box", "FindingMention", "PhraseParse", "Region", "load_regions", "parse_phrase"]


@dataclass(frozen=True)
class FindingMention:
    """One finding word in the phrase, with the state of the clause it sits in."""

    finding: str  # canonical MS-CXR-style category, e.g. "pleural effusion"
    text: str  # the words matched
    negated: bool
    uncertain: bool


@dataclass(frozen=True)
class PhraseParse:
    """What the parser read from a phrase. ``regions`` holds only regions of non-negated clauses,
    ``weights`` their relative weights (max 1); ``negated`` is True when every clause that mentions a
    finding or anatomy is negated; ``has_location`` is True when a region survives."""

    text: str
    regions: tuple[Region, ...]
    negated: bool
    uncertain: bool
    findings: tuple[FindingMention, ...]
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.weights:
            object.__setattr__(self, "weights", (1.0,) * len(self.regions))
        if len(self.weights) != len(self.regions):
            raise ValueError("PhraseParse needs one weight per region")

    @property
    def has_location(self) -> bool:
        return len(self.regions) > 0

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    def as_record(self) -> dict[str, Any]:
        """Flat row for a Parquet table of parsed phrases (the pipeline's audit artifact)."""
        positive = sorted({f.finding for f in self.findings if not f.negated})
        negated = sorted({f.finding for f in self.findings if f.negated})
        return {
            "prior_regions": ";".join(self.region_names),
            "prior_weights": ";".join(f"{w:.2f}" for w in self.weights),
            "prior_has_location": self.has_location,
            "prior_negated": self.negated,
            "prior_uncertain": self.uncertain,
            "prior_findings": ";".join(positive),
            "prior_negated_findings": ";".join(negated),
        }


def _default_regions(clause: Clause) -> dict[str, float]:
    """The finding defaults of a clause that names no anatomy (empty when none applies)."""
    defaults = load_finding_defaults()
    out: dict[str, float] = {}
    for finding, _ in clause.findings:
        for pattern, weight in defaults.get(finding, {}).items():
            for name in resolve((pattern,), clause.sides):
                out[name] = max(out.get(name, 0.0), weight)
    return out


def _clause_regions(clause: Clause) -> dict[str, float]:
    """Weighted regions of one positive clause (before the phrase-level emphasis and rescaling)."""
    w = load_weights()
    if clause.anatomy:
        named = {n: 1.0 for n in resolve(clause.anatomy, clause.sides)}
    elif clause.inherited:
        named = {n: 1.0 for n in clause.inherited}
    else:
        named = _default_regions(clause) or {n: 1.0 for n in resolve((), clause.sides)}
    two_sided = {V.side_of_region(n) for n in named} >= {"right", "left"}
    scale = (w.diffuse if two_sided else w.specific) * (w.hedged if clause.uncertain else 1.0)
    return {n: v * scale for n, v in named.items()}


def _sides_of(clause: Clause) -> frozenset[str]:
    """The patient sides of a clause's regions (its named sides when it has no regions yet)."""
    return frozenset(filter(None, (V.side_of_region(n) for n in clause.regions))) or clause.sides


def _link(clause: Clause, previous: Clause | None) -> None:
    """Inheritance inside a sentence: location for finding-only clauses (only the side when the
    finding has a default place of its own), sides for anatomy fragments."""
    if previous is None or previous.negated or clause.negated or clause.sides:
        return
    if clause.anatomy:
        if clause.joined_by == "and" and previous.sides and not (clause.findings and previous.findings):
            clause.sides = previous.sides  # "left upper" + "and lower lobe opacities"
    elif (
        clause.findings
        and clause.joined_by in V.JOINING
        and previous.has_location
        and not set(previous.anatomy) & V.NON_PULMONARY
    ):
        defaults = load_finding_defaults()
        if all(f in defaults for f, _ in clause.findings):  # "pneumonia and effusion": each its own place
            clause.sides = _sides_of(previous)
            return
        clause.anatomy, clause.sides = previous.anatomy, previous.sides
        if not previous.anatomy:  # "left effusion with adjacent atelectasis": the default's regions
            clause.inherited = tuple(previous.regions)


def _emphasise(weights: dict[str, float], clause: Clause, previous: Clause | None) -> None:
    """ "most pronounced at the bases" / "larger on the right": lift the named regions, cap the rest."""
    w = load_weights()
    if clause.anatomy:
        sides = clause.sides or (previous.sides if previous is not None else frozenset())
        lifted = set(resolve(clause.anatomy, sides))
    else:
        lifted = {n for n in weights if V.side_of_region(n) in clause.sides}
    for name, weight in weights.items():
        if name not in lifted:
            weights[name] = min(weight, w.deemphasised)
    for name in lifted:
        weights[name] = w.specific


def _narrow(clause: Clause, target: Clause) -> None:
    """ "predominantly basal": the target clause's regions become the zone named, on its sides."""
    w = load_weights()
    names = resolve(clause.anatomy, clause.sides or _sides_of(target))
    two_sided = {V.side_of_region(n) for n in names} >= {"right", "left"}
    scale = (w.diffuse if two_sided else w.specific) * (w.hedged if target.uncertain else 1.0)
    target.regions = {n: scale for n in names}


def _continues_negated_list(clause: Clause, previous: Clause | None) -> bool:
    """ "no pneumothorax" + ", effusion" + ", or consolidation": the negation scopes over the list."""
    return (
        previous is not None
        and previous.negated
        and previous.negation_cue
        and not clause.negated
        and clause.joined_by in V.LIST_JOINERS
        and clause.has_content
        and (previous.uncertain or not clause.uncertain)
        and not V.PRESENCE.search(clause.text)
    )


def _merge(clauses: list[Clause]) -> dict[str, float]:
    """Region -> largest weight over the positive clauses."""
    weights: dict[str, float] = {}
    for clause in clauses:
        for name, weight in clause.regions.items():
            weights[name] = max(weights.get(name, 0.0), weight)
    return weights


@functools.lru_cache(maxsize=8192)
def parse_phrase(text: str) -> PhraseParse:
    """Parse a radiology phrase into weighted regions, negation, uncertainty and finding mentions.

    Never raises on odd text: empty, whitespace-only, non-ASCII or very long phrases give a parse
    (empty -> no location). Results are cached on the text (the pipeline calls this per pair).
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_phrase expects a str phrase, got {type(text).__name__}: {text!r:.80}")
    table = load_regions()
    weights: dict[str, float] = {}
    mentions: list[FindingMention] = []
    positive_content = negative_content = uncertain = False
    positives: list[Clause] = []
    for sentence in split_sentences(to_ascii_lower(text)):
        previous: Clause | None = None
        target: Clause | None = None  # this sentence's last positive clause, for narrowing
        for sep, body in split_clauses(sentence):
            for clause in read_clauses(body, sep):
                _carry_over(clause, previous)
                _link(clause, previous)
                mentions.extend(
                    FindingMention(f, words, clause.negated, clause.uncertain) for f, words in clause.findings
                )
                if not clause.has_content:
                    previous = clause if clause.uncertain else previous
                    continue
                if clause.negated:
                    negative_content = True
                elif clause.narrowing and clause.anatomy and target is not None:
                    _narrow(clause, target)
                    weights = _merge(positives)
                elif clause.emphasis and weights and clause.has_location:
                    _emphasise(weights, clause, previous)
                else:
                    positive_content = True
                    uncertain = uncertain or clause.uncertain
                    clause.regions = _clause_regions(clause)
                    positives.append(clause)
                    target = clause
                    for name, weight in clause.regions.items():
                        weights[name] = max(weights.get(name, 0.0), weight)
                previous = clause
    return _phrase_parse(text, table, weights, negative_content and not positive_content, uncertain, mentions)


def _carry_over(clause: Clause, previous: Clause | None) -> None:
    """What ``clause`` takes from the clause before it in the sentence: the hedge of a clause with no
    content ("possibly, with ..."), or the negation of a negated anatomy fragment ("no right upper"
    + "and middle lobe opacity") or of a coordinated list it continues."""
    if previous is not None and not previous.has_content:
        clause.uncertain = clause.uncertain or previous.uncertain  # "possibly, with ..."
    elif (
        previous is not None
        and clause.joined_by == "and"
        and previous.negated
        and not previous.findings
        and clause.anatomy
    ):
        clause.negated = clause.negation_cue = True  # "no right upper" + "and middle lobe opacity"
    elif _continues_negated_list(clause, previous):
        clause.negated = clause.negation_cue = True


def _phrase_parse(
    text: str,
    table: dict[str, Region],
    weights: dict[str, float],
    negated: bool,
    uncertain: bool,
    mentions: list[FindingMention],
) -> PhraseParse:
    """The parse: the regions' boxes (every region must be in the table) with their weights divided
    by the largest."""
    missing = [n for n in weights if n not in table]
    if missing:  # a vocabulary entry without a box: a bug in this package or regions.yaml
        raise DataError(f"parser produced regions {missing} that the region table lacks", file=REGIONS_FILE)
    top = max(weights.values(), default=1.0)
    return PhraseParse(
        text=text,
        regions=tuple(table[n] for n in weights),
        negated=negated,
        uncertain=uncertain,
        findings=tuple(mentions),
        weights=tuple(round(v / top, 4) for v in weights.values()),
    )
