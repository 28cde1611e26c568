"""Domain-specific (dual) BatchNorm of SADN (`model/dsbn.py`): K BatchNorm2d branches, shared convs.

`MultiBatchNorm2d` plugs into the `multinorm.branch(ids)` routing of the multi-branch norms.
Besides training (batch statistics, running statistics updated) and eval (stored running
statistics) it has a third, test-time mode, `batch_statistics(model)`: every layer normalises
with the current batch's own statistics per branch, as SADN's test-time BN does, records them,
and never writes the stored running statistics (so predicting cannot alter the trained model,
the pitfall of SADN issue #4).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from methods.networks.multinorm import MultiNorm, multinorms

#: per-layer batch statistics (branch -> (mean, unbiased var)) while the context is active
BranchStats = dict[int, tuple[torch.Tensor, torch.Tensor]]

_BATCH_STATS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "calcbench_bn_batch_statistics", default=False)


class MultiBatchNorm2d(MultiNorm):
    """K `nn.BatchNorm2d` (eps 1e-5, momentum 0.1, affine, tracked statistics), one per branch.

    Routing: an int branch id sends the whole batch through that branch (SADN's
    `bns[domain_label[0]]`, batches are domain-homogeneous). A (B,) id tensor is accepted in
    eval mode and in `batch_statistics` mode, where the samples of each id form their own
    batch, so all K branches of B images can be one forward of K*B images. In training mode a
    mixed id tensor is an error: the branches would have to share one batch's statistics and
    running-statistics update, which SADN never does; an all-equal tensor is treated as an int.

    The base class's per-sample statistics recording (MLN-net's Q_d) is off by default
    (`record_samples=False`): SADN's reference statistics are BN's own running_mean and
    running_var, so recording would only cost time. `capture()` still works.
    """

    channel_dim = 1

    def __init__(self, num_features: int, num_branches: int, eps: float = 1e-5,
                 momentum: float = 0.1, record_samples: bool = False) -> None:
        super().__init__(num_features, num_branches)
        self.record_samples = record_samples
        self.bns = nn.ModuleList([nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
                                  for _ in range(num_branches)])
        self.last_batch_stats: BranchStats = {}

    def _observe(self, x: torch.Tensor, ids: int | torch.Tensor) -> None:
        if self.record_samples:
            super()._observe(x, ids)
        elif self._capturing:
            self._captured = self.sample_stats(x)

    def running_stats(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Branch k's stored running mean and running variance (copies), two (C,) tensors."""
        bn = self.bns[k]
        assert bn.running_mean is not None and bn.running_var is not None
        return bn.running_mean.detach().clone(), bn.running_var.detach().clone()

    def normalise(self, x: torch.Tensor, ids: int | torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"MultiBatchNorm2d expects (B,C,H,W) input, got {tuple(x.shape)}")
        if isinstance(ids, torch.Tensor):
            ids = ids.to(x.device).long()
            first = int(ids[0]) if ids.numel() else 0
            if bool((ids == first).all()):
                ids = first
            elif self.training and not _BATCH_STATS.get():
                raise ValueError("MultiBatchNorm2d in training mode needs one branch per batch "
                                 "(domain-homogeneous batches); got mixed per-sample ids")
        if isinstance(ids, int):
            if not 0 <= ids < self.num_branches:
                raise ValueError(f"branch {ids} out of range for {self.num_branches} branches")
            return self._one_branch(x, ids)
        if bool((ids[1:] >= ids[:-1]).all()):  # K stacked blocks of one branch each: no scatter
            keys, counts = torch.unique_consecutive(ids, return_counts=True)
            return torch.cat([self._one_branch(part, int(k)) for part, k
                              in zip(x.split(counts.tolist()), keys.tolist(), strict=True)])
        y = torch.empty_like(x)
        for k in torch.unique(ids).tolist():
            sel = ids == k
            y[sel] = self._one_branch(x[sel], int(k))
        return y

    def _one_branch(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Branch k on a batch: train / eval BN, or batch statistics recorded, buffers untouched."""
        if not _BATCH_STATS.get():
            return self.bns[k](x)
        bn = self.bns[k]
        xf = x.detach().float()
        n = xf.numel() // xf.shape[1]
        mean = xf.mean(dim=(0, 2, 3))
        # what a momentum-1 BN would store: the unbiased variance (SADN's 2022-03 form)
        var = xf.var(dim=(0, 2, 3), correction=1 if n > 1 else 0)
        self.last_batch_stats[k] = (mean, var)
        return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)


def dual_bns(model: nn.Module) -> list[MultiBatchNorm2d]:
    """The model's dual-BN layers in module order (the l of SADN's distance sum)."""
    return [m for _, m in multinorms(model) if isinstance(m, MultiBatchNorm2d)]


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[list[BranchStats]]:
    """Inside the block every dual BN uses the batch's own statistics per branch without
    touching its running statistics; at exit the list holds, per layer in module order,
    {branch: (batch mean, unbiased batch variance)} of the block's last forward."""
    layers = dual_bns(model)
    for m in layers:
        m.last_batch_stats = {}
    token = _BATCH_STATS.set(True)
    out: list[BranchStats] = []
    try:
        yield out
    finally:
        _BATCH_STATS.reset(token)
        out.extend(dict(m.last_batch_stats) for m in layers)
        for m in layers:
            m.last_batch_stats = {}
