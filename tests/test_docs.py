"""The manual builds, its links resolve, and nothing in the repository points outside it.

Three checks (issue 17): `mkdocs build --strict` succeeds (broken links, missing anchors or a
page left out of the site fail it); every relative link in README.md and docs/**/*.md reaches
an existing file (and heading, for `#anchor` links into Markdown); and no tracked file refers
to background documents that are not in the repository, or to a docs page or source file that
does not exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)

# Spelled in pieces so that this file does not match its own patterns.
OUTSIDE = [
    re.compile(r"\b" + "spe" + r"cs/"),  # the background spec folder
    re.compile(r"\b" + "sha" + r"red/"),  # the shared background folder
    re.compile("DES" + r"IGN\.md|DES" + r"IGN's"),  # the background design document
    re.compile(r"\b" + "sp" + r"ec (?:section )?\d"),  # "spec 2.7", "spec section 9"
]
DOC_PATH = re.compile(r"(?<![\w/.])docs/[\w./<>-]*?\.md\b")
SOURCE_PATH = re.compile(r"(?<![\w/.])(?:benchmark|methods|datasets|tests)/[\w/]+\.py\b")
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".dcm", ".npz", ".pt", ".parquet", ".tif",
                   ".tiff", ".ico", ".pdf", ".gz", ".zip", ".whl"}


def _slug(text: str) -> str:
    """The anchor Python-Markdown's toc extension (used by mkdocs) gives a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _prose(text: str) -> str:
    """Markdown without fenced blocks and inline code (examples there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _tracked_files() -> list[Path]:
    """Files under version control; outside a git checkout, every file except build output."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode()
        files = [ROOT / p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "site", "build", "__pycache__", ".pytest_cache", ".ruff_cache"}
        files = [p for p in ROOT.rglob("*")
                 if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts)]
    return [p for p in files if p.is_file() and p.suffix.lower() not in BINARY_SUFFIXES]


def test_docs_build_in_strict_mode(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                          str(tmp_path / "site"), "--config-file", str(ROOT / "mkdocs.yml")],
                         cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    # The plugin contracts' API reference is rendered from the docstrings.
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("training_groups", "fingerprint", "launch"):
        assert name in api, name


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md":
            slugs = {_slug(h) for h in HEADING.findall(FENCE.sub("", dest.read_text("utf-8")))}
            if anchor not in slugs:
                broken.append(f"{target}: no heading '#{anchor}' in {dest.name}")
    assert not broken, f"{doc.relative_to(ROOT)}: " + "; ".join(broken)


def test_no_reference_outside_the_repository() -> None:
    me = Path(__file__).resolve()
    found = []
    for path in _tracked_files():
        if path.resolve() == me:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(ROOT)
        for n, line in enumerate(text.splitlines(), 1):
            for pattern in OUTSIDE:
                if pattern.search(line):
                    found.append(f"{rel}:{n}: {line.strip()[:90]}")
            for ref in DOC_PATH.findall(line):
                if "<" not in ref and not (ROOT / ref).exists():
                    found.append(f"{rel}:{n}: {ref} does not exist")
            for ref in SOURCE_PATH.findall(line):
                if not (ROOT / ref).exists():
                    found.append(f"{rel}:{n}: {ref} does not exist")
    assert not found, "\n".join(found)


def test_every_registered_method_has_a_page() -> None:
    from benchmark.registry import METHODS

    missing = [name for name, info in METHODS.all().items()
               if info.provider.package == "calcbench"
               and not (ROOT / "docs" / "methods" / f"{name}.md").is_file()]
    assert not missing, f"methods without a docs/methods/<name>.md page: {missing}"
