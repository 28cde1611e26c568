"""docs/guide/options.md lists every option with its declared valid values (issue 18)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.config import PROFILE_VALID
from benchmark.options_doc import hparam_rows, options_markdown
from benchmark.registry import METHODS

DOC = Path(__file__).resolve().parent.parent / "docs" / "guide" / "options.md"
REGENERATE = "regenerate it: python -m benchmark.options_doc > docs/guide/options.md"


def test_page_lists_every_profile_field_and_hparam_with_its_range() -> None:
    text = DOC.read_text(encoding="utf-8")
    for key, valid in PROFILE_VALID.items():
        assert f"| `{key}` |" in text and valid.describe() in text, (key, REGENERATE)
    sections = text.split("\n### ")
    for name, info in METHODS.all().items():
        if info.provider.package != "calcbench":
            continue  # a plugin installed here documents its own options
        section = next((s for s in sections if s.startswith(f"`{name}`")), None)
        assert section is not None, (name, REGENERATE)
        for key, _, valid, _ in hparam_rows(info.cls):
            assert f"| `{key}` |" in section and valid in section, (name, key, REGENERATE)


def test_generator_and_cli_listing_agree() -> None:
    page = options_markdown()
    res = CliRunner().invoke(app, ["list", "methods", "--hparams"])
    assert res.exit_code == 0, res.output
    for key, valid in PROFILE_VALID.items():
        assert valid.describe() in page, key
    for key, _, valid, _ in hparam_rows(METHODS.all()["unet"].cls):
        assert key in res.output and valid in page
