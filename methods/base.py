"""The Method contract every plugin implements (DomainBed-style `update` / `predict`).

The harness owns data loading, the epoch loop, budget, device/AMP, checkpoint files and
evaluation. A method owns its networks, optimizer(s), loss and which training views it needs:
`training_groups()` names domain-homogeneous groups (pseudo-domains) and `make_view()` builds a
group's view of a source batch; the harness calls `update()` with one batch per group.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.config import HParam, Profile
from benchmark.errors import UserError
from benchmark.valid import Valid

Batch = dict[str, torch.Tensor]  # "image": (B,1,H,W) float in [0,1], "mask": (B,1,H,W) {0,1}

#: Valid values shared by many methods' hparams (learning rate, weight decay, widths).
LR_RANGE = Valid.number(0.0, 1.0, low_open=True)
WEIGHT_DECAY_RANGE = Valid.number(0.0, 1.0)
CHANNELS_RANGE = Valid.integer(1, 1024)


def require_divisible(method: str, image_size: int, factor: int, why: str) -> None:
    """The usual network constraint: image_size a multiple of `factor` (UserError if not)."""
    if image_size % factor:
        raise UserError(f"{method}: image_size {image_size} must be divisible by {factor} "
                        f"({why})")


class Method(abc.ABC):
    """Base class of every benchmark method; subclasses are registered with @register_method."""

    name: ClassVar[str] = ""

    def __init__(self, hparams: dict[str, Any], device: torch.device, image_size: int,
                 amp: bool = False) -> None:
        self.hparams = dict(hparams)
        self.device = device
        self.image_size = image_size
        self.amp = amp and device.type == "cuda"

    #: Adjacent slices wanted as context: when > 0 the harness adds batch["slices"]
    #: (B, D, H, W), the D slices centred on each image (its real neighbours when the domain
    #: has volumes, the image itself replicated otherwise) and batch["slices_real"] (B,) bool.
    context_slices: ClassVar[int] = 0

    #: The registered method whose training this one reuses (None: it trains itself). Set it
    #: only on inference-time variants: the same network, training code and training hparams,
    #: differing in how `predict` combines the trained weights (e.g. Table 3's selection rules).
    #: The runner then trains (or finds) that method's run and evaluates its checkpoints here.
    shares_training_with: ClassVar[str | None] = None

    #: How the networks were initialised, recorded in run.json's `init` ("scratch", "imagenet
    #: (timm <model>)" or "file <name>"); methods with a `pretrained` hparam set it when built.
    init: str = "scratch"

    #: Hyper-parameters read only at inference (e.g. a branch-selection rule): overriding one
    #: with `--set` never changes the weights, so it never enters the run id of the method
    #: whose training a variant reuses (see `shares_training_with`).
    inference_hparams: ClassVar[frozenset[str]] = frozenset()

    #: True when the method's published recipe schedules its own learning rate (in `update`
    #: or `end_epoch`); the profile's `lr_schedule` then leaves its optimizers alone.
    own_lr_schedule: ClassVar[bool] = False

    # --- declaration ------------------------------------------------------------------------
    @classmethod
    def hparam_space(cls) -> list[HParam]:
        """Hyper-parameters with per-profile defaults and samplers (override and extend)."""
        return []

    @classmethod
    def formula_network(cls, hparams: dict[str, Any], image_size: int) -> nn.Module | None:
        """The plain network `bench pretrain` pretrains for this method (random init), or None
        when the method takes no formula weights. Methods that share one network layout (the
        Swin family) return the same network, so they share one weights file."""
        return None

    @classmethod  # noqa: B027 - optional hook
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """Raise UserError (one line naming the keys) when valid hparams and profile values
        do not fit together, e.g. an image size the network cannot pool. Called before any
        data, folder or network is created; override to add a method's own constraints."""

    def training_groups(self) -> list[str]:
        """Names of the domain-homogeneous batch groups `update` expects (default: one)."""
        return ["source"]

    def make_view(self, group: str, batch: Batch, gen: torch.Generator) -> Batch:
        """The `group` view of a source batch (e.g. a Bezier-augmented pseudo-domain).

        `gen` is the harness's (seed, epoch)-seeded CPU generator: draw any randomness from it
        so that a resumed run repeats exactly.
        """
        return batch

    # --- training and inference -------------------------------------------------------------
    @abc.abstractmethod
    def update(self, batches: dict[str, Batch]) -> dict[str, float]:
        """One optimisation step on one batch per group; returns losses as plain floats."""

    @abc.abstractmethod
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities (B,1,H,W) in [0,1] for images (B,1,H,W) in [0,1]."""

    def predict_batch(self, batch: Batch) -> torch.Tensor:
        """Probabilities for a harness batch; override to use extra keys such as "slices"."""
        return self.predict(batch["image"])

    def case_info(self) -> list[dict[str, Any]]:
        """Per-image extras of the last `predict` call (e.g. the chosen branch); default none."""
        return []

    def end_epoch(self, epoch: int) -> None:  # noqa: B027 - optional hook
        """Called by the harness after every training epoch (schedulers, statistics)."""

    # --- state ------------------------------------------------------------------------------
    @abc.abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The method's networks by name (for mode switching, state and parameter counts)."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The method's optimizers by name (saved in checkpoints for resuming)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to predict and to resume training (tensors and plain values)."""
        return {
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` output."""
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers().items():
            if k in state.get("optimizers", {}):
                o.load_state_dict(state["optimizers"][k])
        self.load_extra_state(state.get("extra", {}))

    def extra_state(self) -> dict[str, Any]:
        """Non-module state to checkpoint (override; e.g. recorded statistics)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore `extra_state()` output."""

    def train(self, mode: bool = True) -> None:
        """Put every network in training (or eval) mode."""
        for m in self.modules().values():
            m.train(mode)

    def num_parameters(self) -> int:
        """Trainable parameter count over all networks (for cost columns and tests)."""
        return sum(p.numel() for m in self.modules().values() for p in m.parameters()
                   if p.requires_grad)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision on CUDA when the harness enables AMP; a no-op on CPU."""
        if self.amp:
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


class SingleNetworkMethod(Method):
    """A method with one segmentation network, Adam, and a loss on logits: most baselines.

    Subclasses implement `build_network()` and `loss()`; optimiser settings follow the paper's
    section 4.1.3 (Adam, weight decay 1e-3) with the learning rate as an hparam.
    """

    def __init__(self, hparams: dict[str, Any], device: torch.device, image_size: int,
                 amp: bool = False) -> None:
        super().__init__(hparams, device, image_size, amp)
        self.network = self.build_network().to(device)
        self.optimizer = torch.optim.Adam(
            self.network.parameters(), lr=float(self.hparams["lr"]),
            weight_decay=float(self.hparams["weight_decay"]),
        )

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            HParam("lr", {"smoke": 1e-3, "quick": 1e-3, "paper": 1e-4},
                   lambda r: float(10 ** r.uniform(-4.5, -2.5)), "Adam learning rate",
                   LR_RANGE),
            HParam("weight_decay", 1e-3, lambda r: float(10 ** r.uniform(-5, -2)),
                   "Adam weight decay (paper 4.1.3: 0.001)", WEIGHT_DECAY_RANGE),
        ]

    @abc.abstractmethod
    def build_network(self) -> nn.Module:
        """The segmentation network: (B,1,H,W) -> logits (B,1,H,W)."""

    @abc.abstractmethod
    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms; the key 'loss' is optimised, the others are logged."""

    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.network}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def network_input(self, batch: Batch) -> torch.Tensor:
        """What the network sees in training: the image (CA-net: its slice stack)."""
        return batch["image"]

    def update(self, batches: dict[str, Batch]) -> dict[str, float]:
        self.network.train()
        logs: dict[str, float] = {}
        for group, batch in batches.items():
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                logits = self.network(self.network_input(batch))
            terms = self.loss(logits.float(), batch["mask"])
            terms["loss"].backward()
            self.optimizer.step()
            prefix = "" if len(batches) == 1 else f"{group}/"
            logs.update({prefix + k: float(v.detach()) for k, v in terms.items()})
        return logs

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.network.eval()
        with self.autocast():
            logits = self.network(images)
        return torch.sigmoid(logits.float())
