"""UNIT (seed 004, card 5): shared-latent image translation, trained on random or SP-Feat pairs.

Losses and defaults from the UNIT paper and its street-scene config where the seed is silent:
  generators: λ_gan (D_T(G_T(z_s)), D_S(G_S(z_t)))            GAN 10
            + λ_recon |G_S(E_S(x_s)) - x_s| + |G_T(E_T(x_t)) - x_t|   reconstruction 100
            + λ_kl (KL(z_s) + KL(z_t))                            KL 0.1 (mean(mu^2), as UNIT's code)
            + λ_cycle_kl (KL of the translations' latents)         0.1
            + λ_cycle |G_S(E_T(x_s->t)) - x_s| + |G_T(E_S(x_t->s)) - x_t|   cycle 100
  discriminators: real vs translated, then. Adam(1e-4, beta1 0.5), weight decay 1e-4, lr halved every
  `lr_step` steps. The pairing (random or SP-Feat) is the loader's: `data.pairing`.
UNIT trains no segmenter: `rayda translate` its checkpoint, then `rayda train` a segmenter on the result.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from rayda.config import Section
from rayda.gan import GANLoss, PatchDiscriminator, UNITGenerators, latent_kl, set_requires_grad, sized
from rayda.methods.base import Method, StepContext, unwrap
from rayda.report import to_uint8_image


class UNITParams(Section):
    lambda_gan: float = Field(10.0, ge=0)
    lambda_recon: float = Field(100.0, ge=0)
    lambda_kl: float = Field(0.1, ge=0)
    lambda_cycle: float = Field(100.0, ge=0)
    lambda_cycle_kl: float = Field(0.1, ge=0)
    gan_mode: Literal["lsgan", "bce"] = "lsgan"
    lr: float = Field(1e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    lr_step: int = Field(100_000, gt=0)            # lr x 0.5 every lr_step steps
    disc_layers: int = Field(4, gt=0)


class _SourceToTarget(nn.Module):
    def __init__(self, generators: UNITGenerators):
        super().__init__()
        self.generators = generators

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generators.translate(x, "s", "t")


class UNIT(Method):
    name = "unit"
    Params = UNITParams
    needs_target = True
    has_segmenter = False

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        size, p = cfg.model.size, self.params
        self.nets = {"generators": sized(UNITGenerators, size),
                     "d_s": sized(PatchDiscriminator, size, n_layers=p.disc_layers, norm="none"),
                     "d_t": sized(PatchDiscriminator, size, n_layers=p.disc_layers, norm="none")}
        self.gan = GANLoss(p.gan_mode)

    def configure_optimizers(self) -> None:
        p, n = self.params, self.nets
        adam = lambda params: torch.optim.Adam(params, lr=p.lr, betas=(p.beta1, 0.999),  # noqa: E731
                                               weight_decay=p.weight_decay)
        self.optimizers = {"generators": adam(n["generators"].parameters()),
                           "discriminators": adam([q for k in ("d_s", "d_t") for q in n[k].parameters()])}
        self.schedulers = {k: torch.optim.lr_scheduler.StepLR(o, step_size=p.lr_step, gamma=0.5)
                           for k, o in self.optimizers.items()}

    def train_step(self, batch, ctx: StepContext):
        p, n, g = self.params, self.nets, self.nets["generators"]
        x_s, x_t = batch["image"], batch["target_image"]
        fixed = [unwrap(n["d_s"]), unwrap(n["d_t"])]  # held fixed in the generator update: run unwrapped
        set_requires_grad(fixed, False)
        with ctx.autocast():
            mu_s, out_s = g(x_s, "s")                       # {s: reconstruction, t: translation}
            mu_t, out_t = g(x_t, "t")
            mu_st, cyc_s = g(out_s["t"], "t", dsts=("s",))  # back to the source domain
            mu_ts, cyc_t = g(out_t["s"], "s", dsts=("t",))
            losses = {
                "gan": self.gan.generator(fixed[1](out_s["t"])) + self.gan.generator(fixed[0](out_t["s"])),
                "recon": F.l1_loss(out_s["s"].float(), x_s) + F.l1_loss(out_t["t"].float(), x_t),
                "kl": latent_kl(mu_s.float()) + latent_kl(mu_t.float()),
                "cycle_kl": latent_kl(mu_st.float()) + latent_kl(mu_ts.float()),
                "cycle": F.l1_loss(cyc_s["s"].float(), x_s) + F.l1_loss(cyc_t["t"].float(), x_t),
            }
        total = (p.lambda_gan * losses["gan"] + p.lambda_recon * losses["recon"] + p.lambda_kl * losses["kl"]
                 + p.lambda_cycle_kl * losses["cycle_kl"] + p.lambda_cycle * losses["cycle"])
        self.optimizers["generators"].zero_grad(set_to_none=True)
        total.backward()
        self.optimizers["generators"].step()

        set_requires_grad([n["d_s"], n["d_t"]], True)
        with ctx.autocast():
            losses["d"] = (self.gan.discriminator(n["d_t"](x_t), n["d_t"](out_s["t"].detach()))
                           + self.gan.discriminator(n["d_s"](x_s), n["d_s"](out_t["s"].detach())))
        self.optimizers["discriminators"].zero_grad(set_to_none=True)
        losses["d"].backward()
        self.optimizers["discriminators"].step()
        for s in self.schedulers.values():
            s.step()
        losses["total"] = total
        return {k: v.detach() for k, v in losses.items()}

    def translator(self) -> nn.Module:
        """Source -> target (latent mean, no noise), for `rayda translate`."""
        return _SourceToTarget(unwrap(self.nets["generators"]))

    @torch.no_grad()
    def visuals(self, batch):
        g = unwrap(self.nets["generators"])
        was_training = g.training
        g.eval()  # translations from the latent mean, as exported
        rows = []
        for x, src, dst in ((batch["image"][:2], "s", "t"), (batch["target_image"][:2], "t", "s")):
            fake = g.translate(x, src, dst)
            rec = g.translate(fake, dst, src)
            rows += [[to_uint8_image(t[i]) for t in (x, fake, rec)] for i in range(len(x))]
        g.train(was_training)
        return ["input", "translated", "reconstructed"], rows
