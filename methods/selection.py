"""Test-time branch selection of MLN-net (section 3.3, Eqs. 16-20) and its ablations.

For a test image and branch k, Q_t holds the per-channel mean and std of every multi-norm
layer's input when the image goes through branch k, and Q_d the statistics recorded for branch
k on its source group. Cosine (MLN-net): S_k = sum_l cos(mu, mu*) + cos(sigma, sigma*), pick
the most similar (argmax). Euclidean (MLN-net-E): D_k = sum_l |mu - mu*| + |sigma - sigma*|,
pick argmin. The "+" variants append the correctional mean (section 5.1.2) to every layer's mean
vector in Q_d and Q_t ("added to the matrices Q_d and Q_t").

Eq. 18 prints ONE cosine per layer, of the joint vector (mu, sigma) against (mu*, sigma*); the
released `cal_distance` sums two cosines, cos(mu, mu*) + cos(sigma, sigma*). `form="sum"` (the
default) follows the released code, whose numbers the paper reports; `form="joint"` is Eq. 18
as printed (for the Euclidean variant, the distance of the joint vectors). The two differ
whenever the mean and std vectors have different norms: the joint cosine weights each part by
its norm, the sum weights them equally.

Eq. 20 literally takes the argmin of the cosine sum, i.e. the LEAST similar branch; this traces
to SADN's `if new_dis < dis`, kept when the distance became a similarity. We
default to the most similar branch, the stated intent ("selecting the best"); `paper-literal`
reproduces Eq. 20 as written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SELECTIONS = ("most-similar", "paper-literal")
METRICS = ("cosine", "euclidean")
FORMS = ("sum", "joint")  # Eq. 18: the released code's two cosines, or the printed joint one


def correctional_mean(images: torch.Tensor) -> torch.Tensor:
    """Per image: the mean of the pixels above the image minimum (the background), (B,).

    Literal reading of 5.1.2 for every input, including inverted ones, whose minimum is the
    densest tissue rather than the background (the paper is silent on inverted inputs)."""
    flat = images.detach().float().flatten(1)
    above = flat > flat.min(1, keepdim=True).values
    total = (flat * above).sum(1)
    count = above.sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), flat.mean(1))


def branch_scores(target: list[tuple[torch.Tensor, torch.Tensor]],
                  reference: list[tuple[torch.Tensor, torch.Tensor]], metric: str = "cosine",
                  target_extra: torch.Tensor | None = None,
                  reference_extra: torch.Tensor | None = None,
                  form: str = "sum") -> torch.Tensor:
    """Scores (B, K) of B images against K branches.

    `target[l]` = (mean, std), each (K, B, C): layer l's input statistics with the image in
    branch k; `reference[l]` = (mean, std), each (K, C). `*_extra` (B,) and (K,): the
    correctional means appended to every layer's mean vector. Cosine gives similarities,
    Euclidean distances. `form`: "sum" of the mean and std terms (released code) or "joint",
    one term of the concatenated (mean, std) vector (Eq. 18 as printed).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown selection metric '{metric}' ({', '.join(METRICS)})")
    if form not in FORMS:
        raise ValueError(f"unknown Eq. 18 form '{form}' ({', '.join(FORMS)})")
    total: torch.Tensor | None = None
    for (t_mean, t_std), (r_mean, r_std) in zip(target, reference, strict=True):
        k, b, _ = t_mean.shape
        r_mean_b = r_mean.unsqueeze(1).expand(k, b, -1)
        r_std_b = r_std.unsqueeze(1).expand(k, b, -1)
        if target_extra is not None and reference_extra is not None:
            t_mean = torch.cat([t_mean, target_extra.view(1, b, 1).expand(k, b, 1)], -1)
            r_mean_b = torch.cat([r_mean_b, reference_extra.view(k, 1, 1).expand(k, b, 1)], -1)
        if form == "joint":
            t_joint = torch.cat([t_mean, t_std], -1)
            r_joint = torch.cat([r_mean_b, r_std_b], -1)
            layer = (F.cosine_similarity(t_joint, r_joint, dim=-1, eps=1e-8)
                     if metric == "cosine" else (t_joint - r_joint).norm(dim=-1))
        elif metric == "cosine":
            layer = (F.cosine_similarity(t_mean, r_mean_b, dim=-1, eps=1e-8)
                     + F.cosine_similarity(t_std, r_std_b, dim=-1, eps=1e-8))
        else:
            layer = (t_mean - r_mean_b).norm(dim=-1) + (t_std - r_std_b).norm(dim=-1)
        total = layer if total is None else total + layer
    if total is None:
        raise ValueError("no multi-norm layers to compare")
    return total.T  # (B, K)


def choose(scores: torch.Tensor, metric: str = "cosine",
           selection: str = "most-similar") -> torch.Tensor:
    """The chosen branch per image, (B,): most similar, or Eq. 20's literal argmin."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection '{selection}' ({', '.join(SELECTIONS)})")
    if metric == "cosine" and selection == "most-similar":
        return scores.argmax(1)
    return scores.argmin(1)  # Euclidean distances, or Eq. 20 as written
