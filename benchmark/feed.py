"""Batches streamed from a domain's cache: only the rows of the current batches are in memory.

`host_batch` reads one batch's rows (and, for methods with slice context, their neighbours)
into CPU tensors; `batch_stream` yields the batches of a fixed list of row indices in order,
prefetched by a torch DataLoader with worker processes on CUDA (pinned memory, so the copy to
the GPU overlaps compute) and read in-process on CPU, where the training itself uses the cores.
The order and content of batches never depend on the worker count, so numbers are the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from datasets.domain import DomainData

Batch = dict[str, torch.Tensor]


def host_batch(data: DomainData, index: np.ndarray, context_slices: int = 0) -> Batch:
    """Rows `index` as CPU tensors: "image" (B,1,H,W) float32, "mask" (B,1,H,W) float32 and,
    with `context_slices` D > 0, "slices" (B,D,H,W) and "slices_real" (B,) bool."""
    index = np.asarray(index, dtype=np.int64)
    images = torch.from_numpy(np.ascontiguousarray(data.images[index])).unsqueeze(1)
    masks = torch.from_numpy(np.ascontiguousarray(data.masks[index])).unsqueeze(1).float()
    batch = {"image": images, "mask": masks}
    if context_slices > 0:
        picks = [data.neighbour_index(int(i), context_slices) for i in index]
        flat = np.concatenate([ix for ix, _ in picks])
        stack = np.asarray(data.images[flat]).reshape(len(index), context_slices,
                                                      *images.shape[-2:])
        batch["slices"] = torch.from_numpy(np.ascontiguousarray(stack))
        batch["slices_real"] = torch.tensor([real for _, real in picks])
    return batch


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor of `batch` to `device` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=v.is_pinned()) for k, v in batch.items()}


def loader_workers(device: torch.device) -> int:
    """DataLoader workers: $CALCBENCH_LOADER_WORKERS if set, else up to 4 of the available
    cores on CUDA (reading overlaps GPU compute) and 0 on CPU (the model needs the cores)."""
    env = os.environ.get("CALCBENCH_LOADER_WORKERS", "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            from benchmark.errors import UserError

            raise UserError(f"CALCBENCH_LOADER_WORKERS must be a whole number, got '{env}'"
                            ) from None
    if device.type != "cuda":
        return 0
    return min(4, len(os.sched_getaffinity(0)))


class _Batches(torch.utils.data.Dataset):
    """Item i = the host batch of `batches[i]` (the DataLoader batches nothing itself)."""

    def __init__(self, data: DomainData, batches: Sequence[np.ndarray], context_slices: int
                 ) -> None:
        self.data, self.batches, self.context_slices = data, list(batches), context_slices

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        return host_batch(self.data, self.batches[i], self.context_slices)


def batch_stream(data: DomainData, batches: Sequence[np.ndarray], device: torch.device,
                 context_slices: int = 0, workers: int | None = None) -> Iterator[Batch]:
    """The batches of `batches` (row-index arrays), in order, on `device`."""
    workers = loader_workers(device) if workers is None else workers
    if workers == 0 or len(batches) < 2:
        for index in batches:
            yield to_device(host_batch(data, index, context_slices), device)
        return
    loader = torch.utils.data.DataLoader(
        _Batches(data, batches, context_slices), batch_size=None, shuffle=False,
        num_workers=min(workers, len(batches)), pin_memory=device.type == "cuda",
        prefetch_factor=2)
    for batch in loader:
        yield to_device(batch, device)
