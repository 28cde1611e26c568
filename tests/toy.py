"""A tiny in-memory domain for harness tests that must not depend on the generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datasets.domain import Domain, DomainData


class ToyDomain(Domain):
    """Bright disks on noise; `invert=True` flips the intensities (a crude domain shift)."""

    synthetic = True

    def __init__(self, name: str = "toy", n_patients: int = 10, views: int = 2,
                 invert: bool = False, seed: int = 0) -> None:
        self.name, self.n_patients, self.views = name, n_patients, views
        self.invert, self.seed = invert, seed

    def fingerprint(self) -> str:
        return f"toy{self.n_patients}x{self.views}{'i' if self.invert else ''}s{self.seed}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "synthetic", "images": self.n_patients * self.views}

    def load(self, image_size: int, cache_dir: Path, progress: Any = None) -> DomainData:
        rng = np.random.RandomState(self.seed)
        n = self.n_patients * self.views
        yy, xx = np.mgrid[:image_size, :image_size]
        images = rng.uniform(0.1, 0.4, (n, image_size, image_size)).astype(np.float32)
        masks = np.zeros((n, image_size, image_size), np.uint8)
        for i in range(n):
            cy, cx = rng.randint(image_size // 4, 3 * image_size // 4, 2)
            r = image_size / 6
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            masks[i][disk] = 1
            images[i][disk] += 0.5
        if self.invert:
            images = 1.0 - images
        return DomainData(
            domain=self.name, images=np.clip(images, 0, 1), masks=masks,
            spacing_mm=np.full((n, 2), 50.0 / image_size),
            patient_ids=[f"P{i // self.views:03d}" for i in range(n)],
            image_ids=[f"P{i // self.views:03d}-v{i % self.views}" for i in range(n)],
            meta=[{"view": f"v{i % self.views}"} for i in range(n)],
        )
