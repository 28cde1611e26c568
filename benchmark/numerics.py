"""Which CPU code paths compute the numbers, and an opt-in setting that pins them.

numpy, OpenBLAS and torch each pick SIMD kernels for the CPU at import time, and kernels of
different widths round sums differently, so a seed's numbers differ between, say, an Intel and
an AMD machine. `CALCBENCH_PORTABLE=1` pins every library to its AVX2 kernels before they are
imported, so the same seed gives bit-identical numbers on any x86-64 CPU with AVX2 (with the
same `--threads` and package versions). It is opt-in because AVX2 kernels are slower than the
AVX-512 ones a newer CPU would pick.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

PORTABLE_FLAG = "CALCBENCH_PORTABLE"
# numpy's AVX-512 dispatch groups (>= 2.4 names, then older ones): none may be active when pinned
NUMPY_AVX512 = ("X86_V4", "AVX512_ICL", "AVX512_SPR", "AVX512F", "AVX512CD", "AVX512_KNL",
                "AVX512_KNM", "AVX512_SKX", "AVX512_CLX", "AVX512_CNL")
PORTABLE_ENV = {
    # numpy's ufunc loops: no AVX-512 dispatch (numpy ignores names it does not dispatch on)
    "NPY_DISABLE_CPU_FEATURES": " ".join(NUMPY_AVX512),
    # numpy's BLAS: OpenBLAS picks SkylakeX on Intel AVX-512 and Haswell on AMD Zen 4
    "OPENBLAS_CORETYPE": "Haswell",
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's vectorised element-wise and reduction kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's convolutions (oneDNN's JIT kernels)
}


def portable_requested() -> bool:
    """Whether the user set CALCBENCH_PORTABLE to a true value."""
    return os.environ.get(PORTABLE_FLAG, "").strip().lower() in {"1", "true", "yes", "on"}


def apply_portable_env() -> None:
    """Put PORTABLE_ENV into os.environ when asked for; must run before numpy or torch is
    imported (the `benchmark` package does it first thing). Values set by hand are kept."""
    if not portable_requested():
        return
    for key, value in PORTABLE_ENV.items():
        os.environ.setdefault(key, value)
    late = [name for name in ("numpy", "torch") if name in sys.modules]
    if late:  # e.g. calcbench imported from a notebook that loaded numpy first
        warnings.warn(f"{PORTABLE_FLAG}=1 came too late for {' and '.join(late)}, already "
                      "imported: set it in the environment before Python starts", stacklevel=2)


def describe() -> dict[str, Any]:
    """The CPU code paths in effect, for run.json: a result names the kernels behind it."""
    import numpy as np
    import torch

    out: dict[str, Any] = {"portable": portable_requested()}
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

        out["numpy_simd"] = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    except ImportError:  # a numpy without these private tables
        out["numpy_simd"] = None
    out["numpy_version"] = np.__version__
    out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    out["pinned_env"] = {k: os.environ[k] for k in PORTABLE_ENV if k in os.environ}
    # what is true, not what was asked: False when the pins came too late or were overridden
    out["avx2_kernels"] = (out["numpy_simd"] is not None
                           and not set(out["numpy_simd"]) & set(NUMPY_AVX512)
                           and out["torch_cpu_capability"] in {"AVX2", "DEFAULT"})
    return out
