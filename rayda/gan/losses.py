"""Adversarial losses on discriminator logits, and UNIT's latent KL term."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

Logits = torch.Tensor | Sequence[torch.Tensor]  # one logit map, or one per discriminator scale


class GANLoss:
    """Least-squares (LSGAN, Mao et al. 2017; CycleGAN's and seed 003's choice) or BCE-with-logits
    (the non-saturating loss of Goodfellow et al. 2014) GAN loss, targets 1 for real, 0 for fake.

    Each term is a mean over the logit map; a list of maps (multi-scale) sums the per-scale means,
    as UNIT's/MUNIT's MsImageDis does. Computed in float32, also under bf16 autocast.
    """

    def __init__(self, mode: Literal["lsgan", "bce"] = "lsgan"):
        if mode not in ("lsgan", "bce"):
            raise ValueError(f"unknown GAN loss {mode!r}; choose 'lsgan' or 'bce'")
        self.mode = mode

    def _term(self, logits: Logits, target: float) -> torch.Tensor:
        maps = [logits] if isinstance(logits, torch.Tensor) else list(logits)
        if not maps:
            raise ValueError("no logits")
        loss = F.mse_loss if self.mode == "lsgan" else F.binary_cross_entropy_with_logits
        return sum(loss(m.float(), torch.full_like(m, target, dtype=torch.float32)) for m in maps)

    def discriminator(self, real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
        """D's loss: 0.5 * (real term + fake term), halved as in CycleGAN's reference code so D
        learns at half G's pace. Pass fakes detached (or from an ImagePool)."""
        return 0.5 * (self._term(real_logits, 1.0) + self._term(fake_logits, 0.0))

    def generator(self, fake_logits: Logits) -> torch.Tensor:
        """G's loss: fakes scored against the real target (the non-saturating form for BCE)."""
        return self._term(fake_logits, 1.0)


def latent_kl(mu: torch.Tensor) -> torch.Tensor:
    """UNIT's KL term for q(z|x) = N(mu, I) against the prior p(z) = N(0, I): mean(mu ** 2).

    The exact divergence is 0.5 * sum(mu ** 2) per image (the unit variances cancel). UNIT's
    public code computes torch.mean(mu ** 2) (NIPS branch, COCOGANTrainer._compute_kl, there on
    the noisy code mu + n, whose expected gradient is the same; the 2018 trainer on mu), and its
    loss weights (paper lambda_1 = lambda_3 = 0.1 beside lambda_2 = lambda_4 = 100 for the L1
    terms) are set for that scale, so this is what we compute. A mean, unlike the sum, does not
    grow with the latent's resolution; 0.5 * mu[0].numel() times it is the exact per-image KL.
    """
    return mu.float().pow(2).mean()
