"""The documentation: every Markdown link in README.md and docs/ stays inside the repository and points
at a file (and heading) that exists; the README fits in 8 KB; the generated pages' scripts work; the
notebooks are valid, stripped of outputs, and their code compiles."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _links(text: str) -> list[str]:
    text = FENCE.sub("", text)  # code blocks hold commands, not links
    text = re.sub(r"`[^`\n]*`", "", text)
    return LINK.findall(text) + HTML_SRC.findall(text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"[`*_]", "", heading.strip().lower())
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def check_links(pages: list[Path], root: Path) -> list[str]:
    """Every problem found: a link leaving ``root``, a missing file, a missing heading anchor."""
    problems = []
    for page in pages:
        for target in _links(page.read_text()):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: leave by design
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page.resolve()
            where = f"{page.relative_to(root)}: link {target!r}"
            if root.resolve() not in dest.parents and dest != root.resolve():
                problems.append(f"{where} leaves the repository")
            elif not dest.exists():
                problems.append(f"{where} points at a missing file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                problems.append(f"{where} names a heading that {dest.name} does not have")
    return problems


def test_every_link_stays_inside_and_resolves():
    assert PAGES[0].exists() and len(PAGES) > 5
    problems = check_links(PAGES, ROOT)
    assert problems == [], "\n".join(problems)


def test_the_link_checker_catches_bad_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n## Some part\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[spec](../shared/DESIGN.md) [gone](docs/nope.md) [ok](docs/a.md#some-part) "
        "[bad anchor](docs/a.md#other) [web](https://example.org) ![img](docs/img.png)\n"
        "```\n[not a link](../x.md)\n```\n"
    )
    problems = check_links([page], tmp_path)
    assert len(problems) == 4, problems
    assert "leaves the repository" in problems[0] and "missing file" in problems[1]
    assert "heading" in problems[2] and "img.png" in problems[3]


def test_user_facing_text_never_points_at_the_team_folder():
    pages = {p.name: p.read_text() for p in PAGES + NOTEBOOKS}
    assert not [name for name, t in pages.items() if "../shared" in t or "DESIGN.md" in t]
    code = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "matex").rglob("*.py")}
    assert not [name for name, t in code.items() if "../shared" in t]


def test_readme_fits_in_8_kb_and_keeps_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 8 * 1024, len(text.encode())
    assert "./run.sh pipeline" in text and "./run.sh test" in text
    assert "docs/getting-started.md" in text


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stripped_and_compile(nb):
    data = json.loads(nb.read_text())
    cells = data["cells"]
    assert cells[0]["cell_type"] == "markdown"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        f"{nb.name}: strip outputs before committing"
    )
    for k, c in enumerate(code):
        compile("".join(c["source"]), f"{nb.name}[{k}]", "exec")


def test_numbered_notebooks_state_their_question_first():
    numbered = [p for p in NOTEBOOKS if re.match(r"\d\d_", p.name)]
    assert len(numbered) == 5
    for nb in numbered:
        first = "".join(json.loads(nb.read_text())["cells"][0]["source"])
        assert "?" in first.split("\n\n")[0] + first.split("\n\n")[1], nb.name


def test_api_page_is_generated_from_the_docstrings():
    from matex.docgen.report_docs import API_OBJECTS, api_markdown

    text = api_markdown()
    assert all(f"## `{name}`" in text for name in API_OBJECTS)
    assert "Explanation.overlay" in text and ">>> import matex" in text


def test_results_page_is_generated_from_the_artifacts(tmp_path):
    """Two fake runs: the page carries each run's own table and the spread between them."""
    from matex.docgen.report_docs import results_markdown

    runs = []
    for k, value in enumerate([30.0, 34.5]):
        md = tmp_path / f"run{k}" / "demo"
        (md / "tables").mkdir(parents=True)
        (md / "tables" / "results.md").write_text(
            f"### Overall\n\n| method | Pointing ↑ |\n|---|---|\n| matex | {value} |\n"
        )
        pd.DataFrame(
            {
                "method": ["matex", "matex"],
                "metric": ["pointing_game", "pointing_game"],
                "category": ["all", "Edema"],
                "mean": [value, 99.0],
                "ci_low": [0, 0],
                "ci_high": [1, 1],
                "n": [10, 2],
            }
        ).to_parquet(md / "tables" / "summary.parquet")
        (md / "provenance.json").write_text(json.dumps({"config_hash": f"h{k}", "seed": k, "platform": "p"}))
        runs.append(md)
    text = results_markdown(runs, machine="test machine", commit="abc1234")
    assert "| matex | 30.0 |" in text and "| matex | 34.5 |" in text
    assert "commit: abc1234" in text and "test machine" in text and "`h1`" in text
    assert "| matex | pointing_game | 30.00 | 34.50 | 4.50 |" in text  # the per-finding row is not mixed in


def test_prior_notebook_executes_without_a_run(tmp_path):
    """05_prior needs no run (it parses phrases); executing it here keeps one notebook run outside the
    slow end-to-end test, which executes all of them on its tiny run."""
    import os

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "05_prior.ipynb", as_version=4)
    os.environ["MATEX_RESULTS"] = str(tmp_path / "none" / "demo")
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        os.environ.pop("MATEX_RESULTS", None)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "prior_has_location" in text and "no run at" in text
