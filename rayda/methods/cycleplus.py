"""CyclePlus (seed 003, card 4): CycleGAN + a DeepLabV3+ MobileNet-v2 segmenter M with feature discriminators.

L_tot = L_i + λ_feat L_f + λ_cycle L_cycle + λ_sem L_sem + λ_ce L_ce, least-squares GAN terms. One step:
  1. generators (and M once unfrozen) on L_tot, discriminators held fixed;
  2. image discriminators D_S, D_T on real vs pooled translations; feature discriminators D'_S, D'_T on
     M's encoder output of real vs translated images.
λ_sem = λ_feat = 0 is the CycleGAN baseline, λ_feat = 0 the CyCADA-like variant: config only.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from rayda.classes import IGNORE_INDEX
from rayda.config import Section
from rayda.gan import GANLoss, ImagePool, PatchDiscriminator, ResnetGenerator, set_requires_grad, sized
from rayda.methods.base import Method, StepContext, unwrap
from rayda.models import build_segmenter
from rayda.report import to_uint8_image


class CyclePlusParams(Section):
    lambda_cycle: float = Field(20.0, ge=0)
    lambda_sem: float = Field(0.1, ge=0)
    lambda_feat: float = Field(1e-4, ge=0)
    lambda_ce: float = Field(1.0, ge=0)
    gan_mode: Literal["lsgan", "bce"] = "lsgan"
    gan_lr: float = Field(2e-4, gt=0)              # Adam(2e-4, beta1 0.5) for generators and discriminators
    gan_beta1: float = Field(0.5, ge=0, lt=1)
    segmenter_lr: float = Field(1e-5, gt=0)        # Adam, beta1 0.9, weight decay 4e-5, poly 0.9
    segmenter_weight_decay: float = Field(4e-5, ge=0)
    poly_power: float = Field(0.9, ge=0)
    freeze_segmenter: float = Field(0.25, ge=0, le=1)  # fraction of steps M stays frozen
    segmenter_init: str | None = None              # a source-only checkpoint to start M from (the paper's)
    pool_size: int = Field(50, ge=0)
    disc_layers: int = Field(5, gt=0)              # "5 stride-2 convs"; the feature Ds: same, stride 1


class CyclePlus(Method):
    name = "cycleplus"
    Params = CyclePlusParams
    needs_target = True

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        p, m = self.params, cfg.model
        seg = build_segmenter(m.arch, classes.num_classes, size=m.size, pretrained=m.pretrained, weights=m.weights)
        if p.segmenter_init:
            from rayda.train.checkpoint import load_segmenter_weights

            load_segmenter_weights(seg, p.segmenter_init, m.arch, classes)
        self.nets = {
            "segmenter": seg,
            "g_st": sized(ResnetGenerator, m.size), "g_ts": sized(ResnetGenerator, m.size),
            "d_s": sized(PatchDiscriminator, m.size, n_layers=p.disc_layers),
            "d_t": sized(PatchDiscriminator, m.size, n_layers=p.disc_layers),
            "df_s": sized(PatchDiscriminator, m.size, in_channels=seg.embed_channels, n_layers=p.disc_layers, stride=1),
            "df_t": sized(PatchDiscriminator, m.size, in_channels=seg.embed_channels, n_layers=p.disc_layers, stride=1),
        }
        self.buffers = {"pool_s": ImagePool(p.pool_size), "pool_t": ImagePool(p.pool_size)}
        self.gan = GANLoss(p.gan_mode)
        self.freeze_steps = int(p.freeze_segmenter * cfg.train.steps)

    def configure_optimizers(self) -> None:
        p, n = self.params, self.nets
        adam = lambda *names: torch.optim.Adam([q for k in names for q in n[k].parameters()],  # noqa: E731
                                               lr=p.gan_lr, betas=(p.gan_beta1, 0.999))
        self.optimizers = {
            "generators": adam("g_st", "g_ts"),
            "discriminators": adam("d_s", "d_t", "df_s", "df_t"),
            "segmenter": torch.optim.Adam(n["segmenter"].parameters(), lr=p.segmenter_lr, betas=(0.9, 0.999),
                                          weight_decay=p.segmenter_weight_decay),
        }
        self.schedulers = {"segmenter": torch.optim.lr_scheduler.PolynomialLR(
            self.optimizers["segmenter"], total_iters=self.cfg.train.steps - self.freeze_steps, power=p.poly_power)}

    def train_step(self, batch, ctx: StepContext):
        p, n = self.params, self.nets
        x_s, y_s, x_t = batch["image"], batch["label"].long(), batch["target_image"]
        train_m = ctx.step >= self.freeze_steps  # the same on every rank, so DDP stays in step
        # Nets that this update holds fixed run unwrapped: a DDP forward whose parameters get no gradient
        # would leave DDP waiting for them.
        m = unwrap(n["segmenter"])
        seg = n["segmenter"] if train_m else m
        set_requires_grad(m, train_m)
        fixed = {k: unwrap(n[k]) for k in ("d_s", "d_t", "df_s", "df_t")}
        set_requires_grad(list(fixed.values()), False)

        with ctx.autocast():
            with torch.no_grad():  # pseudo-labels and real-image features from M as it is now
                m.eval()
                logits_s, emb_s = m(x_s, with_embedding=True)
                logits_t, emb_t = m(x_t, with_embedding=True)
            n["segmenter"].train(train_m)  # a frozen M stays in eval mode: its batch-norm statistics too
            fake_t, fake_s = n["g_st"](x_s), n["g_ts"](x_t)
            rec_s, rec_t = n["g_ts"](fake_t), n["g_st"](fake_s)
            logits_ft, emb_ft = seg(fake_t, with_embedding=True)
            logits_fs, emb_fs = seg(fake_s, with_embedding=True)
            losses = {
                "gan_image": self.gan.generator(fixed["d_t"](fake_t)) + self.gan.generator(fixed["d_s"](fake_s)),
                "gan_feat": self.gan.generator(fixed["df_t"](emb_ft)) + self.gan.generator(fixed["df_s"](emb_fs)),
                "cycle": F.l1_loss(rec_s.float(), x_s) + F.l1_loss(rec_t.float(), x_t),
                "sem": F.cross_entropy(logits_ft.float(), logits_s.argmax(1))
                       + F.cross_entropy(logits_fs.float(), logits_t.argmax(1)),
                "ce": F.cross_entropy(logits_ft.float(), y_s, ignore_index=IGNORE_INDEX),
            }
        total = (losses["gan_image"] + p.lambda_feat * losses["gan_feat"] + p.lambda_cycle * losses["cycle"]
                 + p.lambda_sem * losses["sem"] + p.lambda_ce * losses["ce"])
        self.optimizers["generators"].zero_grad(set_to_none=True)
        self.optimizers["segmenter"].zero_grad(set_to_none=True)
        total.backward()
        self.optimizers["generators"].step()
        if train_m:
            self.optimizers["segmenter"].step()
            self.schedulers["segmenter"].step()

        set_requires_grad([n[k] for k in fixed], True)
        pooled_t = self.buffers["pool_t"].query(fake_t.detach())
        pooled_s = self.buffers["pool_s"].query(fake_s.detach())
        with ctx.autocast():
            losses["d_image"] = (self.gan.discriminator(n["d_t"](x_t), n["d_t"](pooled_t))
                                 + self.gan.discriminator(n["d_s"](x_s), n["d_s"](pooled_s)))
            losses["d_feat"] = (self.gan.discriminator(n["df_t"](emb_t), n["df_t"](emb_ft.detach()))
                                + self.gan.discriminator(n["df_s"](emb_s), n["df_s"](emb_fs.detach())))
        self.optimizers["discriminators"].zero_grad(set_to_none=True)
        (losses["d_image"] + losses["d_feat"]).backward()
        self.optimizers["discriminators"].step()
        losses["total"] = total
        return {k: v.detach() for k, v in losses.items()}

    def translator(self) -> torch.nn.Module:
        """Source -> target, for `rayda translate`."""
        return unwrap(self.nets["g_st"])

    @torch.no_grad()
    def visuals(self, batch):
        g_st, g_ts = unwrap(self.nets["g_st"]), unwrap(self.nets["g_ts"])
        x_s, x_t = batch["image"][:2], batch["target_image"][:2]
        fake_t, fake_s = g_st(x_s), g_ts(x_t)
        rows = []
        for x, fake, rec in ((x_s, fake_t, g_ts(fake_t)), (x_t, fake_s, g_st(fake_s))):
            for i in range(len(x)):
                rows.append([to_uint8_image(t[i]) for t in (x, fake, rec)])
        return ["input", "translated", "reconstructed"], rows
