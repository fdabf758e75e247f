"""ERFNet (Romera et al., T-ITS 2018): factorised residual encoder-decoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Segmenter, init_classifier, init_weights

PRESETS = {
    "full": dict(widths=(16, 64, 128)),
    "cpu": dict(widths=(8, 32, 64)),  # same blocks at half width
}
ENCODER_DILATIONS = (2, 4, 8, 16, 2, 4, 8, 16)


class Downsampler(nn.Module):
    """A stride-2 3x3 conv concatenated with a 2x2 max-pool of the input."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch - in_ch, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1d(nn.Module):
    """Residual block of two 3x1 + 1x3 conv pairs, the second pair dilated."""

    def __init__(self, channels: int, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv3x1_2 = nn.Conv2d(channels, channels, (3, 1), padding=(dilation, 0),
                                   dilation=(dilation, 1))
        self.conv1x3_2 = nn.Conv2d(channels, channels, (1, 3), padding=(0, dilation),
                                   dilation=(1, dilation))
        self.bn2 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        y = self.dropout(self.bn2(self.conv1x3_2(y)))
        return F.relu(x + y)


def _upsampler(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
    )


class ERFNet(Segmenter):
    """Embedding: the encoder output, stride 8, 128 channels (full) / 64 (cpu).
    Inputs are padded to a multiple of 8 (the downsamplers' conv and pool must agree)."""

    embed_stride = 8
    input_multiple = 8

    def __init__(self, num_classes: int, widths: tuple[int, int, int]):
        super().__init__()
        w1, w2, w3 = widths
        self.num_classes = num_classes
        self.embed_channels = w3
        self.encoder = nn.Sequential(
            Downsampler(3, w1), Downsampler(w1, w2),
            *(NonBottleneck1d(w2, 1, 0.03) for _ in range(5)),
            Downsampler(w2, w3),
            *(NonBottleneck1d(w3, d, 0.3) for d in ENCODER_DILATIONS),
        )
        self.decoder = nn.Sequential(
            _upsampler(w3, w2), NonBottleneck1d(w2), NonBottleneck1d(w2),
            _upsampler(w2, w1), NonBottleneck1d(w1), NonBottleneck1d(w1),
            nn.ConvTranspose2d(w1, num_classes, 2, stride=2),
        )
        init_weights(self)
        init_classifier(self.decoder[-1])

    def _extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.encoder(x)]

    def _head(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder(feats[-1])


def erfnet(num_classes: int, size: str, pretrained: bool) -> ERFNet:
    if pretrained:
        raise ValueError("erfnet: timm has no ImageNet weights for ERFNet; use pretrained=False")
    return ERFNet(num_classes, **PRESETS[size])
