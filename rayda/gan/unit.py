"""UNIT's generators (Liu, Breuel & Kautz, NIPS 2017): two VAE encoders and two decoders around one
shared latent space, with the encoders' last and the decoders' first residual blocks shared."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import nn

from .networks import ResBlock, features_to_image, image_to_features, init_weights

Domain = Literal["s", "t"]
DOMAINS: tuple[Domain, ...] = ("s", "t")


class UNITGenerators(nn.Module):
    """E_s, E_t: image -> latent mean mu; G_s, G_t: latent -> image in [-1, 1].

    The layout is the one of UNIT's NIPS code (branch version_02, COCOResGen: street-scene config
    3 unshared + 1 shared residual blocks on each side, 2 downsamplings, width 64), built from the
    same layers as CycleGAN's generator: E = image_to_features + n_res private ResBlocks + n_shared
    shared ones; G = n_shared shared ResBlocks + n_res private ones + features_to_image. Two
    layers follow UNIT's 2018 code (and CycleGAN) instead: the first conv has IN + ReLU (NIPS code:
    LeakyReLU, no norm) and the output conv is a reflection-padded 7x7 (NIPS code: 1x1).
    `E_s.shared is E_t.shared` and `G_s.shared is G_t.shared`: one module, one set of parameters.

    The latent is Gaussian with unit variance, so an encoder outputs only its mean; `sample` adds
    N(0, I) noise in training mode and returns the mean in eval mode (as UNIT's code does).
    Under DDP call the wrapped module itself (its forward); encode/decode/translate bypass DDP.
    A DDP step must reach both domains' private parts (UNIT's full update does), or the wrapper
    needs find_unused_parameters=True.
    H and W must be multiples of 2**n_down.
    """

    SIZES: ClassVar[dict[str, dict[str, int]]] = {"full": {"dim": 64, "n_res": 3, "n_shared": 1},
                                                  "cpu": {"dim": 16, "n_res": 1, "n_shared": 1}}

    def __init__(self, in_channels: int = 3, dim: int = 64, n_down: int = 2, n_res: int = 3,
                 n_shared: int = 1):
        super().__init__()
        width = dim * 2**n_down
        enc_shared = nn.Sequential(*(ResBlock(width) for _ in range(n_shared)))
        dec_shared = nn.Sequential(*(ResBlock(width) for _ in range(n_shared)))

        def encoder() -> nn.Sequential:
            return nn.Sequential(OrderedDict(
                front=image_to_features(in_channels, dim, n_down),
                private=nn.Sequential(*(ResBlock(width) for _ in range(n_res))),
                shared=enc_shared))

        def decoder() -> nn.Sequential:
            return nn.Sequential(OrderedDict(
                shared=dec_shared,
                private=nn.Sequential(*(ResBlock(width) for _ in range(n_res))),
                back=features_to_image(dim, in_channels, n_down)))

        self.E_s, self.E_t = encoder(), encoder()
        self.G_s, self.G_t = decoder(), decoder()
        init_weights(self)

    def _net(self, kind: str, domain: Domain) -> nn.Module:
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; choose one of {DOMAINS}")
        return getattr(self, f"{kind}_{domain}")

    def encode(self, x: torch.Tensor, domain: Domain) -> torch.Tensor:
        """The latent mean mu: [N, dim * 2**n_down, H / 2**n_down, W / 2**n_down]."""
        return self._net("E", domain)(x)

    def sample(self, mu: torch.Tensor) -> torch.Tensor:
        """z = mu + N(0, I) in training mode, mu in eval mode."""
        return mu + torch.randn_like(mu) if self.training else mu

    def decode(self, z: torch.Tensor, domain: Domain) -> torch.Tensor:
        return self._net("G", domain)(z)

    def translate(self, x: torch.Tensor, src: Domain, dst: Domain) -> torch.Tensor:
        return self.decode(self.sample(self.encode(x, src)), dst)

    def forward(self, x: torch.Tensor, src: Domain,
                dsts: Sequence[Domain] = DOMAINS) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(mu, {dst: G_dst(z)}) with one z drawn for all decoders, as UNIT's trainer reuses the
        same noise for the within-domain reconstruction and the translation."""
        mu = self.encode(x, src)
        z = self.sample(mu)
        return mu, {d: self.decode(z, d) for d in dsts}
