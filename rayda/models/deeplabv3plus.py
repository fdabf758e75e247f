"""DeepLabV3+ (Chen et al., ECCV 2018) on a timm MobileNet-v2 backbone at output stride 16."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from .base import ImageNetNormalize, Segmenter, conv_bn_relu, init_classifier, init_weights

PRESETS = {
    "full": dict(backbone="mobilenetv2_100", aspp_channels=256, low_level_channels=48,
                 decoder_channels=256),
    # Half-width MobileNet-v2 (timm has ImageNet weights for it) and quarter-width heads.
    "cpu": dict(backbone="mobilenetv2_050", aspp_channels=64, low_level_channels=16,
                decoder_channels=64),
}
ASPP_RATES = (6, 12, 18)
LOW_LEVEL_INDEX, HIGH_LEVEL_INDEX = 1, 4  # timm MobileNet-v2 feature stages at stride 4 and 16


class ASPP(nn.Module):
    """1x1 conv, three 3x3 atrous convs and image pooling, concatenated and projected."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...] = ASPP_RATES):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_ch, out_ch, 1)] + [conv_bn_relu(in_ch, out_ch, 3, r) for r in rates]
        )
        # No BatchNorm here: a 1x1 map per image cannot be batch-normalised at batch size 1.
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            conv_bn_relu(out_ch * (len(rates) + 2), out_ch, 1), nn.Dropout(0.1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], 1))


class DeepLabV3Plus(Segmenter):
    """Embedding: the last MobileNet-v2 stage (the ASPP input, "M_e" of CyclePlus), stride 16,
    320 channels (full) / 160 (cpu). Output logits come from the stride-4 decoder."""

    embed_stride = 16

    def __init__(self, num_classes: int, backbone: str, aspp_channels: int,
                 low_level_channels: int, decoder_channels: int, pretrained: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = ImageNetNormalize()
        self.backbone = timm.create_model(
            backbone, pretrained=pretrained, features_only=True,
            out_indices=(LOW_LEVEL_INDEX, HIGH_LEVEL_INDEX), output_stride=16,
        )
        low_ch, self.embed_channels = self.backbone.feature_info.channels()
        self.aspp = ASPP(self.embed_channels, aspp_channels)
        self.low_level_proj = conv_bn_relu(low_ch, low_level_channels, 1)
        self.fuse = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_channels, decoder_channels, 3),
            conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        for head in (self.aspp, self.low_level_proj, self.fuse):
            init_weights(head)  # the backbone keeps timm's init (or ImageNet weights)
        init_classifier(self.classifier)

    def _extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(self.normalize(x))

    def _head(self, feats: list[torch.Tensor]) -> torch.Tensor:
        low_level, high_level = feats
        context = F.interpolate(self.aspp(high_level), size=low_level.shape[-2:],
                                mode="bilinear", align_corners=False)
        fused = self.fuse(torch.cat([context, self.low_level_proj(low_level)], 1))
        return self.classifier(fused)


def deeplabv3plus_mobilenetv2(num_classes: int, size: str, pretrained: bool) -> DeepLabV3Plus:
    return DeepLabV3Plus(num_classes, **PRESETS[size], pretrained=pretrained)
