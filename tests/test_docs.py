"""The documentation site builds with no warning (broken links, missing snippets, docstrings that do not match
their signatures all fail `mkdocs build --strict`), and the README stays short."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_docs_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "index.html").exists()
    for page in ("models", "own-images", "export", "edgetpu", "android", "benchmarks", "api"):
        assert (tmp_path / page / "index.html").exists(), page
    assert "classify" in (tmp_path / "api" / "index.html").read_text()  # the reference comes from the docstrings
    assert not rendered_wrong(tmp_path), rendered_wrong(tmp_path)


def rendered_wrong(site):
    """What a reader would see broken on the built pages: a table shown as `| ... |` text (a cell with an unescaped
    pipe, or text glued to it), a numbered list cut by a block its items do not indent enough, whose later items
    run on as "2. ..." inside a paragraph, or a bullet list run on as "- ..." lines inside a paragraph (a figures
    block or paragraph in a list item indented less than Python-Markdown's 4 spaces); a strict build passes all."""
    import html
    import re

    found = []
    for page in sorted(site.glob("**/index.html")):
        text = re.sub(r"<pre.*?</pre>", " ", page.read_text(encoding="utf-8"), flags=re.S)
        for paragraph in re.findall(r"<p>(.*?)</p>", text, flags=re.S):
            plain = html.unescape(re.sub(r"<[^>]+>", "", paragraph))
            if re.search(r"^\s*\|.*\|\s*$", plain, flags=re.M):
                found.append(f"{page.relative_to(site)}: a table row as text: {plain.strip()[:80]!r}")
            for bullet in re.finditer(r"^\s*- (\S.{0,40})", plain, flags=re.M):
                found.append(f"{page.relative_to(site)}: a bullet item as text: {bullet[1]!r}")
            for item in re.finditer(r"(?:^|[.:;]\s+)([2-9]|1\d)\.\s+[A-Z`]", plain):
                found.append(f"{page.relative_to(site)}: list item {item[1]} as text: "
                             f"{plain[max(0, item.start() - 40):item.end() + 20]!r}")
    return found


def test_readme_is_short():
    """150 lines as a reader sees them: the figures regions' marker comments are not shown."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if not line.startswith("<!-- ")]
    assert len(lines) <= 150, len(lines)


def test_every_markdown_table_row_has_its_headers_cell_count():
    """A `|` inside a cell (`max |Δ|`) must be escaped, or the row splits and the page shows the table as text
    (mkdocs --strict does not catch it); a table ends at a blank line."""
    import re

    broken = []
    for page in [ROOT / "README.md", ROOT / "deploy" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        header = None
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if not line.startswith("|"):
                if header is not None and line.strip():  # GitHub renders a line right after a table as a row
                    broken.append(f"{page.name}:{number}: text right after a table (a blank line must separate them)")
                header = None
                continue
            cells = len(re.split(r"(?<!\\)\|", line.strip())) - 2
            if header is None:
                header = cells
            elif cells != header:
                broken.append(f"{page.name}:{number}: {cells} cells, the header {header}")
    assert not broken, broken


def test_every_public_name_is_in_the_api_reference():
    import keras_mixer

    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    entries = set(re.findall(r"^::: (\S+)$", page, re.MULTILINE))
    # a named variant's row: its docstring's config line (the builders are made in a loop, which the docstring
    # reader cannot follow), checked against the variant itself
    rows = dict(re.findall(r"^\| `keras_mixer\.(\w+)` \| (.*?) \|", page, re.MULTILINE))
    wrong = {name: row for name, row in rows.items()
             if not (getattr(keras_mixer, name).__doc__ or "").startswith(f"{name}: {row}\n")}
    assert not wrong, f"variant rows in docs/api.md that differ from the variants' docstrings: {wrong}"
    # an entry of its own (signature and docstring), a documented module that defines it, or a variant row
    missing = [name for name in keras_mixer.__all__ if f"keras_mixer.{name}" not in entries and name not in rows
               and getattr(getattr(keras_mixer, name), "__module__", None) not in entries]
    assert not missing, f"keras_mixer.__all__ names without an entry in docs/api.md: {missing}"


def _figures():
    """benchmarks/figures.py, the renderer of every measured figure on the pages (a script, not in the wheel)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("figures", ROOT / "benchmarks" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_figure_on_the_pages_is_what_its_result_file_renders():
    stale = _figures().stale()
    assert not stale, f"regions that differ from docs/results/ (run python benchmarks/figures.py): {stale}"


def test_a_changed_result_file_makes_its_regions_stale(tmp_path, monkeypatch):
    import json
    import shutil

    figures = _figures()
    shutil.copytree(figures.RESULTS, tmp_path, dirs_exist_ok=True)
    demo = json.loads((tmp_path / "demo.json").read_text())
    demo["results"]["int8 (QAT)"]["top1"] -= 0.01
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    monkeypatch.setattr(figures, "RESULTS", tmp_path)
    stale = figures.stale()
    assert ("README.md", "demo") in stale and ("docs/index.md", "demo") in stale, stale


def test_tables_of_measured_figures_are_rendered_from_result_files():
    """A table of measurements typed into a page drifts from its run and from the other pages quoting it: every
    table whose header names a measured quantity lies inside a `<!-- figures: ... -->` region."""
    import re

    figures = _figures()
    # what a run measures (a paper's reported top-1 and a graph's GMACs are not measurements of ours)
    measured = re.compile(r"\bms\b|(?<!paper )(?<!published )top-1|\bdB\b|images/s|GMAC/s|GFLOP|MiB|latency|"
                          r"agreement|backward", re.IGNORECASE)
    typed = []
    for page in figures.pages():
        text = figures.REGION.sub("", page.read_text(encoding="utf-8"))
        previous = ""
        for line in text.splitlines():
            if line.startswith("|") and not previous.startswith("|") and measured.search(line):
                typed.append(f"{page.relative_to(ROOT)}: {line[:80]}")
            previous = line
    assert not typed, typed
