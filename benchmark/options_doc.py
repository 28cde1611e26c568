"""The option reference (docs/guide/options.md), generated from the declarations.

`python -m benchmark.options_doc > docs/guide/options.md` rewrites the page; a test checks that
every profile field and every registered method's hparam appears there with its valid values,
so the page cannot drift from `PROFILE_VALID` and the `HParam.valid` declarations.
"""

from __future__ import annotations

from typing import Any

from benchmark.config import PROFILE_VALID, PROFILES, show_value

INTRO = """# Options and their valid values

Every `--set key=value` of `bench run` (and of `bench sweep --set`) is either a profile field
(the harness budget, shared by all methods) or a hyper-parameter of the chosen method. Each key
declares its valid values: a type with a range, or a set of choices. The whole configuration
(profile, the hparam trial's draw, then the `--set` values) is checked before anything is
created: no data is generated, no run folder or lock appears. A bad value is one line naming the
key, the value and the valid range, and `bench` exits with code 2:

```
$ bench run --method unet --source ffdm --profile smoke --set lr=-1
error: --set lr=-1: out of range; expected a number in (0, 1]
```

After the per-key checks each method checks how its values fit together (its `check_config`):
for example, U-Net-style networks need an image size divisible by 16, Swin-Unet needs a window
that divides every token grid, CS-net needs the image size divisible by 4 x `context_scale`.

## Value syntax

- Numbers, `true` / `false` and lists are read as JSON: `--set lr=3e-4`, `--set depths=[2,2,6,2]`.
  An integer is accepted where a number is expected; `16.0` is not an integer.
- `NaN`, `inf` and values beyond the upper bounds below are always rejected.
- `max_images` (a cap per split): `--set max_images=train:16,val:6,test:6` (any subset of the
  splits; a split not named is not capped), or `--set max_images=none` for no cap.
- `split_fractions` (patients per split): `--set split_fractions=0.7,0.1,0.2`, three
  fractions, each strictly between 0 and 1, summing to 1.
- `steps_per_epoch=none` means one pass over the training split.
- Paths (`pretrained`, `encoder_weights_path`) must name an existing file; `''` or `none`
  means none.

Mistakes in the command itself (an unknown option, a missing one, a word where a number is
expected, a number outside the option's range such as `--seed -1`) are also one line with exit
code 2, naming the command and the option; `bench COMMAND --help` shows each numeric option's
range (e.g. `[0<=x<=2147483647]` for `--seed`).

Damaged inputs are reported the same way, naming the file: a truncated `run.json` or
`status.json`, a `per_case.parquet` that is not a calcbench results table, a half-written
checkpoint (delete it and rerun the same command), or a `folder` manifest without a required
column. Bad rows of a `folder` manifest (unparsable or non-positive `spacing_mm`, a path outside
the dataset root, a missing file, an empty `patient_id`, a second row for the same image id) are
listed as problems by `bench data add` and `bench data verify` (which then exits with code 1),
and those rows are left out.

The tables below are generated from the code (`python -m benchmark.options_doc`); `bench list
methods --hparams` prints the same hparam ranges.
"""


def _cell(value: Any) -> str:
    """A table cell: the value as typed after --set, with pipes escaped."""
    return f"`{show_value(value)}`".replace("|", "\\|")


def profile_table() -> list[str]:
    """Markdown rows: each profile field, its value in each profile and its valid values."""
    names = list(PROFILES)
    lines = ["## Profile fields", "",
             "| key | " + " | ".join(names) + " | valid values |",
             "|---|" + "---|" * len(names) + "---|"]
    for key, valid in PROFILE_VALID.items():
        cells = [_cell(getattr(PROFILES[n], key)) for n in names]
        lines.append(f"| `{key}` | " + " | ".join(cells) + f" | {valid.describe()} |")
    return lines


def hparam_rows(cls: type) -> list[tuple[str, Any, str, str]]:
    """(name, quick default, valid values, help) of each hparam of a method class."""
    return [(hp.name, hp.default_for("quick"), hp.spec().describe(), hp.help)
            for hp in cls.hparam_space()]


def method_tables() -> list[str]:
    """One markdown table of hyper-parameters per registered method."""
    from benchmark.registry import METHODS

    lines = ["## Method hyper-parameters", "",
             "Defaults are those of the `quick` profile (some differ at `smoke` / `paper`)."]
    for name, info in sorted(METHODS.all().items()):
        lines += ["", f"### `{name}` ({info.display_name})", "",
                  "| key | quick default | valid values | meaning |", "|---|---|---|---|"]
        for key, default, valid, text in hparam_rows(info.cls):
            lines.append(f"| `{key}` | {_cell(default)} | {valid} | "
                         f"{text.replace('|', '/')} |")
    return lines


def options_markdown() -> str:
    """The whole page."""
    return "\n".join([INTRO, *profile_table(), "", *method_tables(), ""])


if __name__ == "__main__":
    print(options_markdown(), end="")
