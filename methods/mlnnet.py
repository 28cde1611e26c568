"""`mlnnet` ("MLN-net", ours): Swin-Unet + multiple LN + source augmentation + cosine selection.

Wang et al.'s MLN-net (docs/methods/mlnnet.md; released: yezanting/main-module-of-MLN-net).
Choices where the paper and the released "main modules" are silent (each an hparam):

- Two branches: source-similar (the source plus its Bezier copies, control pairs (0.30, 0.70)
  and mirror) and source-dissimilar (the grayscale inversion of all of those), the reading of
  the released scripts' `image_512_sum` / `image_512_trans_sum` folders (their hard-coded paths).
- Every LayerNorm of the Swin-Unet is multiplied (the analogue of SADN's all-BN); `norms=block`
  multiplies only the Swin blocks' norm1/norm2.
- Loss: Eq. 14's Dice per branch with N = 1, the foreground class (`dice_classes=foreground`;
  the 2-class Dice with the background, `both`, stays at all-background from scratch), summed
  over the branches (Eq. 15), one Adam step (the shared protocol of paper 4.1.3). No CE term:
  the paper names Dice only.
- Source statistics: per LN and branch, the per-channel mean and std of the LN input, per image
  and averaged over the last training epoch ("at the final iteration" in a single batch is
  noisy; `stats_record=last-batch` reproduces it), in training mode; `stats_record=eval-pass`
  records them instead in eval mode with the end-of-epoch (checkpoint) weights over the epoch's
  training views, as Q_t is. Per-image statistics make Q_d comparable with a single test
  image's Q_t.
- Selection per test image: the most similar branch by the summed cosine similarities;
  `selection=paper-literal` applies Eq. 20's argmin as printed (see methods/selection.py).
  Eq. 18 per layer: by default cos(mu, mu*) + cos(sigma, sigma*), as the released
  `cal_distance` computes; `similarity_form=joint` is the printed Eq. 18, one cosine of the
  joint (mu, sigma) vector.
- Table 3's test-time variants (R, E, +, E+) reuse MLN-net's training run rather than training
  copies of it (`shares_training_with`): they differ only in `predict`, so five trainings of
  one network would cost five times as much for the same weights; Unet-R/E reuse Unet*'s.
  Every branched training records the correctional means, so the "+" variants find them.
- Backbone sizes per profile are Swin-Unet's (methods/swinunet.py): `paper` is the 84.0M
  configuration (depths [2,2,18,2], C=96, window 8 at 512 px), close to the paper's 83.6M.
"""

from __future__ import annotations

from benchmark.registry import register_method
from methods.multibranch import MultiBranchMethod

CITATION = ("Wang et al. MLN-net: a multi-source medical image segmentation method for "
            "clustered microcalcifications using multiple layer normalization. 2023")


@register_method("mlnnet", display_name="MLN-net", group="ours", citation=CITATION)
class MlnNet(MultiBranchMethod):
    """MLN-net: cosine-similarity branch selection over two LN branches."""


@register_method("mlnnet-plus", display_name="MLN-net+", group="ablation", citation=CITATION)
class MlnNetPlus(MultiBranchMethod):
    """MLN-net+: the correctional mean appended to Q_d and Q_t (section 5.1.2)."""

    shares_training_with = "mlnnet"

    plus = True


@register_method("mlnnet-e", display_name="MLN-net-E", group="ablation", citation=CITATION)
class MlnNetE(MultiBranchMethod):
    """MLN-net-E: branch selection by Euclidean distance instead of cosine similarity."""

    shares_training_with = "mlnnet"

    metric = "euclidean"


@register_method("mlnnet-e-plus", display_name="MLN-net-E+", group="ablation", citation=CITATION)
class MlnNetEPlus(MultiBranchMethod):
    """MLN-net-E+: Euclidean selection with the correctional mean."""

    shares_training_with = "mlnnet"

    metric = "euclidean"
    plus = True


@register_method("mlnnet-r", display_name="MLN-net-R", group="ablation", citation=CITATION)
class MlnNetR(MultiBranchMethod):
    """MLN-net-R: branches without selection; their binary outputs are summed and a pixel is
    positive when >= 1 branch says so, i.e. the union of the branches' binary masks."""

    shares_training_with = "mlnnet"

    combine = "sum"


@register_method("basenet", display_name="Basenet", group="ablation", citation=CITATION)
class Basenet(MultiBranchMethod):
    """Basenet: the plain Swin-Unet under MLN-net's training recipe (Dice loss, Adam).

    The paper's Table 3 Basenet row repeats Table 1's Swin-Unet numbers. Here it is its own
    training with MLN-net's foreground Dice instead of Swin-Unet's 0.4 BCE + 0.6 Dice, so that
    every Table 3 row (Basenet, Basenet-S, MLN-net-R, MLN-net, ...) differs from the next by one
    MLN-net component and never by the loss (docs/methods/mlnnet.md)."""

    augment = False
    branched = False
    combine = "single"


@register_method("basenet-s", display_name="Basenet-S", group="ablation", citation=CITATION)
class BasenetS(MultiBranchMethod):
    """Basenet-S: Basenet trained on the source plus all augmented copies pooled, one branch."""

    branched = False
    combine = "single"


@register_method("unet-r", display_name="Unet-R", group="ablation", citation=CITATION)
class UnetR(MultiBranchMethod):
    """Unet-R: the U-Net with multiple LN and augmentation, branch outputs summed.

    A CNN has no LayerNorm; its BatchNorms become LayerNorms with one affine set per branch,
    so "multiple LN layers" and the statistics used for selection mean the same as in the
    Swin-Unet. The LN normalises each image's feature map over C, H and W (Ba et al.'s LN of a
    conv layer; GroupNorm with one group) with a gamma/beta per channel. Choice and reason:
    ConvNeXt's per-pixel LN over C (`--set ln_over=channel`) makes the first layers' features
    invariant to the local intensity scale, which is what tells a calcification from tissue;
    with it the quick Unet* stayed at all-background (validation DSC <= 0.06 in 12 epochs),
    while the per-image LN learned (a U-Net with it and MLN-net's Dice loss reached validation
    DSC 0.47 by epoch 6)."""

    backbone = "unet"
    combine = "sum"
    shares_training_with = "unet-star"


@register_method("unet-e", display_name="Unet-E", group="ablation", citation=CITATION)
class UnetE(MultiBranchMethod):
    """Unet-E: the multi-LN U-Net with Euclidean branch selection."""

    shares_training_with = "unet-star"

    backbone = "unet"
    metric = "euclidean"


@register_method("unet-star", display_name="Unet*", group="ablation", citation=CITATION)
class UnetStar(MultiBranchMethod):
    """Unet*: the multi-LN U-Net with cosine branch selection."""

    backbone = "unet"
