"""Words the phrase parser reads (docs/method.md): cues (negation, status, uncertainty, emphasis),
finding words, anatomy and laterality, as compiled regular expressions over lower-case ASCII text.
Region boxes and finding defaults are data (``regions.yaml``); this module only names regions."""

from __future__ import annotations

import re

# Sentences never share negation or location; clauses inside a sentence may (see parser.py).
SENTENCE_SPLIT = re.compile(r"[.!?\n]+(?:\s|$)|[.!?\n]+")
CLAUSE_SPLIT = re.compile(r"([,;:()\[\]]|\b(?:and|but|with|however|although|though|whereas|while)\b)")
JOINING = ("and", "with", ",", ";")  # separators across which a finding-only clause inherits

# Uncertainty first: its phrases contain negation words ("cannot exclude", "not excluded").
UNCERTAINTY = re.compile(
    r"\b(?:possible|possibly|probable|probably|may|might|could|likely|unlikely|suspected|suspect|"
    r"suspicious for|concerning for|concern for|suggestive of|suggests?|questionable|"
    r"cannot (?:be )?(?:excluded?|ruled? out)|can ?not (?:be )?(?:excluded?|ruled? out)|"
    r"can t (?:be )?(?:excluded?|ruled? out)|not (?:be )?(?:excluded|ruled out)|"
    r"rule out|r o|versus|vs|equivocal|borderline|presumed|compatible with|consistent with|"
    r"differential|indeterminate|reflect|represent)\b"
)
# "no change", "not significantly changed": statements about change, not negations of the finding.
PSEUDO_NEGATION = re.compile(
    r"\b(?:no|without) (?:(?:significant|appreciable|substantial|interval|definite|major) )*"
    r"(?:change|progression|increase|decrease|worsening|improvement)\b|\bnot (?:significantly )?changed\b"
)
# Change statements (issue 25): a finding described as improved, decreasing, resolving or residual
# is still there, where the sentence puts it ("improved right perihilar opacity"); a change clause
# naming no finding is a status statement ("improved aeration at the bases" adds no region).
CHANGE = re.compile(
    r"\b(?:partially|partly|incompletely) (?:resolved|cleared)\b|\bpartial (?:resolution|clearing)\b|"
    r"\b(?:improved|improvement|improving|decreased|decreasing|decrease|resolving|residual|smaller)\b"
)
# Status statements (negated, resolved, clear, normal): the whole clause adds no region, wherever
# the cue sits ("the left effusion has resolved", "the costophrenic angles are clear").
STATUS = re.compile(
    r"\b(?:(?:is |are )?not (?:seen|identified|visualized|visualised|present|evident|appreciated|"
    r"demonstrated)|no longer|resolved|resolution|cleared|clearing|clear|normal|unremarkable|absent)\b"
)
# A negation cue governs what follows it in its clause (NegEx-style forward scope): "lingular
# opacity without effusion" keeps the lingula.
NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of|absence of|lack of|none|nor)\b")
# A negation scopes over a whole coordinated list (issue 25): "no pneumothorax, effusion, or
# consolidation" negates all three. The list ends at "but"/"with"/";"/a sentence end, or at an item
# that says the finding is there (a size or course word: "no pneumothorax, small left effusion").
LIST_JOINERS = (",", "and")
PRESENCE = re.compile(
    r"\b(?:small|moderate|moderately|mild|mildly|trace|tiny|minimal|severe|persistent|persisting|"
    r"persists|remains?|stable|unchanged|increased|increasing|worsening|worsened|there (?:is|are))\b"
)
# "most pronounced at the bases", "larger on the right": shifts the weight inside the phrase.
EMPHASIS = re.compile(
    r"\b(?:larger|greater|greatest|worse|worst|more|most|especially|particularly|pronounced|marked)\b"
)
# "predominantly basal", "mainly in the upper lobes": narrows the clause before it to the zone named
# (issue 25); a narrowing word with only a side ("predominantly on the right") is an emphasis.
NARROWING = re.compile(r"\b(?:predominantly|predominant|predominates|mainly|mostly|chiefly|primarily|largely)\b")
SIDE_COMPARISON = re.compile(r"\b(right|left) (?:greater|more|worse|larger) than (?:right|left)\b")

FINDINGS: tuple[tuple[str, str], ...] = (  # order matters: earlier words are consumed first
    ("pericardial effusion", r"pericardial effusions?"),
    ("atelectasis", r"atelectas[ie]s|atelectatic|collapse"),
    (
        "cardiomegaly",
        (
            r"cardiomegaly|cardiac enlargement|enlarged (?:heart|cardiac silhouette)|"
            r"enlargement of the (?:heart|cardiac silhouette)|"
            r"(?:heart|cardiac silhouette)(?: size)? (?:is |remains |appears )?(?:\w+ )?enlarged"
        ),
    ),
    ("consolidation", r"consolidations?|consolidative|airspace disease"),
    (
        "edema",
        (
            r"o?edema|vascular congestion|pulmonary congestion|congestion|interstitial markings|"
            r"peribronchial cuffing|kerley b? ?lines"
        ),
    ),
    (
        "lung opacity",
        (
            r"opacit(?:y|ies)|opacification|opacified|infiltrates?|densit(?:y|ies)|"
            r"haziness|hazy"
        ),
    ),
    ("pleural effusion", r"effusions?|(?:pleural|subpulmonic) fluid|blunting"),
    ("pneumonia", r"pneumonias?|pneumonic|infection|infectious"),
    ("pneumothorax", r"pneumothora(?:x|ces)|ptx"),
)
FINDING_PATTERNS = tuple((name, re.compile(rf"\b(?:{pat})\b")) for name, pat in FINDINGS)

SIDE_WORD = r"right|left|rt|lt|r|l"
LOBE = re.compile(rf"\b(?:({SIDE_WORD})\s+)?(upper|middle|mid|lower)\s+lobes?\b")
LOBE_ABBREV = re.compile(r"\b(rul|rml|rll|lul|lll)\b")
LINGULA = re.compile(r"\blingula[r]?\b")
BI_ZONE = re.compile(r"\b(bibasilar|bibasal|bibasally|bibasilarly|biapical|biapically)\b")
# "below the right hemidiaphragm": the upper abdomen, side captured
UPPER_ABDOMEN = re.compile(
    rf"\b(?:below|beneath|under|underneath)\s+(?:the\s+)?(?:({SIDE_WORD})\s+)?(?:hemi)?diaphragms?\b|"
    r"\bsubdiaphragmatic\b"
)
# Structures that exist on both sides (checked in this order, each consumed when found).
SIDED_STRUCTURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("perihilar", re.compile(r"\b(?:perihilar|parahilar|peri hilar|para hilar)\b")),
    ("infrahilar", re.compile(r"\b(?:infrahilar|infra hilar)\b")),
    ("suprahilar", re.compile(r"\b(?:suprahilar|supra hilar)\b")),
    ("hilum", re.compile(r"\b(?:hilar|hilum|hila|hilus)\b")),
    ("costophrenic_angle", re.compile(r"\b(?:costophrenic|cp)(?: (?:angles?|sulc(?:us|i)))?\b")),
    ("subpulmonic", re.compile(r"\b(?:subpulmonic|subpulmonary)\b")),
    ("hemidiaphragm", re.compile(r"\b(?:hemidiaphragms?|diaphragms?|diaphragmatic)\b")),
    ("apex", re.compile(r"\b(?:apex|apices|apical|apically)\b")),
)
# Structures without a side.
UNSIDED_STRUCTURES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("retrocardiac",), re.compile(r"\b(?:retrocardiac|behind the heart)\b")),
    (("heart", "mediastinum"), re.compile(r"\bcardiomediastinal\b")),
    (("heart",), re.compile(r"\b(?:heart|cardiac|cardiomegaly|pericardial)\b")),
    (("mediastinum",), re.compile(r"\b(?:mediastinum|mediastinal|pneumomediastinum)\b")),
)
NON_PULMONARY = frozenset({"heart", "mediastinum"})
SIDE_ANATOMY = (
    r"sided|upper|middle|mid|lower|lobes?|lungs?|base|bases|basal|basilar|apex|"
    r"apical|apices|hilar|hilum|perihilar|costophrenic|hemidiaphragm|hemithorax|"
    r"pleural|effusion|pneumothorax|chest"
)
LATERALITY = re.compile(rf"\b(right|left|bilateral|bilaterally|both)\b|\b(rt|lt|r|l)\b(?= (?:{SIDE_ANATOMY})\b)")
ZONES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("upper", re.compile(r"\b(?:upper|superior)\b")),
    ("mid", re.compile(r"\b(?:mid|middle|midlung|midzone)\b")),
    ("lower", re.compile(r"\b(?:lower|base|bases|basal|basally|basilar|basilarly|inferior)\b")),
)
# "right upper and lower lobes" -> "right upper lobe and lower lobe" before clause splitting.
SHARED_LOBE = re.compile(r"\b(upper|middle|mid|lower) (and|or) (upper|middle|mid|lower) lobes?\b")
BOTH_SIDES = re.compile(
    r"\b(?:right and left|left and right|right or left|left or right|"
    r"on both sides|both sides)\b"
)
# anatomy without a box of its own ("chest tube" is a device, not anatomy)
GENERIC_ANATOMY = re.compile(
    r"\b(?:lungs?|pulmonary|cardiopulmonary|pleura|pleural|hemithora(?:x|ces)|chest(?! tubes?\b))\b"
)

SIDE_ORDER = ("right", "left")
SIDE_OF = {"right": "right", "rt": "right", "r": "right", "left": "left", "lt": "left", "l": "left"}
ZONE_OF_LOBE_WORD = {"upper": "upper", "middle": "middle", "mid": "middle", "lower": "lower"}
LOBE_ABBREVIATIONS = {
    "rul": "right_upper_lobe",
    "rml": "right_middle_lobe",
    "rll": "right_lower_lobe",
    "lul": "left_upper_lobe",
    "lll": "left_lower_lobe",
}
LEFT_ONLY_REGIONS = frozenset({"lingula", "retrocardiac"})


def side_of_region(name: str) -> str | None:
    """Patient side of a region name ('right', 'left') or None for midline structures."""
    if name.startswith("right_"):
        return "right"
    if name.startswith("left_") or name in LEFT_ONLY_REGIONS:
        return "left"
    return None
