"""calcbench domains: synthetic generator, real-data adapters, splits and caches.

`CALCBENCH_DATASETS` marks this package as calcbench's own, so the harness can tell it apart
from HuggingFace's `datasets` when both are installed in one environment.
"""

CALCBENCH_DATASETS = True
