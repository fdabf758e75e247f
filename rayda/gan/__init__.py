"""Reusable GAN pieces for the adversarial methods, each written once.

Images are float NCHW in [-1, 1]. Every network class has `SIZES` presets ("full": the papers'
width, "cpu": the same layout narrower), built with `sized(cls, size, **overrides)`.

| piece                                  | from                                              |
|----------------------------------------|---------------------------------------------------|
| GANLoss("lsgan" / "bce")               | LSGAN (Mao et al.), CycleGAN's 0.5 * D loss        |
| latent_kl(mu)                          | UNIT's code: mean(mu ** 2)                         |
| ImagePool(50)                          | Shrivastava et al. 2017, CycleGAN                  |
| ResnetGenerator(ngf, n_blocks)         | CycleGAN                                           |
| PatchDiscriminator(n_layers, stride)   | CycleGAN; seed 003 (5 stride-2 / stride-1 convs)   |
| MultiScaleDiscriminator(n_scales)      | pix2pixHD, UNIT/MUNIT code                         |
| UNITGenerators (shared E / G blocks)   | UNIT (Liu et al. 2017), NIPS code layout           |
| LSDGenerator, LSDDiscriminator         | LSD (seed 001), the authors' code layout           |
| init_weights, set_requires_grad        | CycleGAN                                           |
"""
from __future__ import annotations

from .losses import GANLoss, latent_kl
from .lsd import LSDDiscriminator, LSDGenerator
from .networks import (MultiScaleDiscriminator, PatchDiscriminator, ResBlock, ResnetGenerator,
                       init_weights, set_requires_grad, sized)
from .pool import ImagePool
from .unit import DOMAINS, UNITGenerators

__all__ = ["DOMAINS", "GANLoss", "ImagePool", "LSDDiscriminator", "LSDGenerator", "MultiScaleDiscriminator", "PatchDiscriminator", "ResBlock",
           "ResnetGenerator", "UNITGenerators", "init_weights", "latent_kl", "set_requires_grad", "sized"]
