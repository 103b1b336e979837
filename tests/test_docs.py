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
