"""Preview a method's training views (`make_view`) for `bench data show --augment METHOD`.

The views come from the method itself, built with its `quick` hparams and a seeded generator,
so the contact sheet shows exactly what training would feed it (e.g. BigAug's stacked
transformations, or the Bezier / inverted pseudo-domains of DoFE and FedDG).
"""

from __future__ import annotations

import numpy as np
import torch

from benchmark.config import resolve_hparams
from benchmark.errors import UserError
from benchmark.registry import get_method
from datasets.report import ViewFn


def method_views(name: str, image_size: int, seed: int = 0) -> ViewFn:
    """A contact-sheet view function: one row per training group of method `name`."""
    info = get_method(name)
    torch.manual_seed(seed)
    method = info.cls(resolve_hparams(info.cls.hparam_space(), "quick"), torch.device("cpu"),
                      image_size)
    groups = method.training_groups()

    def views(images: np.ndarray, masks: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        gen = torch.Generator().manual_seed(seed)
        batch = {"image": torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1),
                 "mask": torch.from_numpy(np.ascontiguousarray(masks)).float().unsqueeze(1)}
        rows = []
        for group in groups:
            view = method.make_view(group, batch, gen)
            rows.append((f"{name}: {group}", view["image"][:, 0].numpy(),
                         view["mask"][:, 0].numpy()))
        if all(np.array_equal(img, images) and np.array_equal(msk, masks)
               for _, img, msk in rows):
            raise UserError(f"--augment {name}: method '{name}' does not augment its training "
                            "batches (its make_view returns them unchanged)")
        return rows

    return views
