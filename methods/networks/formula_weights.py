"""Formula-pretrained weights (`pretrained=formula`): naming, finding, reading and loading them.

`bench pretrain` (benchmark/pretrain.py) trains a method's plain network on the formula pretext
(benchmark/formula.py) and writes `<cache>/pretrained/<arch key>.pt` beside a `.json` manifest.
The arch key hashes what fixes the weights' layout: the network class, the image size and every
state-dict key with its shape; so Swin-Unet, MLN-net and the Table 3 Swin variants of one
profile share one file (MLN-net multiplies its LayerNorms after loading, so every branch starts
from the pretrained norm). Weights are looked up in the cache first, then among the files the
repository ships (methods/pretrained/), so a user's own longer pretraining takes precedence.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.errors import UserError
from benchmark.paths import default_cache_dir

FORMULA = "formula"
FILE_FORMAT = "calcbench-formula-weights/1"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "pretrained"

#: The cache folder of the command in progress (bench run --cache-dir); default: the env's.
_cache_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar("formula_cache",
                                                                        default=None)


@contextlib.contextmanager
def using_cache(cache_dir: Path | None) -> Iterator[None]:
    """Look formula weights up under `cache_dir` (not the default cache) inside the block."""
    token = _cache_dir.set(cache_dir)
    try:
        yield
    finally:
        _cache_dir.reset(token)


def cache_weights_dir(cache_dir: Path | None = None) -> Path:
    """`<cache>/pretrained`, where `bench pretrain` writes and `pretrained=formula` looks first."""
    return (cache_dir or _cache_dir.get() or default_cache_dir()) / "pretrained"


def arch_key(net: nn.Module, image_size: int) -> str:
    """16 hex digits naming the layout of `net`'s weights at `image_size` (see module doc)."""
    layout = {"class": f"{type(net).__module__}.{type(net).__qualname__}",
              "image_size": int(image_size),
              "tensors": [[k, list(v.shape)] for k, v in net.state_dict().items()]}
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    """The file's SHA-256 (hex); computed once per (path, size, mtime) in a process, since a
    run asks for it twice (its id and its `init` text)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _config_arch_key(cls: type, hparams_json: str, image_size: int) -> str:
    net = cls.formula_network(json.loads(hparams_json), image_size)  # type: ignore[attr-defined]
    return arch_key(net, image_size)


def weights_for_config(cls: type, hparams: dict[str, Any], image_size: int,
                       rebuild: str) -> Path:
    """`weights_for` from a method class and its hparams, before any network is built for the
    run: the throw-away network that names the layout is built once per configuration."""
    key = _config_arch_key(cls, json.dumps(hparams, sort_keys=True, default=str), image_size)
    found = find_weights(key)
    if found is None:
        raise _missing(key, rebuild)
    return found


def find_weights(key: str) -> Path | None:
    """The weights file for `key`: the cache's, else the shipped one, else None."""
    for folder in (cache_weights_dir(), SHIPPED_DIR):
        path = folder / f"{key}.pt"
        if path.is_file():
            return path
    return None


def read_manifest(weights: Path) -> dict[str, Any]:
    """The `.json` manifest beside a weights file ({} when there is none or it is unreadable)."""
    try:
        return json.loads(weights.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def read_weights(path: Path, rebuild: str) -> dict[str, Any]:
    """The payload of a formula weights file; UserError naming it and `rebuild` if unusable."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"formula weights '{path}': no such file; rebuild them with "
                        f"`{rebuild}`") from None
    except Exception as err:  # zip, pickle and truncation errors all mean "damaged"
        raise UserError(f"formula weights '{path}' are damaged ({type(err).__name__}); delete "
                        f"the file and rebuild it with `{rebuild}`") from None
    if not (isinstance(payload, dict) and payload.get("format") == FILE_FORMAT
            and isinstance(payload.get("state_dict"), dict)):
        raise UserError(f"formula weights '{path}' are not a calcbench formula weights file; "
                        f"rebuild them with `{rebuild}`")
    return payload


def is_formula_file(path: str | Path) -> bool:
    """Whether `path` is a formula weights file (as opposed to an ImageNet checkpoint)."""
    try:
        payload = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(payload, dict) and payload.get("format") == FILE_FORMAT


def weights_for(net: nn.Module, image_size: int, rebuild: str) -> Path:
    """The formula weights file for `net`, or a UserError naming where it looked and the command
    that builds it."""
    key = arch_key(net, image_size)
    found = find_weights(key)
    if found is None:
        raise _missing(key, rebuild)
    return found


def _missing(key: str, rebuild: str) -> UserError:
    """The one-line error for formula weights that are neither in the cache nor shipped."""
    return UserError(f"pretrained=formula: no formula weights for this network (arch {key}: "
                     f"neither {cache_weights_dir() / (key + '.pt')} nor the shipped "
                     f"{SHIPPED_DIR / (key + '.pt')}); build them with `{rebuild}`, or train "
                     "from scratch with --set pretrained=none")


def load_formula(net: nn.Module, path: Path, image_size: int, rebuild: str) -> str:
    """Copy the weights in `path` into `net` (every tensor, strictly); run.json's init text."""
    payload = read_weights(path, rebuild)
    key = arch_key(net, image_size)
    if payload.get("arch_key") != key:
        raise UserError(f"formula weights '{path}' were made for another network (arch "
                        f"{payload.get('arch_key')}, this one is {key}); rebuild them with "
                        f"`{rebuild}`")
    own = net.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in payload["state_dict"].items() if k in own}
    missing = sorted(set(own) - set(state))
    if missing:
        raise UserError(f"formula weights '{path}' lack {len(missing)} tensors of this network "
                        f"(first: {missing[0]}); rebuild them with `{rebuild}`")
    net.load_state_dict(state, strict=True)
    return (f"formula ({key}, {payload.get('steps', '?')} steps, sha256 "
            f"{sha256_file(path)[:12]})")


def weights_identity(cls: type, hparams: dict[str, Any], image_size: int, rebuild: str) -> str:
    """The SHA-256 of the file `pretrained=formula` would load for this configuration: part
    of a run's id, so a run with other weights is another run."""
    return sha256_file(weights_for_config(cls, hparams, image_size, rebuild))


def rebuild_command(method: str, image_size: int) -> str:
    """The `bench pretrain` command that builds `method`'s formula weights at `image_size`."""
    from benchmark.config import PROFILES

    profile = next((p.name for p in PROFILES.values() if p.image_size == image_size),
                   f"quick --set image_size={image_size}")
    return f"bench pretrain --method {method} --profile {profile}"


def init_formula(net: nn.Module, pretrained: str, image_size: int, method: str) -> str:
    """Load formula weights into `net`: `pretrained` is 'formula' (cache, then shipped) or the
    path of a formula weights file. Returns run.json's `init` text."""
    rebuild = rebuild_command(method, image_size)
    if pretrained.strip().lower() == FORMULA:
        return load_formula(net, weights_for(net, image_size, rebuild), image_size, rebuild)
    path = Path(pretrained).expanduser()
    return load_formula(net, path, image_size, rebuild).replace("formula (", f"file {path.name} (",
                                                                1)
