"""`bigaug` ("BigAug", P3): deep stacked transformation on `unet` (docs/methods/bigaug.md).

Zhang et al. train one segmenter on a single source with nine stacked, randomly applied
transformations (methods/bigaug_transforms.py). The original backbone is the 3D AH-Net; the
method is backbone-agnostic, so we use exactly `unet`'s network, widths, loss (BCE + soft
Dice) and optimiser, making any gain attributable to the augmentation alone.

Deviations from the original: 2D instead of 3D; the U-Net backbone; the harness's shared
flips / 90-degree rotations still run before BigAug (the fair protocol every method gets);
the 2D choices written in bigaug_transforms's docstring (z-space ranges, isotropic scaling,
elastic knots); the image-quality ranges (blur, sharpening, noise) are taken per acquisition
pixel and carried to the training grid (`quality_scale`, 0.25 at `quick`): applied per
0.39 mm quick pixel, noise or sharpening alone kept the U-Net at all-background. Every
random number comes from the harness generator, so runs repeat.
"""

from __future__ import annotations

import torch

from benchmark.config import HParam
from benchmark.registry import register_method
from benchmark.valid import Valid
from methods.base import Batch
from methods.bigaug_transforms import BigAugConfig, bigaug
from methods.unet import UnetMethod


@register_method("bigaug", display_name="BigAug", group="P3",
                 citation="Zhang et al. Generalizing deep learning for medical image "
                          "segmentation to unseen domains via deep stacked transformation. "
                          "IEEE TMI 2020")
class BigAugMethod(UnetMethod):
    """`unet` trained on BigAug views of every source batch."""

    @classmethod
    def hparam_space(cls) -> list[HParam]:
        return [
            *super().hparam_space(),
            HParam("bigaug_p", 0.5, lambda r: float(r.uniform(0.3, 0.9)),
                   "probability of each of the nine transformations (paper: 0.5)",
                   valid=Valid.number(0.0, 1.0)),
            HParam("quality_scale", {"smoke": 32 / 512, "quick": 128 / 512, "paper": 1.0}, None,
                   "acquisition pixel / training-grid pixel: blur and sharpening sigmas and "
                   "the noise std are taken per 0.1 mm detector pixel (bigaug_transforms)",
                   valid=Valid.number(0.0, 100.0, low_open=True)),
        ]

    def augment_config(self) -> BigAugConfig:
        """The published ranges with this run's per-transform probability."""
        return BigAugConfig(p=float(self.hparams["bigaug_p"]),
                            quality_scale=float(self.hparams["quality_scale"]))

    def make_view(self, group: str, batch: Batch, gen: torch.Generator) -> Batch:
        images, masks = bigaug(batch["image"], batch["mask"], gen, self.augment_config())
        return {**batch, "image": images, "mask": masks}
