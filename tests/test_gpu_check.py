"""The GPU check's CPU dry run, its step planning, and the CUDA fast path's CPU behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.accel import accelerate, is_cnn, set_fused_adam
from benchmark.config import resolve_hparams
from benchmark.perf.gpu_check import plan_steps
from methods.networks.swin_unet import SwinUnet
from methods.networks.unet import UNet
from methods.unet import UnetMethod

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_dry_run_passes_and_prints_one_table(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PY": sys.executable}
    proc = subprocess.run([str(ROOT / "scripts/gpu-check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("GPU check on cpu (dry run)") == 1
    summary = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert [r["method"] for r in summary["perf"]] == ["unet", "swinunet", "mlnnet", "sadn"]
    assert all(r["train_img_s"] > 0 and r["eval_img_s"] > 0 and r["peak_mib"] > 0
               for r in summary["perf"])
    runs = {t["method"]: t for t in summary["trainings"]}
    assert set(runs) == {"swinunet", "mlnnet"}
    for t in runs.values():  # one validation DSC per epoch, from scratch
        assert len(t["val_dsc"]) == t["epochs"] == 2 and t["init"] == "scratch"
        assert all(0.0 <= v <= 1.0 for v in t["val_dsc"])


def test_plan_steps_fits_the_budget() -> None:
    # 40 images/s at batch 4 is 10 steps/s; 65 % of 100 s over 4 epochs -> 162 steps an epoch
    assert plan_steps(40.0, 4, 100.0, 4) == 162
    assert plan_steps(0.0, 4, 100.0, 4) == 1  # a failed measurement still trains a step
    assert plan_steps(0.1, 4, 1.0, 4) == 1


def test_cnn_detection_leaves_swin_alone() -> None:
    assert is_cnn(UNet(1, 1, 4))
    assert not is_cnn(SwinUnet(img_size=32, embed_dim=12, window_size=2))
    assert not is_cnn(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 1, 1)))


def test_fast_path_changes_nothing_on_cpu() -> None:
    hp = resolve_hparams(UnetMethod.hparam_space(), "smoke")
    torch.manual_seed(0)
    method = UnetMethod(hp, torch.device("cpu"), 32)
    before = {k: v.clone() for k, v in method.network.state_dict().items()}
    groups = [dict(g) for g in method.optimizer.param_groups]
    applied = accelerate(method, torch.device("cpu"))
    assert applied == {"compile": False}
    assert [dict(g) for g in method.optimizer.param_groups] == groups
    assert all(torch.equal(before[k], v) for k, v in method.network.state_dict().items())
    assert all(p.is_contiguous() for p in method.network.parameters())


def test_a_fused_checkpoint_resumes_unfused_on_cpu() -> None:
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 3))
    opt = torch.optim.Adam([w], lr=0.1, fused=True)  # as a CUDA run's checkpoint records it
    w.grad = torch.ones_like(w)
    opt.step()
    state = opt.state_dict()
    torch.manual_seed(0)
    w2 = nn.Parameter(torch.randn(3, 3))
    opt2 = torch.optim.Adam([w2], lr=0.1)
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["fused"] is True
    assert not set_fused_adam(opt2, torch.device("cpu"))
    assert opt2.param_groups[0]["fused"] is None
    w2.grad = torch.ones_like(w2)
    opt2.step()  # runs on the unfused path
    assert opt2.state[w2]["step"].device.type == "cpu"
