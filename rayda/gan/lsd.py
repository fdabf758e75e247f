"""LSD's networks (Sankaranarayanan et al., CVPR 2018): G, embedding -> image, and D, a discriminator with a
4-way domain/realness head and an auxiliary segmentation head.

The paper leaves the layouts to its supplement; these follow the authors' released code (LSD-seg,
fcn8s_LSD.py) in kind: G upsamples the embedding with fractionally strided convs, instance norm, ReLU and
residual blocks, with dropout in place of a noise input; D is a stride-8 conv trunk with instance norm and
LeakyReLU(0.2) and two 3x3 conv heads on the same features.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from .networks import ResBlock, init_weights


class LSDGenerator(nn.Module):
    """G: embedding [N, in_channels, h, w] -> image [N, 3, h * stride, w * stride] in [-1, 1].

    A conv3 stem, then log2(stride) 2x upsamplings (ConvTranspose 4/2/1, IN, ReLU) with widths halving from
    8 ngf down to ngf, each below full resolution followed by dropout and n_blocks residual blocks; a
    reflection-padded conv7 and tanh make the image. Dropout (after the stem too) is active in training
    mode only. H and W of the output are the embedding's times stride.
    """

    SIZES: ClassVar[dict[str, dict[str, int]]] = {"full": {"ngf": 64, "n_blocks": 2},
                                                  "cpu": {"ngf": 16, "n_blocks": 1}}

    def __init__(self, in_channels: int, stride: int, ngf: int = 64, n_blocks: int = 2, dropout: float = 0.5,
                 out_channels: int = 3):
        super().__init__()
        n_up = round(math.log2(stride)) if stride > 0 else -1
        if n_up < 1 or 2**n_up != stride:
            raise ValueError(f"LSDGenerator upsamples by a power of 2 >= 2, got stride {stride}")
        width = [max(ngf, ngf * 8 >> i) for i in range(n_up + 1)]
        # The embedding can be a single row (FCN-8s: stride 32), so the stem pads with zeros, not reflection.
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width[0], 3, padding=1), nn.InstanceNorm2d(width[0]),
                                   nn.ReLU(True), nn.Dropout(dropout)]
        for i in range(1, n_up + 1):
            layers += [nn.ConvTranspose2d(width[i - 1], width[i], 4, stride=2, padding=1),
                       nn.InstanceNorm2d(width[i]), nn.ReLU(True)]
            if i < n_up:  # at full resolution: no residual blocks (costly), no dropout (it would drop pixels)
                layers += [nn.Dropout(dropout), *(ResBlock(width[i]) for _ in range(n_blocks))]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width[-1], out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.model(embedding)


class LSDDiscriminator(nn.Module):
    """D: input -> (domain logits [N, n_domains, h, w], auxiliary class logits [N, num_classes, h, w] or None).

    Trunk: n_down stride-2 conv4s (widths ndf, 2ndf, 4ndf, ... capped at 8ndf; IN after all but the first)
    and one stride-1 conv3 at 4 ndf, each with LeakyReLU(0.2). patch=True: the domain head is a conv3, one
    4-way decision per patch (the paper's D); patch=False: global average pooling and a linear layer, one
    decision per image (the paper's "w/o Patch discriminator" ablation, h = w = 1). The auxiliary head is a
    conv3 in both cases: the auxiliary loss is pixel-wise by definition. num_classes=0 drops it.
    """

    SIZES: ClassVar[dict[str, dict[str, int]]] = {"full": {"ndf": 64}, "cpu": {"ndf": 16}}

    def __init__(self, in_channels: int = 3, num_classes: int = 19, n_domains: int = 4, ndf: int = 64,
                 n_down: int = 3, patch: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(n_down):
            c_out = ndf * min(2**i, 8)
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                       nn.InstanceNorm2d(c_out) if i > 0 else nn.Identity(), nn.LeakyReLU(0.2, True)]
            c_in = c_out
        width = 4 * ndf
        layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.InstanceNorm2d(width), nn.LeakyReLU(0.2, True)]
        self.trunk = nn.Sequential(*layers)
        self.domain_head = (nn.Conv2d(width, n_domains, 3, padding=1) if patch
                            else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, n_domains, 1)))
        self.aux_head = nn.Conv2d(width, num_classes, 3, padding=1) if num_classes else None
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.trunk(x)
        return self.domain_head(h), (self.aux_head(h) if self.aux_head is not None else None)
