"""Segmentation losses shared by the methods (binary, one logit channel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, masks: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged over the batch (smooth 1 keeps empty masks finite)."""
    probs = torch.sigmoid(logits).flatten(1)
    target = masks.flatten(1)
    inter = (probs * target).sum(1)
    denom = probs.sum(1) + target.sum(1)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def bce_dice_loss(logits: torch.Tensor, masks: torch.Tensor,
                  bce_weight: float = 1.0, dice_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """BCE-with-logits plus soft Dice: the loss of the U-Net-family baselines."""
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    dice = soft_dice_loss(logits, masks)
    return {"loss": bce_weight * bce + dice_weight * dice, "bce": bce, "dice": dice}


def foreground_dice_loss(logits: torch.Tensor, masks: torch.Tensor,
                         eps: float = 1e-5) -> torch.Tensor:
    """MLN-net Eq. 14 with N = 1 (the foreground class of a binary task): 1 - soft Dice with
    sums over the whole batch, so images without a cluster still penalise false positives."""
    p = torch.sigmoid(logits)
    inter = (p * masks).sum()
    return 1.0 - (2 * inter + eps) / (p.sum() + masks.sum() + eps)


def two_class_dice_loss(logits: torch.Tensor, masks: torch.Tensor,
                        eps: float = 1e-5) -> torch.Tensor:
    """MLN-net Eq. 14 with N = 2 classes: 1 - mean over {background, foreground} of the soft
    Dice, sums over the whole batch (as SADN's dice_loss1, whose code MLN-net reuses)."""
    p = torch.sigmoid(logits)
    probs, target = torch.cat([1 - p, p], 1), torch.cat([1 - masks, masks], 1)
    dims = (0, 2, 3)
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def dice_loss1(probs: torch.Tensor, onehot: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """SADN's `dice_loss1` (`utils/loss.py`): 1 - mean over the C channels of the soft Dice of class
    probabilities (B,C,H,W) against one-hot labels, sums over the whole batch, background in."""
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + smooth) / (denom + smooth)).mean()
