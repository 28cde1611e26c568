"""calcbench: benchmark harness for single-source domain generalization in mammography
microcalcification segmentation (MLN-net and its baselines behind one plugin interface)."""

from __future__ import annotations

from benchmark.numerics import apply_portable_env

apply_portable_env()  # before anything imports numpy or torch: CALCBENCH_PORTABLE=1 pins kernels

__all__ = ["check_datasets_package"]


def check_datasets_package() -> str | None:
    """A one-line problem if `import datasets` finds another package (e.g. HuggingFace's)."""
    import datasets

    if getattr(datasets, "CALCBENCH_DATASETS", False):
        return None
    where = getattr(datasets, "__file__", "?")
    return (f"the top-level package 'datasets' resolves to {where}, not calcbench's (is "
            "HuggingFace 'datasets' installed here?); install calcbench in its own virtual "
            "environment")
