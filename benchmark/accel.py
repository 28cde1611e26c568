"""The fast CUDA training path: cudnn autotuning, fused Adam, channels_last CNNs, torch.compile.

Everything here except `--compile` acts only on CUDA, so CPU numbers never change; bf16
autocast stays where it is (`Method.autocast`). Why each one:

- `torch.backends.cudnn.benchmark`: every batch has the profile's fixed size, so the autotuned
  convolution algorithms are chosen once and reused.
- fused Adam (`fused=True`): one kernel per step for all parameters instead of a loop; set on
  the methods' existing optimizers (Adam/AdamW) so no method has to know about devices. A
  checkpoint's param groups carry the flag, so it is re-applied for the current device after a
  resume (a CUDA checkpoint resumed on CPU runs unfused).
- channels_last for CNNs: tensor-core convolutions want NHWC; a network counts as a CNN when
  it has at least `CNN_MIN_CONVS` spatial (kernel > 1) convolutions, which leaves the Swin
  backbones (one patch-embedding convolution) alone.
- `torch.compile` (opt-in, `bench run --compile`): `nn.Module.compile()` compiles each network
  in place, so state-dict keys and checkpoints stay those of the eager network.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

CNN_MIN_CONVS = 3


def is_cnn(module: nn.Module) -> bool:
    """True for a convolutional network (>= CNN_MIN_CONVS convolutions with a kernel > 1)."""
    spatial = [m for m in module.modules() if isinstance(m, nn.Conv2d)
               and max(m.kernel_size) > 1 and m.stride == (1, 1)]
    return len(spatial) >= CNN_MIN_CONVS


def set_fused_adam(optimizer: torch.optim.Optimizer, device: torch.device) -> bool:
    """Use the fused Adam/AdamW kernel on CUDA (and the unfused one elsewhere); True if fused.

    Existing `step` states are moved to the parameters' device as float32, which is where the
    fused kernel keeps them (the unfused one keeps them on the CPU).
    """
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return False
    params = [p for g in optimizer.param_groups for p in g["params"]]
    fused = device.type == "cuda" and all(
        p.is_cuda and p.is_floating_point() for p in params)
    if not fused and not any(g.get("fused") for g in optimizer.param_groups):
        return False  # already unfused: leave the CPU path exactly as it was
    for group in optimizer.param_groups:
        if group.get("differentiable"):
            return False
        group["fused"] = fused or None
        if fused:
            group["foreach"] = None
    for p in params:
        state = optimizer.state.get(p, {})
        step = state.get("step")
        if isinstance(step, torch.Tensor):
            state["step"] = (step.to(device=p.device, dtype=torch.float32) if fused
                             else step.detach().to("cpu", torch.float32))
    return fused


def accelerate(method: Any, device: torch.device, compile_model: bool = False) -> dict[str, Any]:
    """Apply the fast path to a built method (see module docstring); returns what was applied,
    for run.json. Call it again after loading a checkpoint (resume) to re-set fused Adam."""
    applied: dict[str, Any] = {"compile": bool(compile_model)}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        applied["cudnn_benchmark"] = True
        cnn = []
        for name, module in method.modules().items():
            if is_cnn(module):
                module.to(memory_format=torch.channels_last)
                cnn.append(name)
        applied["channels_last"] = cnn
        applied["fused_adam"] = [name for name, opt in method.optimizers().items()
                                 if set_fused_adam(opt, device)]
    if compile_model:
        for module in method.modules().values():
            module.compile()
    return applied
