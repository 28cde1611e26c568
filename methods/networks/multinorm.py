"""Multi-branch normalisation (MLN-net 3.2.2, SADN's dual BN): K affine sets, shared weights.

The active branch is set by a context (`branch(ids)`), not threaded through timm's blocks: an
int routes the whole batch (training on domain-homogeneous batches), a (B,) tensor routes each
sample, so all K branches of B images are ONE forward of K*B images. Each layer records the
per-channel mean and std of its input per branch during training (`end_epoch` finalises the
epoch's average, kept as buffers, so checkpoints carry them) and can capture per-sample
statistics for test-time branch selection (`capture()`).
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVE: contextvars.ContextVar[int | torch.Tensor | None] = contextvars.ContextVar(
    "calcbench_norm_branch", default=None)


@contextlib.contextmanager
def branch(ids: int | torch.Tensor) -> Iterator[None]:
    """Route every MultiNorm inside the block: an int for the batch, or per-sample ids (B,)."""
    token = _ACTIVE.set(ids)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _active_branch() -> int | torch.Tensor:
    ids = _ACTIVE.get()
    if ids is None:
        raise RuntimeError("a multi-branch norm ran outside `with branch(...)`: "
                           "the caller must choose the branch")
    return ids


class MultiNorm(nn.Module, abc.ABC):
    """Base of the multi-branch norms: routing, statistics recording and capture.

    Statistics are per sample (mean and std of each channel over the spatial/token positions
    of one image), then averaged over the images of the recording period, so that a test
    image's statistics (one image) are directly comparable with the stored ones.
    """

    channel_dim: int = -1

    def __init__(self, num_features: int, num_branches: int, record: str = "epoch") -> None:
        super().__init__()
        if num_branches < 1:
            raise ValueError("num_branches must be >= 1")
        if record not in ("epoch", "last-batch"):
            raise ValueError(f"record must be 'epoch' or 'last-batch', not '{record}'")
        self.num_features, self.num_branches, self.record = num_features, num_branches, record
        # the statistics of the last completed recording period (saved in checkpoints)
        self.register_buffer("stat_mean", torch.zeros(num_branches, num_features))
        self.register_buffer("stat_std", torch.ones(num_branches, num_features))
        self.register_buffer("stat_count", torch.zeros(num_branches))
        # running sums of the period in progress (also saved, so a resumed epoch is exact)
        self.register_buffer("acc_mean", torch.zeros(num_branches, num_features))
        self.register_buffer("acc_std", torch.zeros(num_branches, num_features))
        self.register_buffer("acc_count", torch.zeros(num_branches))
        self._captured: tuple[torch.Tensor, torch.Tensor] | None = None
        self._capturing = False

    # --- statistics ---------------------------------------------------------------------
    def sample_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample, per-channel mean and std of an input: two (B, C) tensors."""
        xf = x.detach().float().movedim(self.channel_dim, -1).reshape(x.shape[0], -1,
                                                                     self.num_features)
        return xf.mean(1), xf.std(1, unbiased=False)

    def _observe(self, x: torch.Tensor, ids: int | torch.Tensor) -> None:
        if not (self.training or self._capturing):
            return
        mean, std = self.sample_stats(x)
        if self._capturing:
            self._captured = (mean, std)
        if not self.training:
            return
        per = (torch.full((x.shape[0],), ids, device=x.device) if isinstance(ids, int)
               else ids.to(x.device))
        onehot = F.one_hot(per.long(), self.num_branches).to(mean.dtype)  # (B, K)
        if self.record == "last-batch":
            seen = onehot.sum(0) > 0
            self.acc_mean[seen] = 0
            self.acc_std[seen] = 0
            self.acc_count[seen] = 0
        self.acc_mean += onehot.T @ mean
        self.acc_std += onehot.T @ std
        self.acc_count += onehot.sum(0)

    @torch.no_grad()
    def finalise_period(self) -> None:
        """Store the averages of the period that just ended and start a new one."""
        seen = self.acc_count > 0
        n = self.acc_count[seen].unsqueeze(1)
        self.stat_mean[seen] = self.acc_mean[seen] / n
        self.stat_std[seen] = self.acc_std[seen] / n
        self.stat_count[seen] = self.acc_count[seen]
        self.acc_mean.zero_()
        self.acc_std.zero_()
        self.acc_count.zero_()

    def reference_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored (K, C) mean and std per branch: the last completed period's, or, for a
        branch with none yet (a model stopped mid-epoch), the period in progress; an untrained
        branch keeps its initial mean 0 / std 1."""
        mean, std = self.stat_mean.clone(), self.stat_std.clone()
        fresh = (self.stat_count == 0) & (self.acc_count > 0)
        n = self.acc_count[fresh].unsqueeze(1)
        mean[fresh] = self.acc_mean[fresh] / n
        std[fresh] = self.acc_std[fresh] / n
        return mean, std

    # --- forward ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = _active_branch()
        if isinstance(ids, torch.Tensor) and ids.shape[0] != x.shape[0]:
            raise ValueError(f"{ids.shape[0]} branch ids for a batch of {x.shape[0]}")
        self._observe(x, ids)
        return self.normalise(x, ids)

    @abc.abstractmethod
    def normalise(self, x: torch.Tensor, ids: int | torch.Tensor) -> torch.Tensor:
        """Normalise `x` with the branch (or per-sample branches) `ids`."""


class MultiLayerNorm(MultiNorm):
    """K LayerNorms over the last dim (Swin tokens (B,L,C) or (B,H,W,C)); Eq. 13.

    One normalisation is shared by all branches (LN has no running statistics, so the branches
    differ only in gamma/beta); per-sample ids gather each sample's gamma/beta.
    `channels_first=True` takes (B,C,H,W), the layout of a CNN given "multiple LN layers"
    (Unet-R/E/*), normalised either over C,H,W of each sample (`over="sample"`: Ba et al.'s
    LayerNorm of a conv layer, i.e. GroupNorm with one group, with a gamma/beta per channel)
    or over C at every pixel (`over="channel"`: ConvNeXt's LayerNorm2d).
    """

    def __init__(self, num_features: int, num_branches: int, eps: float = 1e-5,
                 channels_first: bool = False, record: str = "epoch",
                 over: str = "channel") -> None:
        super().__init__(num_features, num_branches, record)
        if over not in ("channel", "sample"):
            raise ValueError(f"over must be 'channel' or 'sample', not '{over}'")
        if over == "sample" and not channels_first:
            raise ValueError("over='sample' needs channels_first=True (B,C,H,W) input")
        self.channel_dim = 1 if channels_first else -1
        self.over = over
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_branches, num_features))
        self.bias = nn.Parameter(torch.zeros(num_branches, num_features))

    @classmethod
    def from_layernorm(cls, ln: nn.LayerNorm, num_branches: int,
                       record: str = "epoch") -> MultiLayerNorm:
        """A K-branch copy of `ln`, its gamma/beta copied into every branch."""
        if len(ln.normalized_shape) != 1:
            raise ValueError("only LayerNorms over the last dimension can be multiplied")
        out = cls(ln.normalized_shape[0], num_branches, ln.eps, record=record)
        with torch.no_grad():
            if ln.weight is not None:
                out.weight.copy_(ln.weight.detach().expand_as(out.weight))
            if ln.bias is not None:
                out.bias.copy_(ln.bias.detach().expand_as(out.bias))
        return out.to(device=ln.weight.device if ln.weight is not None else None)

    def normalise(self, x: torch.Tensor, ids: int | torch.Tensor) -> torch.Tensor:
        if self.over == "sample":
            y = F.group_norm(x, 1, None, None, self.eps)
            # an int id gives (C,) affines, per-sample ids (B, C): both broadcast as (B|1,C,1,1)
            shape = (-1, self.num_features) + (1,) * (x.dim() - 2)
            return y * self.weight[ids].view(shape) + self.bias[ids].view(shape)
        xl = x.movedim(1, -1) if self.channel_dim == 1 else x
        if isinstance(ids, int):
            y = F.layer_norm(xl, (self.num_features,), self.weight[ids], self.bias[ids],
                             self.eps)
        else:
            y = F.layer_norm(xl, (self.num_features,), None, None, self.eps)
            shape = (x.shape[0],) + (1,) * (xl.dim() - 2) + (self.num_features,)
            y = y * self.weight[ids].view(shape) + self.bias[ids].view(shape)
        return y.movedim(-1, 1) if self.channel_dim == 1 else y


def convert_layernorms(model: nn.Module, num_branches: int, only: set[str] | None = None,
                       record: str = "epoch") -> list[str]:
    """Replace the model's nn.LayerNorms (all, or the qualified names in `only`) in place by
    MultiLayerNorms; returns the replaced names. Works on timm blocks: they hold norms as
    attributes, so swapping the attribute is enough."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)
             and (only is None or n in only)]
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, MultiLayerNorm.from_layernorm(getattr(parent, attr),
                                                            num_branches, record))
    return names


def multinorms(model: nn.Module) -> list[tuple[str, MultiNorm]]:
    """The model's multi-branch norms in module order (the l of Eqs. 16-17)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MultiNorm)]


def end_recording_period(model: nn.Module) -> None:
    """Finalise the recorded statistics of every multi-norm (call at the end of an epoch)."""
    for _, m in multinorms(model):
        m.finalise_period()


@contextlib.contextmanager
def capture(model: nn.Module) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Collect per-sample (mean, std) of every multi-norm's input during the block's forward;
    the list is filled, in module order, when the block exits."""
    layers = [m for _, m in multinorms(model)]
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for m in layers:
        m._capturing, m._captured = True, None
    try:
        yield out
    finally:
        for m in layers:
            m._capturing = False
        out.extend(m._captured for m in layers if m._captured is not None)
        for m in layers:
            m._captured = None
