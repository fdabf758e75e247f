"""The VGG16 trunk shared by FCN-8s and DeepLab-v2.

Built here rather than taken from timm's `features_only` vgg16 because FCN needs the
pooled pool3/pool4 outputs and the fc6/fc7 classifier (which `features_only` drops),
DeepLab-v2 re-strides pool4/pool5 and dilates conv5, and the cpu preset narrows every
layer. ImageNet weights still come from timm's `vgg16`, copied layer by layer.
"""
from __future__ import annotations

import timm
import torch
from torch import nn

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)  # 3x3 convs per stage


class VGG16(nn.Module):
    """conv1_1..pool5 without BatchNorm (as the original), returning [pool3, pool4, pool5].

    dilated=False: 2x2/2 pools, pool3/4/5 at stride 8/16/32 (FCN).
    dilated=True: pool4 and pool5 are 3x3/1 and conv5 has dilation 2, so all of
    pool3/4/5 are at stride 8 (DeepLab-v2). Pools use ceil mode so sizes are ceil(H/stride).
    """

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS, dilated: bool = False):
        super().__init__()
        stages, in_ch = [], 3
        for stage, (width, depth) in enumerate(zip(widths, VGG16_DEPTHS)):
            dilation = 2 if dilated and stage == 4 else 1
            layers = []
            for _ in range(depth):
                layers += [nn.Conv2d(in_ch, width, 3, padding=dilation, dilation=dilation),
                           nn.ReLU(inplace=True)]
                in_ch = width
            keeps_resolution = dilated and stage >= 3
            layers.append(nn.MaxPool2d(3, 1, 1) if keeps_resolution
                          else nn.MaxPool2d(2, 2, ceil_mode=True))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pools = []
        for stage in self.stages:
            x = stage(x)
            pools.append(x)
        return pools[2:]


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def load_imagenet_vgg16(trunk: VGG16, fc6: nn.Conv2d | None = None,
                        fc7: nn.Conv2d | None = None) -> None:
    """Copy timm's ImageNet `vgg16` weights into a full-width trunk (and FCN's fc6/fc7,
    timm's classifier-as-convs `pre_logits.fc1`/`fc2`). Downloads on first use."""
    source = timm.create_model("vgg16", pretrained=True)
    pairs = list(zip(_convs(source.features), _convs(trunk), strict=True))
    if fc6 is not None:
        pairs += [(source.pre_logits.fc1, fc6), (source.pre_logits.fc2, fc7)]
    with torch.no_grad():
        for src, dst in pairs:
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)


def check_pretrainable(widths: tuple[int, ...], pretrained: bool, arch: str) -> None:
    if pretrained and tuple(widths) != VGG16_WIDTHS:
        raise ValueError(f"{arch}: no ImageNet weights exist for the narrowed size='cpu' VGG16; "
                         "use size='full' or pretrained=False")
