"""LSD (seed 001, card 2): learning from synthetic data by aligning embeddings through image reconstruction.

Nets: the segmenter = F (its feature extractor; the last feature is the embedding) and C (its decoder);
G, embedding -> image; D, a patch discriminator with a 4-way head {src-real, src-fake, tgt-real, tgt-fake}
and an auxiliary C-class segmentation head (source only). Each step, on a triplet (x_s, y_s, x_t):
  1. D:    L_D = L^s_adv,D + L^t_adv,D + L^s_aux        real / G(F(x)) -> {src,tgt}-{real,fake}; aux on real x_s
  2. G:    L_G = L^s_adv,G + L^t_adv,G + L^s_rec + L^t_rec   G(F(x)) -> its own domain's real class; L1 to x
  3. F, C: L_F = L_seg + alpha L^s_aux + beta (L^s_adv,F + L^t_adv,F)
           aux on G(F(x_s)) (the paper: D labels "the generated source image"); G(F(x_s)) -> tgt-real,
           G(F(x_t)) -> src-real.
Only the named net is updated by its loss; the others are held fixed. alpha = beta = 0 is source-only.
Every term is a mean over pixels (the released code sums cross-entropies over pixels, which would change
what alpha and beta weigh against; the paper writes plain sums of losses).
Ablations (paper Table 4), config only: alpha = 0 (no auxiliary loss); d_type: image (one 4-way decision
per image instead of per patch); d_type: feature (no G: D tells source from target embeddings, F is asked to
swap them, as FCNs in the wild's global alignment; alpha then has no head to act on and is unused).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from rayda.classes import IGNORE_INDEX
from rayda.config import Section
from rayda.gan import LSDDiscriminator, LSDGenerator, set_requires_grad, sized
from rayda.methods.base import Method, StepContext, unwrap
from rayda.models import build_segmenter
from rayda.report import to_uint8_image

SRC_REAL, SRC_FAKE, TGT_REAL, TGT_FAKE = range(4)  # D's domain/realness classes
SRC, TGT = range(2)                                # the feature-space D's classes


class LSDParams(Section):
    # The paper gives no values for alpha, beta or Adam's betas; these are the authors' released code's
    # (LSD-seg train.py: c_weight 0.1, adv_weight 0.1, F beta1 0.9, G and D beta1 0.7).
    alpha: float = Field(0.1, ge=0)                # L^s_aux weight in L_F
    beta: float = Field(0.1, ge=0)                 # cross-domain adversarial weight in L_F
    fc_lr: float = Field(1e-5, gt=0)               # Adam for F and C (paper)
    fc_beta1: float = Field(0.9, ge=0, lt=1)
    gd_lr: float = Field(2e-4, gt=0)               # Adam for G and D (paper)
    gd_beta1: float = Field(0.7, ge=0, lt=1)
    d_type: Literal["patch", "image", "feature"] = "patch"  # feature: no G, no aux head, alpha unused
    dropout: float = Field(0.5, ge=0, lt=1)        # G's dropout in place of a noise input (paper); pix2pix's rate


def domain_ce(logits: torch.Tensor, domain: int) -> torch.Tensor:
    """Cross-entropy of every cell of D's domain map against one class."""
    target = torch.full((logits.shape[0], *logits.shape[2:]), domain, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)


def aux_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy of D's auxiliary head against the labels resized (nearest) to D's output grid.
    A grid with no labeled cell gives 0, not NaN: the coarse grid of a mostly void crop can have none."""
    y = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
    total = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (y != IGNORE_INDEX).sum().clamp(min=1)


class LSD(Method):
    name = "lsd"
    Params = LSDParams
    needs_target = True

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        p, m = self.params, cfg.model
        seg = build_segmenter(m.arch, classes.num_classes, size=m.size, pretrained=m.pretrained, weights=m.weights)
        self.nets = {"segmenter": seg}
        if p.d_type == "feature":  # D on the embedding (stride 1), source vs target, no auxiliary head
            self.nets["d"] = sized(LSDDiscriminator, m.size, in_channels=seg.embed_channels, num_classes=0,
                                   n_domains=2, n_down=0)
        else:
            self.nets["g"] = sized(LSDGenerator, m.size, in_channels=seg.embed_channels, stride=seg.embed_stride,
                                   dropout=p.dropout)
            self.nets["d"] = sized(LSDDiscriminator, m.size, num_classes=classes.num_classes,
                                   patch=p.d_type == "patch")

    def configure_optimizers(self) -> None:
        p = self.params
        self.optimizers = {"segmenter": torch.optim.Adam(self.nets["segmenter"].parameters(), lr=p.fc_lr,
                                                         betas=(p.fc_beta1, 0.999))}
        for k in ("g", "d"):
            if k in self.nets:
                self.optimizers[k] = torch.optim.Adam(self.nets[k].parameters(), lr=p.gd_lr, betas=(p.gd_beta1, 0.999))

    def train_step(self, batch, ctx: StepContext):
        x_s, y_s, x_t = batch["image"], batch["label"].long(), batch["target_image"]
        for net in self.nets.values():
            net.train()
        # F and C run once; their graph is kept for update 3, as F does not change before it.
        with ctx.autocast():
            logits_s, emb_s = self.nets["segmenter"](x_s, with_embedding=True)
            _, emb_t = self.nets["segmenter"](x_t, with_embedding=True)
        if self.params.d_type == "feature":
            losses = self.update_d_feature(emb_s.detach(), emb_t.detach(), ctx)
            losses |= self.update_fc_feature(logits_s, y_s, emb_s, emb_t, ctx)
            return losses
        # G runs once for updates 1 and 2 (D sees its output detached), as G does not change before 2.
        fake_s, fake_t = self.generate(emb_s.detach(), emb_t.detach(), x_s.shape[-2:], ctx)
        losses = self.update_d(x_s, y_s, x_t, fake_s.detach(), fake_t.detach(), ctx)
        losses |= self.update_g(x_s, x_t, fake_s, fake_t, ctx)
        losses |= self.update_fc(logits_s, y_s, emb_s, emb_t, ctx)
        return losses

    # -- the three updates; a net held fixed runs unwrapped (a DDP net that gets no gradient hangs DDP) --
    def generate(self, emb_s, emb_t, size, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """G(F(x_s)), G(F(x_t)) at the input size, from embeddings F is not to learn from."""
        set_requires_grad(self.nets["g"], True)
        with ctx.autocast():
            fake = _reconstruct(self.nets["g"], emb_s, emb_t, size)
        return fake.float().chunk(2)

    def update_d(self, x_s, y_s, x_t, fake_s, fake_t, ctx: StepContext) -> dict[str, torch.Tensor]:
        """1. L_D = L^s_adv,D + L^t_adv,D + L^s_aux, on D alone."""
        d = self.nets["d"]
        set_requires_grad(d, True)
        with ctx.autocast():
            domain, aux = d(torch.cat([x_s, fake_s, x_t, fake_t]))  # instance norm: per image, one pass
        real_s, fake_s_, real_t, fake_t_ = domain.chunk(4)
        losses = {"d_adv": domain_ce(real_s, SRC_REAL) + domain_ce(fake_s_, SRC_FAKE)     # L^s_adv,D
                           + domain_ce(real_t, TGT_REAL) + domain_ce(fake_t_, TGT_FAKE),  # L^t_adv,D
                  "d_aux": aux_ce(aux.chunk(4)[0], y_s)}                                # L^s_aux, real x_s
        losses["d_total"] = losses["d_adv"] + losses["d_aux"]
        self._step("d", losses["d_total"])
        return _detached(losses)

    def update_g(self, x_s, x_t, fake_s, fake_t, ctx: StepContext) -> dict[str, torch.Tensor]:
        """2. L_G = L^s_adv,G + L^t_adv,G + L^s_rec + L^t_rec, on G alone (D fixed, fakes from detached F)."""
        d = unwrap(self.nets["d"])
        set_requires_grad(d, False)
        with ctx.autocast():
            domain, _ = d(torch.cat([fake_s, fake_t]))
        dom_s, dom_t = domain.chunk(2)
        losses = {"g_adv": domain_ce(dom_s, SRC_REAL) + domain_ce(dom_t, TGT_REAL),
                  "rec": F.l1_loss(fake_s, x_s) + F.l1_loss(fake_t, x_t)}
        losses["g_total"] = losses["g_adv"] + losses["rec"]
        self._step("g", losses["g_total"])
        return _detached(losses)

    def update_fc(self, logits_s, y_s, emb_s, emb_t, ctx: StepContext) -> dict[str, torch.Tensor]:
        """3. L_F = L_seg + alpha L^s_aux + beta (L^s_adv,F + L^t_adv,F), on F and C (G and D fixed)."""
        p = self.params
        g, d = unwrap(self.nets["g"]), unwrap(self.nets["d"])
        set_requires_grad([g, d], False)
        with ctx.autocast():
            domain, aux = d(_reconstruct(g, emb_s, emb_t, logits_s.shape[-2:]))
        dom_s, dom_t = domain.chunk(2)
        losses = {"seg": F.cross_entropy(logits_s.float(), y_s, ignore_index=IGNORE_INDEX),
                  "f_aux": aux_ce(aux.chunk(2)[0], y_s),                            # D labels G(F(x_s))
                  "f_adv": domain_ce(dom_s, TGT_REAL) + domain_ce(dom_t, SRC_REAL)}  # cross-domain
        losses["f_total"] = losses["seg"] + p.alpha * losses["f_aux"] + p.beta * losses["f_adv"]
        self._step("segmenter", losses["f_total"])
        return _detached(losses)

    # -- the feature-space D ablation: no G; D and F play on the embedding itself --------------------------
    def update_d_feature(self, emb_s, emb_t, ctx: StepContext) -> dict[str, torch.Tensor]:
        d = self.nets["d"]
        set_requires_grad(d, True)
        with ctx.autocast():
            dom_s, dom_t = d(torch.cat([emb_s, emb_t]))[0].chunk(2)
        losses = {"d_adv": domain_ce(dom_s, SRC) + domain_ce(dom_t, TGT)}
        losses["d_total"] = losses["d_adv"]
        self._step("d", losses["d_total"])
        return _detached(losses)

    def update_fc_feature(self, logits_s, y_s, emb_s, emb_t, ctx: StepContext) -> dict[str, torch.Tensor]:
        d = unwrap(self.nets["d"])
        set_requires_grad(d, False)
        with ctx.autocast():
            dom_s, dom_t = d(torch.cat([emb_s, emb_t]))[0].chunk(2)
        losses = {"seg": F.cross_entropy(logits_s.float(), y_s, ignore_index=IGNORE_INDEX),
                  "f_adv": domain_ce(dom_s, TGT) + domain_ce(dom_t, SRC)}
        losses["f_total"] = losses["seg"] + self.params.beta * losses["f_adv"]
        self._step("segmenter", losses["f_total"])
        return _detached(losses)

    def _step(self, name: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def visuals(self, batch):
        """Source and target images beside G(F(x)); rank 0 only, so unwrapped nets, in eval mode."""
        if "g" not in self.nets:
            return None
        seg, g = unwrap(self.nets["segmenter"]), unwrap(self.nets["g"])
        modes = {net: net.training for net in (seg, g)}
        for net in modes:
            net.eval()
        rows = []
        for x in (batch["image"][:2], batch["target_image"][:2]):
            fake = g(seg.encode(x))[..., :x.shape[-2], :x.shape[-1]]
            rows += [[to_uint8_image(x[i]), to_uint8_image(fake[i])] for i in range(len(x))]
        for net, mode in modes.items():
            net.train(mode)
        return ["input", "G(F(x))"], rows


def _reconstruct(g, emb_s: torch.Tensor, emb_t: torch.Tensor, size) -> torch.Tensor:
    """[G(F(x_s)); G(F(x_t))] cropped to the input size (the segmenter pads its input bottom/right)."""
    return g(torch.cat([emb_s, emb_t]))[..., :size[0], :size[1]]


def _detached(losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in losses.items()}
