"""The multi-branch family: MLN-net and its Table 3 ablations as one configurable method.

A configuration picks the backbone (Swin-Unet or U-Net), whether the source is augmented into
pseudo-domains (Bezier source-similar, inverted source-dissimilar; section 3.1), whether each
pseudo-domain gets its own normalisation branch (multiple LN; 3.2.2) and how branches are
combined at test time (one branch, the sum of the branches' binary outputs, or selection by
normalisation statistics; 3.3). Training follows Eqs. 14-15: Eq. 14's Dice loss per branch on
its own domain-homogeneous batch (the foreground Dice, N = 1, by default; `dice_classes=both`
is the 2-class Dice), summed, one optimiser step (the SADN-style one step per group is
`loss_step=per-group`).

Q_d (the source statistics of each branch, 3.2.2) is recorded by default in training mode and
averaged over the last epoch (`stats_record=epoch`). `stats_record=eval-pass` records it as the
paper describes, "at the final iteration": at the end of each epoch, an eval-mode pass (no
drop-path) with the end-of-epoch weights, i.e. those of the checkpoint written just after, over
that epoch's training views of each branch (the most recent `QD_MAX_VIEWS` per branch, kept on
the CPU in float16 and in mid-epoch checkpoints), so Q_d and Q_t come from the same network in
the same mode.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from benchmark.config import HParam, Profile
from benchmark.errors import UserError
from benchmark.valid import Valid
from methods.augment import (
    BezierCurve,
    Inversion,
    PseudoDomain,
    PseudoDomainMethod,
    bezier_curves,
    identity,
    similar_dissimilar,
)
from methods.base import CHANNELS_RANGE, Batch, SingleNetworkMethod, require_divisible
from methods.losses import foreground_dice_loss, two_class_dice_loss
from methods.networks.multinorm import (
    MultiLayerNorm,
    branch,
    capture,
    convert_layernorms,
    end_recording_period,
    multinorms,
)
from methods.networks.unet import UNet
from methods.selection import FORMS, branch_scores, choose, correctional_mean
from methods.swinunet import SwinUnetMethod, check_swin_config

#: The most recent training views per branch that the eval-mode Q_d pass goes over.
QD_MAX_VIEWS = 512


class MultiBranchMethod(PseudoDomainMethod):
    """Backbone + pseudo-domains + K normalisation branches + a test-time combination rule."""

    backbone: ClassVar[str] = "swin"  # "swin" | "unet"
    augment: ClassVar[bool] = True  # Bezier + inversion pseudo-domains
    branched: ClassVar[bool] = True  # one norm branch per pseudo-domain (else one, pooled)
    combine: ClassVar[str] = "select"  # "select" | "sum" | "single"
    metric: ClassVar[str] = "cosine"  # for combine == "select"
    plus: ClassVar[bool] = False  # the correctional mean in Q_d and Q_t
    inference_hparams: ClassVar[frozenset[str]] = frozenset(
        {"selection", "similarity_form"})  # read by predict only

    def __init__(self, hparams: dict[str, Any], device: torch.device, image_size: int,
                 amp: bool = False) -> None:
        super().__init__(hparams, device, image_size, amp)
        self.groups = self.pseudo_domains()
        self.num_branches = len(self.groups) if self.branched else 1
        self.network = self.build_network().to(device)
        self.optimizer = torch.optim.Adam(self.network.parameters(),
                                          lr=float(self.hparams["lr"]),
                                          weight_decay=float(self.hparams["weight_decay"]))
        # correctional means of each branch's training inputs (Q_d of the "+" variants):
        # sums of the epoch in progress and the values of the last completed epoch
        self.pixel_sum = torch.zeros(self.num_branches)
        self.pixel_count = torch.zeros(self.num_branches)
        self.pixel_mean = torch.zeros(self.num_branches)
        # stats_record=eval-pass: this epoch's training views per branch (CPU, float16)
        self._eval_pass = self.branched and self.hparams.get("stats_record") == "eval-pass"
        self._views: list[list[torch.Tensor]] = [[] for _ in range(self.num_branches)]
        self._last_info: list[dict[str, Any]] = []

    # --- declaration ------------------------------------------------------------------------
    @classmethod
    def hparam_space(cls) -> list[HParam]:
        space = list(SingleNetworkMethod.hparam_space())
        if cls.backbone == "swin":
            own = {h.name for h in SingleNetworkMethod.hparam_space()}
            space += [h for h in SwinUnetMethod.hparam_space() if h.name not in own]
        else:
            space.append(HParam("base_channels", {"smoke": 4, "quick": 16, "paper": 64},
                                lambda r: int(r.choice([16, 32, 64])),
                                "width of the first U-Net level", valid=CHANNELS_RANGE))
            space.append(HParam("ln_over", "sample", None,
                                "the U-Net's LayerNorms: sample (over C,H,W of each image, "
                                "Ba et al.) | channel (over C per pixel, ConvNeXt)",
                                valid=Valid.choice("sample", "channel")))
        space.append(HParam("dice_classes", "foreground", None,
                            "classes in Eq. 14's Dice: foreground (N = 1) | both (N = 2, "
                            "background included; collapses to all-background from scratch)",
                            valid=Valid.choice("foreground", "both")))
        if cls.augment:
            space += [
                # no sampler: the default bezier_strategy (paper) makes exactly one pair, so a
                # random draw of 2 or 3 would be refused by check_config
                HParam("bezier_pairs", 1, None,
                       "control point pairs; each gives a curve and its mirror (Fig. 8); more "
                       "than one needs bezier_strategy=mean or random",
                       valid=Valid.integer(1, 16)),
                HParam("bezier_strategy", "paper", None,
                       "paper (a = 0.30) | mean (a_n = 0.5 n/N) | random (a ~ U(0, 0.5))",
                       valid=Valid.choice("paper", "mean", "random")),
                HParam("inversion_peak", "range", None,
                       "T of Eq. 5: range (T = 1, the released code's 255 - x) | image (max)",
                       valid=Valid.choice("range", "image")),
                HParam("inversion_background", "invert", None,
                       "invert (MLN code: the background turns white) | keep (SADN: dark)",
                       valid=Valid.choice("invert", "keep")),
            ]
        if cls.branched:
            space += [
                HParam("norms", "all", None, "multiplied LNs: all | block (Swin blocks only)",
                       valid=Valid.choice("all", "block")),
                HParam("stats_record", "epoch", None,
                       "Q_d: epoch (train mode, mean over the last epoch) | last-batch | "
                       "eval-pass (eval mode, end-of-epoch weights, the epoch's views)",
                       valid=Valid.choice("epoch", "last-batch", "eval-pass")),
                HParam("loss_step", "sum", None,
                       "sum (Eq. 15, one step) | per-group (SADN: one step per branch)",
                       valid=Valid.choice("sum", "per-group")),
            ]
        if cls.combine == "select":
            space.append(HParam("selection", "most-similar", None,
                                "most-similar | paper-literal (Eq. 20's argmin of the "
                                "cosine sum)",
                                valid=Valid.choice("most-similar", "paper-literal")))
            space.append(HParam("similarity_form", "sum", None,
                                "Eq. 18 per layer: sum (cos(mu) + cos(sigma), the released "
                                "code) | joint (one cosine of (mu, sigma), the printed Eq. 18)",
                                valid=Valid.choice(*FORMS)))
        return space

    @classmethod
    def check_config(cls, hparams: dict[str, Any], profile: Profile) -> None:
        """The backbone's geometry, and the Bezier pairs the chosen strategy can make."""
        if cls.backbone == "swin":
            check_swin_config(cls.name, hparams, profile.image_size)
        else:
            require_divisible(cls.name, profile.image_size, 16, "the U-Net pools four times")
        if cls.augment and hparams["bezier_strategy"] == "paper" and hparams["bezier_pairs"] != 1:
            raise UserError(f"{cls.name}: bezier_pairs={hparams['bezier_pairs']} needs "
                            "bezier_strategy=mean or random (the paper's strategy is one pair)")

    @classmethod
    def formula_network(cls, hparams: dict[str, Any], image_size: int) -> nn.Module | None:
        """The Swin family's plain Swin-Unet (its LayerNorms are multiplied after loading, so
        every branch starts from the pretrained norm); the multi-LN U-Nets take none."""
        if cls.backbone == "swin":
            return SwinUnetMethod.formula_network(hparams, image_size)
        return None

    def pseudo_domains(self) -> list[PseudoDomain]:
        if not self.augment:
            return [PseudoDomain("source", (identity,))]
        # the `random` strategy draws its curves once, from the run's initialisation seed
        curves: list[BezierCurve] = bezier_curves(int(self.hparams["bezier_pairs"]),
                                                  str(self.hparams["bezier_strategy"]),
                                                  seed=torch.initial_seed() % 2**32)
        inversion = Inversion(str(self.hparams["inversion_peak"]),
                              str(self.hparams["inversion_background"]))
        groups = similar_dissimilar(curves, inversion)
        if self.branched:
            return groups
        return [PseudoDomain("pooled", groups[0].transforms + groups[1].transforms)]

    def build_network(self) -> nn.Module:
        """The backbone with its LayerNorms multiplied into K branches (when branched)."""
        k = self.num_branches if self.branched else 1
        record = str(self.hparams.get("stats_record", "epoch"))
        record = "epoch" if record == "eval-pass" else record  # overwritten at each epoch end
        if self.backbone == "swin":
            net = SwinUnetMethod.build_network(self)  # type: ignore[arg-type]
            if self.branched:
                from methods.networks.swin_unet import block_layernorm_names

                only = (block_layernorm_names(net) if self.hparams["norms"] == "block"
                        else None)
                convert_layernorms(net, k, only=only, record=record)
            return net
        base = int(self.hparams["base_channels"])
        if not self.branched:
            return UNet(1, 1, base)
        over = str(self.hparams["ln_over"])
        try:  # MultiLayerNorm validates `over`; a bad --set value is a user error
            return UNet(1, 1, base, norm=lambda c: MultiLayerNorm(c, k, channels_first=True,
                                                                 record=record, over=over))
        except ValueError as err:
            raise UserError(f"{type(self).__name__} hparams: ln_over: {err}") from err

    # --- training ---------------------------------------------------------------------------
    def update(self, batches: dict[str, Batch]) -> dict[str, float]:
        self.network.train()
        names = [g.name for g in self.groups]
        per_group = self.branched and self.hparams.get("loss_step") == "per-group"
        logs: dict[str, float] = {}
        total = torch.zeros((), device=self.device)
        if not per_group:
            self.optimizer.zero_grad(set_to_none=True)
        for k, name in enumerate(names):
            batch = batches[name]
            kb = k if self.branched else 0
            if self.branched:  # recorded by every variant, so the "+" ones can share training
                m = correctional_mean(batch["image"]).cpu()
                self.pixel_sum[kb] += m.sum()
                self.pixel_count[kb] += len(m)
                if self._eval_pass:
                    self._keep_views(kb, batch["image"])
            if per_group:
                self.optimizer.zero_grad(set_to_none=True)
            with self.autocast(), branch(kb):
                logits = self.network(batch["image"])
            loss = self._dice(logits.float(), batch["mask"])
            if per_group:
                loss.backward()
                self.optimizer.step()
            else:
                total = total + loss
            logs[f"{name}/dice_loss" if len(names) > 1 else "dice_loss"] = float(loss.detach())
        if not per_group:
            total.backward()
            self.optimizer.step()
        logs["loss"] = sum(v for k, v in logs.items() if k.endswith("dice_loss"))
        return logs

    def _dice(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Eq. 14 over the classes chosen by `dice_classes` (whole-batch sums)."""
        if self.hparams.get("dice_classes", "foreground") == "both":
            return two_class_dice_loss(logits, masks)
        return foreground_dice_loss(logits, masks)

    def _keep_views(self, k: int, images: torch.Tensor) -> None:
        """Remember branch k's training views of this epoch for the eval-mode Q_d pass."""
        self._views[k].append(images.detach().to("cpu", torch.float16))
        while sum(len(v) for v in self._views[k]) - len(self._views[k][0]) >= QD_MAX_VIEWS:
            self._views[k].pop(0)  # keep the most recent QD_MAX_VIEWS (or a few more)

    @torch.no_grad()
    def record_eval_stats(self, batch_size: int = 16) -> None:
        """Q_d in eval mode with the current weights over the kept views of each branch: the
        per-image statistics of every multi-norm layer's input, averaged (see the module)."""
        layers = [m for _, m in multinorms(self.network)]
        was_training = self.network.training
        self.network.eval()
        for k, chunks in enumerate(self._views):
            if not chunks:
                continue
            images = torch.cat(chunks)
            sums: list[tuple[torch.Tensor, torch.Tensor]] | None = None
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size].to(self.device, torch.float32)
                with self.autocast(), branch(k), capture(self.network) as stats:
                    self.network(x)
                part = [(m.sum(0), s.sum(0)) for m, s in stats]
                sums = part if sums is None else [(a + c, b + d) for (a, b), (c, d)
                                                  in zip(sums, part, strict=True)]
            assert sums is not None and len(sums) == len(layers)
            for layer, (mean_sum, std_sum) in zip(layers, sums, strict=True):
                layer.stat_mean[k] = mean_sum / len(images)
                layer.stat_std[k] = std_sum / len(images)
                layer.stat_count[k] = len(images)
        self.network.train(was_training)

    def end_epoch(self, epoch: int) -> None:
        """Finalise this epoch's normalisation statistics and correctional means."""
        end_recording_period(self.network)
        if self._eval_pass:
            self.record_eval_stats()
            self._views = [[] for _ in range(self.num_branches)]
        seen = self.pixel_count > 0
        self.pixel_mean[seen] = self.pixel_sum[seen] / self.pixel_count[seen]
        self.pixel_sum.zero_()
        self.pixel_count.zero_()

    # --- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.network.eval()
        b, k = images.shape[0], self.num_branches
        if self.combine == "single" or k == 1:
            with self.autocast(), branch(0):
                probs = torch.sigmoid(self.network(images).float())
            self._last_info = [{"branch": 0} for _ in range(b)]
            return probs
        ids = torch.arange(k, device=images.device).repeat_interleave(b)
        stacked = images.repeat(k, 1, 1, 1)
        with self.autocast(), branch(ids), capture(self.network) as stats:
            probs = torch.sigmoid(self.network(stacked).float()).view(k, b, *images.shape[1:])
        if self.combine == "sum":
            # Table 3's R variants: branch masks summed, >= 1 positive, i.e. their union;
            # the max probability is >= the threshold exactly when one branch is positive
            self._last_info = [{"branches_positive": int((probs[:, i] >= 0.5).any(0).sum())}
                               for i in range(b)]
            return probs.max(0).values
        target = [(m.view(k, b, -1), s.view(k, b, -1)) for m, s in stats]
        reference = [layer.reference_stats() for _, layer in multinorms(self.network)]
        extra_t = extra_r = None
        if self.plus:
            extra_t = correctional_mean(images)
            extra_r = self._reference_pixel_mean().to(extra_t.device)
        scores = branch_scores(target, [(m.to(images.device), s.to(images.device))
                                        for m, s in reference], self.metric, extra_t, extra_r,
                               form=str(self.hparams.get("similarity_form", "sum")))
        chosen = choose(scores, self.metric, str(self.hparams["selection"]))
        names = [g.name for g in self.groups]
        self._last_info = [{"branch": int(c), "branch_name": names[int(c)],
                            **{f"score_{names[j]}": float(scores[i, j]) for j in range(k)}}
                           for i, c in enumerate(chosen.tolist())]
        return probs[chosen, torch.arange(b, device=images.device)]

    def _reference_pixel_mean(self) -> torch.Tensor:
        """Q_d's correctional means: the last epoch's, or the epoch in progress."""
        out = self.pixel_mean.clone()
        fresh = (out == 0) & (self.pixel_count > 0)
        out[fresh] = self.pixel_sum[fresh] / self.pixel_count[fresh]
        return out

    def case_info(self) -> list[dict[str, Any]]:
        return self._last_info

    # --- state ------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"network": self.network}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adam": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pixel_sum": self.pixel_sum.clone(),
                               "pixel_count": self.pixel_count.clone(),
                               "pixel_mean": self.pixel_mean.clone()}
        if self._eval_pass:  # a mid-epoch checkpoint keeps the views seen so far
            out["qd_views"] = [torch.cat(v) if v else torch.zeros(0) for v in self._views]
        return out

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for key in ("pixel_sum", "pixel_count", "pixel_mean"):
            if key in state:
                getattr(self, key).copy_(state[key])
        if self._eval_pass and "qd_views" in state:
            self._views = [[v] if len(v) else [] for v in state["qd_views"]]
