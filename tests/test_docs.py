"""The documentation site builds with no warning (broken links, missing snippets, docstrings that do not match
their signatures all fail `mkdocs build --strict`), and the README stays short."""

import os
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


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_every_markdown_table_row_has_its_headers_cell_count():
    """A `|` inside a cell (`max |Δ|`) must be escaped, or the row splits and the page shows the table as text
    (mkdocs --strict does not catch it); a table ends at a blank line."""
    import re

    broken = []
    for page in [ROOT / "README.md", ROOT / "export" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
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
    missing = [name for name in keras_mixer.__all__ if name not in page]
    assert not missing, f"keras_mixer.__all__ names missing from docs/api.md: {missing}"
