"""Evaluation: predict every image of a split, threshold, per-case metrics in millimetres.

Besides the pixel metrics each row carries the lesion-level counts of `benchmark.lesions`, the
inference time per image (`infer_seconds`: its batch's wall time, CUDA-synchronised, divided by
the batch size) and the evaluation's peak memory (`peak_mem_mb`, `peak_mem_kind`: on CUDA
`torch.cuda.max_memory_allocated` during this evaluation; on CPU the process's peak RSS from
`resource.getrusage`, which includes training when it ran in the same process). FROC candidates
go to a separate list so the per-case table stays one row per image.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import pandas as pd
import torch

from benchmark.config import Profile
from benchmark.feed import batch_stream
from benchmark.lesions import empty_candidates, froc_candidates, lesion_metrics
from benchmark.metrics import case_metrics
from benchmark.progress import Reporter
from datasets.domain import DomainData
from methods.base import Method

META_COLUMNS = ("view", "laterality", "slice", "volume_id")


@torch.no_grad()
def evaluate(method: Method, data: DomainData, index: np.ndarray, profile: Profile,
             device: torch.device, reporter: Reporter, label: str,
             candidates_out: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """One row per image of `index`: ids, spacing, meta, every metric and method extras.

    When `candidates_out` is a list, the FROC candidates of all images are appended to it as
    one frame (see `benchmark.lesions.froc_candidates`).
    """
    method.train(False)
    rows = []
    candidates = []
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    with reporter.task(f"evaluate {label}", total=len(index)) as task:
        chunks = [index[s:s + profile.eval_batch_size]
                  for s in range(0, len(index), profile.eval_batch_size)]
        # streamed: only the current (and prefetched) batches of the split are in memory
        for chunk, batch in zip(chunks, batch_stream(data, chunks, device,
                                                     method.context_slices), strict=True):
            refs = batch["mask"][:, 0].cpu().numpy().astype(bool)
            t0 = time.perf_counter()
            out = method.predict_batch(batch)
            if cuda:
                torch.cuda.synchronize(device)
            seconds = (time.perf_counter() - t0) / len(chunk)
            probs = out.float().cpu().numpy()[:, 0]
            extras = method.case_info()
            for j, i in enumerate(chunk):
                pred = probs[j] >= profile.threshold
                ref = refs[j]
                spacing = tuple(float(s) for s in data.spacing_mm[i])
                row = {
                    "image_id": data.image_ids[i],
                    "patient_id": data.patient_ids[i],
                    "spacing_row_mm": spacing[0],
                    "spacing_col_mm": spacing[1],
                    **{k: str(data.meta[i].get(k, "")) for k in META_COLUMNS},
                    **case_metrics(pred, ref, spacing),
                    **lesion_metrics(pred, ref, spacing),
                    "infer_seconds": seconds,
                }
                if candidates_out is not None:
                    candidates.append(froc_candidates(probs[j], ref, spacing,
                                                      str(data.image_ids[i])))
                if j < len(extras):
                    row.update({f"info_{k}": v for k, v in extras[j].items()})
                rows.append(row)
            task.advance(len(chunk))
    if candidates_out is not None:
        candidates_out.append(pd.concat(candidates, ignore_index=True) if candidates
                              else empty_candidates())
    frame = pd.DataFrame(rows)
    mem_mb, kind = peak_memory_mb(device)
    return frame.assign(peak_mem_mb=mem_mb, peak_mem_kind=kind)


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """(MiB, what was measured): CUDA max allocated since the reset, else the process peak RSS
    (ru_maxrss is KiB on Linux, bytes on macOS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_peak_rss"
