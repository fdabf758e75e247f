"""DeepLab-v2 "ASPP-L" (Chen et al., TPAMI 2017) on VGG16, as used by AdaptSegNet / GIO-Ada."""
from __future__ import annotations

import torch
from torch import nn

from .base import ImageNetNormalize, Segmenter, init_classifier, init_weights
from .vgg import VGG16, VGG16_WIDTHS, check_pretrainable, load_imagenet_vgg16

PRESETS = {
    "full": dict(widths=VGG16_WIDTHS, branch_width=1024),
    # Same layout: trunk at 1/4 width, ASPP branches at 1/8.
    "cpu": dict(widths=(16, 32, 64, 128, 128), branch_width=128),
}
ASPP_RATES = (6, 12, 18, 24)


def _aspp_branch(in_ch: int, width: int, num_classes: int, rate: int) -> nn.Sequential:
    """fc6 (3x3, dilation `rate`) -> fc7 (1x1) -> fc8 (1x1 to class scores)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 3, padding=rate, dilation=rate), nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Conv2d(width, num_classes, 1),
    )


class DeepLabV2(Segmenter):
    """Embedding: pool5 of the dilated VGG16 (the ASPP input), stride 8, 512 channels
    (full) / 128 (cpu). Logits are the sum of the four ASPP branches, at stride 8.
    With pretrained=True only the VGG16 trunk gets ImageNet weights."""

    embed_stride = 8

    def __init__(self, num_classes: int, widths: tuple[int, ...], branch_width: int,
                 pretrained: bool = False):
        super().__init__()
        check_pretrainable(widths, pretrained, "deeplabv2_vgg16")
        self.num_classes = num_classes
        self.embed_channels = widths[4]
        self.normalize = ImageNetNormalize()
        self.backbone = VGG16(widths, dilated=True)
        self.aspp = nn.ModuleList(
            _aspp_branch(widths[4], branch_width, num_classes, rate) for rate in ASPP_RATES
        )
        init_weights(self)
        init_classifier(*(branch[-1] for branch in self.aspp))
        if pretrained:
            load_imagenet_vgg16(self.backbone)

    def _extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.backbone(self.normalize(x))[-1]]

    def _head(self, feats: list[torch.Tensor]) -> torch.Tensor:
        (pool5,) = feats
        return sum(branch(pool5) for branch in self.aspp)


def deeplabv2_vgg16(num_classes: int, size: str, pretrained: bool) -> DeepLabV2:
    return DeepLabV2(num_classes, **PRESETS[size], pretrained=pretrained)
