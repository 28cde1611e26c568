"""FedDG's boundary-oriented contrastive loss: contour/background masks, embeddings, NT-Xent.

Masks as in the code (`_get_coutour_sample`): contour = y - erode(y, 1 iteration), background
ring = dilate(y, 5 iterations) - y, with scipy.ndimage's binary morphology (the code's own
calls, default cross-shaped structuring element). Embeddings are the mask-averaged decoder
features. The loss is `pytorch_metric_learning.losses.NTXentLoss(temperature=0.05)` with labels
contour = 1, background = 0, re-implemented here in a few lines (same definition: cosine
similarity; for every positive pair, -log of its exponentiated similarity over itself plus the
anchor's negatives; mean over positive pairs) because that package pulls in scikit-learn for
this one loss. Images whose contour or ring is empty are skipped (the code divides by zero).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def boundary_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Contour and background-ring masks (B,1,H,W) float of binary masks (B,1,H,W)."""
    contours, rings = [], []
    for m in masks.detach().cpu().numpy() > 0.5:
        m2 = m[0]
        contours.append(m2 & ~ndimage.binary_erosion(m2, iterations=1))
        rings.append(ndimage.binary_dilation(m2, iterations=5) & ~m2)
    def stack(arrs: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrs)[:, None].astype(np.float32)).to(masks.device)
    return stack(contours), stack(rings)


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean feature vector (B,C) over each image's mask (B,1,H,W); the mask must be non-empty."""
    return (features * mask).sum(dim=(-2, -1)) / mask.sum(dim=(-2, -1))


def nt_xent(embeddings: torch.Tensor, labels: torch.Tensor,
            temperature: float = 0.05) -> torch.Tensor:
    """Supervised NT-Xent (pytorch-metric-learning's NTXentLoss); 0 without positive pairs."""
    z = F.normalize(embeddings, dim=1)
    sim = z @ z.t() / temperature
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    neg = ~same
    if not pos.any():
        return embeddings.sum() * 0.0
    anchors, positives = pos.nonzero(as_tuple=True)
    neg_sims = sim[anchors].masked_fill(~neg[anchors], float("-inf"))
    both = torch.cat([sim[anchors, positives][:, None], neg_sims], dim=1)
    return (torch.logsumexp(both, dim=1) - sim[anchors, positives]).mean()


def boundary_contrast_loss(emb_inner: torch.Tensor, emb_outer: torch.Tensor,
                           masks: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """L_bd over the batch: contour and ring embeddings of the inner (theta) and outer
    (theta') forwards, contour = 1, background = 0; 0 when no image has both regions."""
    contour, ring = boundary_masks(masks)
    valid = (contour.sum(dim=(1, 2, 3)) > 0) & (ring.sum(dim=(1, 2, 3)) > 0)
    if not bool(valid.any()):
        return emb_inner.sum() * 0.0
    c, r = contour[valid], ring[valid]
    parts = [masked_mean(e[valid], m) for e in (emb_inner, emb_outer) for m in (c, r)]
    n = int(valid.sum())
    labels = torch.tensor([1] * n + [0] * n + [1] * n + [0] * n, device=masks.device)
    return nt_xent(torch.cat(parts), labels, temperature)
