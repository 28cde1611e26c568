"""ImageNet initialisation through timm's own pretrained loading (Hugging Face cache, offline).

`pretrained=imagenet` on Swin-Unet (and every method built on it), Resnet and Dofe asks timm for
the matching ImageNet model with `pretrained=True`: timm resolves the weights from the Hugging
Face hub cache (`HF_HOME` / `HF_HUB_CACHE`; `HF_HUB_OFFLINE=1` never touches the network),
applies its own checkpoint filter (official Microsoft Swin layout -> timm layout) and its
input-channel adaptation. `file=` is timm's `pretrained_cfg_overlay=dict(file=...)`: the same
path with the weights read from a local file (the offline tests use it). Why not hand-written
downloads: timm already knows each model's hub id, file name and key layout.

Values of the `pretrained` hparam, shared by those methods: '' or 'none' (from scratch),
'imagenet' (timm, as above), 'formula' (data-free weights of `bench pretrain`, where the method
takes them: methods/networks/formula_weights.py) or a path to a local checkpoint file.
"""

from __future__ import annotations

import os
from typing import Any

import timm
from torch import nn

from benchmark.config import HParam
from benchmark.errors import UserError
from benchmark.valid import Valid

SCRATCH = ("", "none")
IMAGENET = "imagenet"
FORMULA = "formula"


def pretrained_hparam(imagenet_source: str, file_kind: str = "a local checkpoint path",
                      formula: bool = False) -> HParam:
    """The `pretrained` hparam of a method whose reference code starts from ImageNet: ImageNet
    at the paper profile, as its authors trained. At smoke and quick (offline, CPU) it is
    `formula` where the method takes formula-pretrained weights (bench pretrain), else none."""
    offline = FORMULA if formula else "none"
    words = (*SCRATCH, IMAGENET, FORMULA) if formula else (*SCRATCH, IMAGENET)
    formula_text = (" | formula (bench pretrain's data-free weights: the cache's, else the "
                    "shipped ones)") if formula else ""
    return HParam("pretrained", {"smoke": offline, "quick": offline, "paper": IMAGENET}, None,
                  f"initialisation: none (from scratch) | imagenet ({imagenet_source}, from "
                  f"the Hugging Face cache){formula_text} | {file_kind}",
                  valid=Valid.choice_or_path(*words))


def init_kind(value: object) -> str:
    """'scratch', 'imagenet', 'formula' or 'file' for a `pretrained` hparam value (UserError if
    not a str)."""
    if value is None or value is False:
        return "scratch"
    if not isinstance(value, str):
        raise UserError(f"pretrained: expected 'none', 'imagenet', 'formula' or a file path, "
                        f"got {value!r}")
    text = value.strip()
    if text.lower() in SCRATCH:
        return "scratch"
    if text.lower() in (IMAGENET, FORMULA):
        return text.lower()
    return "file"


def hf_cache_dir() -> str:
    """Where huggingface_hub (and so timm) looks for downloaded weights on this machine."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_id(arch: str) -> str:
    """The Hugging Face repository timm downloads `arch`'s weights from ('' if it has none)."""
    cfg = timm.models.get_pretrained_cfg(arch)
    return (cfg.hf_hub_id or "") if cfg is not None else ""


def _missing_weights_error(arch: str, err: Exception) -> UserError:
    """The one-line error for weights that are neither cached nor downloadable here."""
    repo = hub_id(arch) or f"timm/{arch}"
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "") not in (
        "", "0", "false", "False") else ""
    return UserError(
        f"pretrained=imagenet: timm's ImageNet weights for '{arch}' are not in the Hugging Face "
        f"cache {hf_cache_dir()} and cannot be downloaded{offline} ({type(err).__name__}); on "
        f"a connected machine run `hf download {repo}` (older huggingface_hub: "
        f"`huggingface-cli download {repo}`) and copy its cache folder "
        f"(~/.cache/huggingface/hub, or $HF_HOME/hub) to {hf_cache_dir()} here, or pass a "
        "local file with --set pretrained=/path/to/weights.pth, or train from scratch with "
        "--set pretrained=none")


def _check_published(arch: str) -> None:
    """UserError for an architecture timm has no ImageNet weights for (timm would warn and
    silently initialise at random)."""
    if not hub_id(arch):
        cfg = timm.models.get_pretrained_cfg(arch)
        if cfg is None or not (cfg.url or cfg.file):
            raise UserError(f"pretrained=imagenet: timm publishes no ImageNet weights for "
                            f"'{arch}'; use --set pretrained=none or another model size")


def check_imagenet_available(arch: str) -> None:
    """Fail before any data is prepared when `arch`'s weights cannot be had: none published,
    or offline (HF_HUB_OFFLINE) with no cached copy. Online, timm downloads them later."""
    from huggingface_hub import constants, try_to_load_from_cache

    _check_published(arch)
    if not constants.HF_HUB_OFFLINE or not hub_id(arch):
        return
    for name in ("model.safetensors", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(hub_id(arch), name), str):
            return
    raise _missing_weights_error(arch, FileNotFoundError("not in the cache"))


def create_pretrained(arch: str, file: str | None = None, **kwargs: Any) -> nn.Module:
    """`timm.create_model(arch, pretrained=True, ...)` with ImageNet weights, or a UserError.

    `file`: a local checkpoint read by timm (`pretrained_cfg_overlay=dict(file=file)`) instead
    of the hub. An architecture without published weights is an error rather than timm's
    warning-and-random-init.
    """
    if file is None:
        _check_published(arch)
    overlay = {"file": str(file)} if file is not None else None
    try:
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (OSError, ConnectionError, TimeoutError) as err:
        if file is not None:
            raise UserError(f"pretrained weights '{file}': cannot be read by timm for '{arch}' "
                            f"({type(err).__name__})") from err
        raise _missing_weights_error(arch, err) from err
    except Exception as err:  # huggingface_hub's HTTP errors share no base class with OSError
        if type(err).__module__.startswith(("huggingface_hub", "requests", "httpx", "urllib3")):
            raise _missing_weights_error(arch, err) from err
        if file is not None and isinstance(err, RuntimeError | KeyError | ValueError):
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise UserError(f"pretrained weights '{file}': do not fit timm's '{arch}' "
                            f"({type(err).__name__}: {first})") from err
        raise
