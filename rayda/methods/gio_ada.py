"""GIO-Ada (seed 002, card 3): geometrically guided input-output adaptation; needs depth d_s on the source.

Input level:  x̂_s = G_img(x_s, onehot(y_s), d_s), a CycleGAN ResNet generator; D_img (PatchGAN): x_t vs x̂_s.
Output level: G_task = the segmenter (shared backbone + seg head) + a depth head, run on x̂_s and x_t;
              D_output (PatchGAN) on concat(softmax seg, depth), C+1 channels: T outputs vs S-derived outputs.
min over G_img, G_task / max over D_img, D_output of
  L_seg + λ_depth L_depth + λ_image L_image + λ_output L_output        (eq. 5; log-loss GAN terms, eqs. 1, 4)
G_img is trained *with* the task net: it gets L_seg's and L_depth's gradients too. One step:
  1. G_img and G_task together on the sum, the discriminators held fixed;
  2. D_img on x_t vs x̂_s, D_output on T vs S outputs.
Variants (config only): input_level / output_level off (both off = "none": the task net with depth
supervision), output_d = joint | separate | seg | depth (the paper's output-level ablation).
Adam lr 2e-4 for every net (task_lr may set G_task's apart). Where the paper is silent: betas (0.5, 0.999),
CycleGAN's, with whose lr and generator G_img comes; a poly(0.9) decay of that "initial" lr; no image pool;
depth / max_depth clipped to [0, 1]; a depth head in DeepLab-v2's classifier layout; unknown depth (0 m)
left out of L_depth and fed to G_img as 0.
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rayda.classes import IGNORE_INDEX
from rayda.config import ConfigError, Section
from rayda.gan import GANLoss, PatchDiscriminator, ResnetGenerator, set_requires_grad, sized
from rayda.methods.base import Method, StepContext, unwrap
from rayda.models import Segmenter, build_segmenter
from rayda.models.base import init_classifier, init_weights
from rayda.report import colorize, to_uint8_image

DEPTH_HEAD_WIDTH = {"full": 512, "cpu": 64}
DEPTH_HEAD_RATES = (6, 12, 18, 24)  # DeepLab-v2's ASPP-L rates


class GIOAdaParams(Section):
    input_level: bool = True                  # G_img + D_img; false: x̂_s = x_s
    output_level: bool = True                 # D_output on the task outputs
    output_d: Literal["joint", "separate", "seg", "depth"] = "joint"  # what D_output sees (with output_level)
    lambda_depth: float = Field(0.1, ge=0)
    lambda_image: float = Field(0.1, ge=0)
    lambda_output: float = Field(0.001, ge=0)
    # Depth / max_depth clipped to [0, 1]. simworld draws the street end (its farthest facades) at
    # 50-160 m; the sky (1000 m) and the ground past the street end saturate at 1.
    max_depth: float = Field(160.0, gt=0)
    gan_mode: Literal["bce", "lsgan"] = "bce"  # the paper's log loss (eqs. 1, 4)
    lr: float = Field(2e-4, gt=0)             # Adam, every net (the paper prints "2^-4")
    task_lr: float | None = Field(None, gt=0)  # G_task's own lr; None = lr (the paper's: one lr for all)
    beta1: float = Field(0.5, ge=0, lt=1)
    poly_power: float = Field(0.9, ge=0)      # lr * (1 - step/steps) ** power; 0 = constant
    disc_layers: int = Field(5, gt=0)         # stride-2 convs of each PatchGAN


class DepthHead(nn.Module):
    """Embedding -> depth in [0, 1]: DeepLab-v2's classifier layout (dilated 3x3 branches, summed) with one
    output channel, so the two task heads are alike; the paper does not lay the depth head out."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=r, dilation=r), nn.ReLU(inplace=True),
                          nn.Conv2d(width, 1, 1))
            for r in DEPTH_HEAD_RATES)
        init_weights(self)
        init_classifier(*(b[-1] for b in self.branches))  # starts near 0.5 everywhere

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(sum(b(embedding) for b in self.branches))


class TaskNet(nn.Module):
    """G_task: one backbone, two heads. `segmenter` is a plain rayda Segmenter (its backbone and seg head),
    so evaluation and export use it alone; the depth head reads the same embedding."""

    def __init__(self, segmenter: Segmenter, depth_width: int):
        super().__init__()
        self.segmenter = segmenter
        self.depth_head = DepthHead(segmenter.embed_channels, depth_width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(seg logits [N, C, H, W], depth [N, 1, H, W] in [0, 1])."""
        feats = self.segmenter.extract_features(x)
        logits = self.segmenter.decode(feats, x.shape[-2:])
        h, w = x.shape[-2:]
        m = self.segmenter.input_multiple  # features cover the padded input: upsample to it, crop as decode does
        depth = F.interpolate(self.depth_head(feats[-1]), size=(math.ceil(h / m) * m, math.ceil(w / m) * m),
                              mode="bilinear", align_corners=False)
        return logits, depth[..., :h, :w]


def masked_l1(pred: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over pixels of known depth (0 when none: still a graph, so DDP stays in step)."""
    return ((pred - target).abs() * known).sum() / known.sum().clamp(min=1)


class GIOAda(Method):
    name = "gio_ada"
    Params = GIOAdaParams
    needs_target = True
    needs_depth = True

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        p, m, c = self.params, cfg.model, classes.num_classes
        seg = build_segmenter(m.arch, c, size=m.size, pretrained=m.pretrained, weights=m.weights)
        disc = lambda ch: sized(PatchDiscriminator, m.size, in_channels=ch, n_layers=p.disc_layers)  # noqa: E731
        # Only the nets a variant uses: DDP waits forever for gradients of a net that gets none.
        self.nets = {"task": TaskNet(seg, DEPTH_HEAD_WIDTH[m.size])}
        if p.input_level:
            if any(n % 4 for n in cfg.data.crop):  # G_img's two stride-2 convs give back only multiples of 4
                raise ConfigError(f"'data.crop': method 'gio_ada' with input_level needs a crop in multiples of 4 "
                                  f"(G_img's output must match its labels), got {list(cfg.data.crop)}")
            self.nets["g_img"] = sized(ResnetGenerator, m.size, in_channels=3 + c + 1)
            self.nets["d_img"] = disc(3)
        # D_output's input channels by net name: "d_out" on the joint C+1 channels, or one D per output.
        self.output_channels = {} if not p.output_level else {
            "joint": {"d_out": c + 1}, "separate": {"d_out_seg": c, "d_out_depth": 1},
            "seg": {"d_out_seg": c}, "depth": {"d_out_depth": 1}}[p.output_d]
        self.nets.update({k: disc(ch) for k, ch in self.output_channels.items()})
        self.discriminators = [k for k in self.nets if k.startswith("d_")]
        self.gan = GANLoss(p.gan_mode)

    def configure_optimizers(self) -> None:
        p, n = self.params, self.nets
        adam = lambda names, lr: torch.optim.Adam([q for k in names for q in n[k].parameters()],  # noqa: E731
                                                  lr=lr, betas=(p.beta1, 0.999))
        # min over G_task and G_img (both stepped on one sum), max over D_img and D_output.
        self.optimizers = {"task": adam(["task"], p.task_lr or p.lr)}
        if "g_img" in n:
            self.optimizers["g_img"] = adam(["g_img"], p.lr)
        if self.discriminators:
            self.optimizers["discriminators"] = adam(self.discriminators, p.lr)
        self.schedulers = {k: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=self.cfg.train.steps,
                                                                    power=p.poly_power)
                           for k, o in self.optimizers.items()}

    @property
    def segmenter(self) -> Segmenter:
        return unwrap(self.nets["task"]).segmenter

    def normalised_depth(self, depth_m: torch.Tensor) -> torch.Tensor:
        """Metres -> [0, 1] (unknown 0 stays 0)."""
        return (depth_m / self.params.max_depth).clamp(0, 1)

    def g_img_input(self, x_s: torch.Tensor, y_s: torch.Tensor, d_s: torch.Tensor) -> torch.Tensor:
        """concat(x_s, onehot(y_s) with ignore pixels all-zero, d_s in [0, 1]): 3 + C + 1 channels."""
        valid = y_s != IGNORE_INDEX
        onehot = F.one_hot(torch.where(valid, y_s, 0), self.classes.num_classes).permute(0, 3, 1, 2)
        return torch.cat([x_s, (onehot * valid[:, None]).to(x_s.dtype), d_s.to(x_s.dtype)], dim=1)

    def outputs(self, logits: torch.Tensor, depth: torch.Tensor) -> dict[str, torch.Tensor]:
        """The task outputs each output discriminator sees, by its net name."""
        seg, depth = logits.float().softmax(1), depth.float()
        if "d_out" in self.output_channels:
            return {"d_out": torch.cat([seg, depth], 1)}
        return {k: v for k, v in (("d_out_seg", seg), ("d_out_depth", depth)) if k in self.output_channels}

    def train_step(self, batch, ctx: StepContext):
        p, n = self.params, self.nets
        x_s, y_s, x_t = batch["image"], batch["label"].long(), batch["target_image"]
        known = (batch["depth"] > 0).float()  # 0 m = unknown depth
        d_s = self.normalised_depth(batch["depth"])
        # Held fixed in step 1: run unwrapped (a DDP forward whose parameters get no gradient hangs DDP).
        fixed = {k: unwrap(n[k]) for k in self.discriminators}
        set_requires_grad(list(fixed.values()), False)
        n["task"].train()

        with ctx.autocast():
            x_hat = n["g_img"](self.g_img_input(x_s, y_s, d_s)) if p.input_level else x_s
            logits_s, depth_s = n["task"](x_hat)
            losses = {"seg": F.cross_entropy(logits_s.float(), y_s, ignore_index=IGNORE_INDEX),
                      "depth": masked_l1(depth_s.float(), d_s, known)}
            total = losses["seg"] + p.lambda_depth * losses["depth"]
            if p.input_level:
                losses["gan_image"] = self.gan.generator(fixed["d_img"](x_hat))
                total = total + p.lambda_image * losses["gan_image"]
            if p.output_level:
                logits_t, depth_t = n["task"](x_t)
                out_s, out_t = self.outputs(logits_s, depth_s), self.outputs(logits_t, depth_t)
                # Both domains' outputs depend on G_task, so min over G of eq. 4 is D's loss with the domain
                # labels swapped (non-saturating; 2x undoes D's halving): S outputs T-like, T outputs S-like.
                losses["gan_output"] = sum(2 * self.gan.discriminator(fixed[k](out_s[k]), fixed[k](out_t[k]))
                                           for k in out_s)
                total = total + p.lambda_output * losses["gan_output"]
        generators = [k for k in ("task", "g_img") if k in self.optimizers]
        for k in generators:
            self.optimizers[k].zero_grad(set_to_none=True)
        total.backward()
        for k in generators:
            self.optimizers[k].step()
            self.schedulers[k].step()

        if self.discriminators:
            set_requires_grad([n[k] for k in self.discriminators], True)
            with ctx.autocast():
                d_loss = 0
                if p.input_level:  # real: x_t, fake: x̂_s (eq. 1)
                    losses["d_image"] = self.gan.discriminator(n["d_img"](x_t), n["d_img"](x_hat.detach()))
                    d_loss = d_loss + losses["d_image"]
                if p.output_level:  # real: T outputs, fake: S-derived outputs (eq. 4)
                    losses["d_output"] = sum(self.gan.discriminator(n[k](out_t[k].detach()), n[k](out_s[k].detach()))
                                             for k in out_s)
                    d_loss = d_loss + losses["d_output"]
            self.optimizers["discriminators"].zero_grad(set_to_none=True)
            d_loss.backward()
            self.optimizers["discriminators"].step()
            self.schedulers["discriminators"].step()
        losses["total"] = total
        return {k: v.detach() for k, v in losses.items()}

    def translator(self) -> None:
        # G_img reads y_s and d_s beside the image, so it is no image -> image translator for `rayda translate`.
        return None

    @torch.no_grad()
    def visuals(self, batch):
        task = unwrap(self.nets["task"])
        was_training = task.training
        task.eval()
        x_s, y_s, x_t = batch["image"][:2], batch["label"][:2].long(), batch["target_image"][:2]
        if self.params.input_level:
            d_s = self.normalised_depth(batch["depth"][:2])
            x_hat = unwrap(self.nets["g_img"])(self.g_img_input(x_s, y_s, d_s))
        else:
            x_hat = x_s
        seg_s = task(x_hat)[0].argmax(1)
        logits_t, depth_t = task(x_t)
        task.train(was_training)
        grey = (depth_t[:, 0].float().cpu().numpy() * 255).round().astype(np.uint8)[..., None].repeat(3, -1)
        rows = [[to_uint8_image(x_s[i]), colorize(y_s[i], self.classes), to_uint8_image(x_hat[i]),
                 colorize(seg_s[i], self.classes), to_uint8_image(x_t[i]),
                 colorize(logits_t[i].argmax(0), self.classes), grey[i]] for i in range(len(x_s))]
        return ["source", "label", "translated", "seg(translated)", "target", "seg(target)", "depth(target)"], rows
