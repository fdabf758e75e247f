"""Label-preserving colour operators of CSA (seed 000, Appendix A; METHODS.md card 1), differentiable.

Images are float [N, 3, H, W] in [0, 1]; every operator takes one alpha per image ([N], or a float),
clipped to [-1, 1], and clips its output to [0, 1]:
  brightness  x*(1-a) + a                  if a >= 0, else x + x*a
  saturation  x + (x-L)*s, per pixel, with L = (max_rgb + min_rgb)/2, delta = max_rgb - min_rgb,
              S = delta/(2L) if L < 0.5 else delta/(2-2L),
              s = 1/S - 1 if a + S >= 1 else 1/(1-a) - 1
              (the card's two branches, x + (x-L)*s for s > 0 and L + (x-L)*(1+s) otherwise, are the
              same expression, so one is computed)
  contrast    m + (x-m)/(1-a)              if a >= 0, else m + (x-m)*(1+a), m = the image's mean value
  adjust      brightness(saturation(contrast(x)))   (ops = op_b ∘ op_s ∘ op_c)
Random alphas are N(0, sigma) with P(|alpha| <= 1) = p: sigma = 1 / (sqrt(2) * erfinv(p)).

Every division has a denominator kept away from zero in both branches of each torch.where: autograd
multiplies the unselected branch's gradient by zero, and 0 * inf is NaN.
"""
from __future__ import annotations

import math

import torch

EPS = 1e-6                 # floor of the saturation denominators (black, white and grey pixels)
CONTRAST_MAX = 1 - 1e-3    # contrast alpha is clipped below 1: 1/(1 - a) stays finite (gain <= 1000)


def _alpha(a: torch.Tensor | float, x: torch.Tensor, hi: float = 1.0) -> torch.Tensor:
    """Per-image alpha as [N, 1, 1, 1] in x's dtype and device, clipped to [-1, hi]."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got {tuple(x.shape)}")
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    if a.dim() == 0:
        a = a.expand(x.shape[0])
    if a.shape != (x.shape[0],):
        raise ValueError(f"expected one alpha per image, shape ({x.shape[0]},), got {tuple(a.shape)}")
    return a.clamp(-1.0, hi).view(-1, 1, 1, 1)


def brightness(x: torch.Tensor, a: torch.Tensor | float) -> torch.Tensor:
    a = _alpha(a, x)
    return torch.where(a >= 0, x * (1 - a) + a, x + x * a).clamp(0, 1)


def saturation(x: torch.Tensor, a: torch.Tensor | float) -> torch.Tensor:
    a = _alpha(a, x)
    hi, lo = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
    lum, delta = (hi + lo) / 2, hi - lo
    sat = torch.where(lum < 0.5, delta / (2 * lum).clamp_min(EPS), delta / (2 - 2 * lum).clamp_min(EPS))
    s = torch.where(a + sat >= 1, 1 / sat.clamp_min(EPS) - 1, 1 / (1 - a).clamp_min(EPS) - 1)
    return (x + (x - lum) * s).clamp(0, 1)


def contrast(x: torch.Tensor, a: torch.Tensor | float) -> torch.Tensor:
    a = _alpha(a, x, hi=CONTRAST_MAX)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(a >= 0, m + (x - m) / (1 - a), m + (x - m) * (1 + a)).clamp(0, 1)


def adjust(x: torch.Tensor, a_b, a_s, a_c) -> torch.Tensor:
    """ops(x, alpha) = op_b(op_s(op_c(x, a_c), a_s), a_b): contrast first, brightness last."""
    return brightness(saturation(contrast(x, a_c), a_s), a_b)


def sigma_for(p: float) -> float:
    """The sigma of N(0, sigma) that puts probability p inside [-1, 1] (p = 0.99 gives ~0.388)."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie strictly between 0 and 1 (the probability that |alpha| <= 1), got {p}")
    return 1 / (math.sqrt(2) * torch.special.erfinv(torch.tensor(p, dtype=torch.float64)).item())


def random_alphas(n: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, 3] alphas (brightness, saturation, contrast) ~ N(0, sigma_for(p)), clipped to [-1, 1].
    Drawn on the CPU (torch's global RNG unless a generator is given): the same draws on any device."""
    sigma = sigma_for(p)
    return (torch.randn(n, 3, generator=generator) * sigma).clamp(-1, 1)


def random_adjust(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of x ([0, 1]) under its own random colour variant: `randn(X, ops)` of the paper."""
    a = random_alphas(x.shape[0], p, generator).to(x)
    return adjust(x, a[:, 0], a[:, 1], a[:, 2])
