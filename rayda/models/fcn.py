"""FCN-8s (Long et al., CVPR 2015) on VGG16."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import ImageNetNormalize, Segmenter, init_classifier, init_weights
from .vgg import VGG16, VGG16_WIDTHS, check_pretrainable, load_imagenet_vgg16

PRESETS = {
    "full": dict(widths=VGG16_WIDTHS, fc_width=4096),
    # Same layout at 1/4 width, fc6/fc7 at 1/16.
    "cpu": dict(widths=(16, 32, 64, 128, 128), fc_width=256),
}


def _bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Transposed-conv weight that upsamples each channel bilinearly (FCN's init)."""
    factor = (kernel_size + 1) // 2
    center = factor - 0.5 if kernel_size % 2 == 0 else factor - 1
    ramp = 1 - (torch.arange(kernel_size) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


class FCN8s(Segmenter):
    """Embedding: fc7 (after ReLU), stride 32, 4096 channels (full) / 256 (cpu).

    fc6 is a 7x7 conv with padding 3 instead of the original's 100-pixel input padding;
    inputs are padded to a multiple of 32 so the 2x upsampled scores line up with the skips.
    """

    embed_stride = 32
    input_multiple = 32

    def __init__(self, num_classes: int, widths: tuple[int, ...], fc_width: int,
                 pretrained: bool = False):
        super().__init__()
        check_pretrainable(widths, pretrained, "fcn8s_vgg16")
        self.num_classes = num_classes
        self.embed_channels = fc_width
        self.normalize = ImageNetNormalize()
        self.backbone = VGG16(widths)
        self.fc6 = nn.Conv2d(widths[4], fc_width, 7, padding=3)
        self.fc7 = nn.Conv2d(fc_width, fc_width, 1)
        self.dropout = nn.Dropout(0.5)
        self.score_fr = nn.Conv2d(fc_width, num_classes, 1)
        self.score_pool4 = nn.Conv2d(widths[3], num_classes, 1)
        self.score_pool3 = nn.Conv2d(widths[2], num_classes, 1)
        # Learnable 2x upsampling initialised to bilinear; the final 8x is fixed bilinear.
        self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
        self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, 2, 1, bias=False)
        init_weights(self)
        init_classifier(self.score_fr, self.score_pool4, self.score_pool3)
        with torch.no_grad():
            for up in (self.upscore2, self.upscore_pool4):
                up.weight.copy_(_bilinear_kernel(num_classes, 4))
        if pretrained:
            load_imagenet_vgg16(self.backbone, self.fc6, self.fc7)

    def _extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        pool3, pool4, pool5 = self.backbone(self.normalize(x))
        fc7 = F.relu(self.fc7(self.dropout(F.relu(self.fc6(pool5)))))
        return [pool3, pool4, fc7]

    def _head(self, feats: list[torch.Tensor]) -> torch.Tensor:
        pool3, pool4, fc7 = feats
        scores = self.upscore2(self.score_fr(self.dropout(fc7))) + self.score_pool4(pool4)
        return self.upscore_pool4(scores) + self.score_pool3(pool3)  # stride 8


def fcn8s_vgg16(num_classes: int, size: str, pretrained: bool) -> FCN8s:
    return FCN8s(num_classes, **PRESETS[size], pretrained=pretrained)
