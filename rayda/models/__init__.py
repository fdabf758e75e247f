"""Segmentation networks: `build_segmenter(arch, num_classes, size=..., ...)`.

Every network is a `Segmenter`: images in [-1, 1] -> logits at the input resolution,
plus `encode` / `forward_with_features` exposing the embedding adversarial methods use.

| arch                      | embedding (encode)                  | stride | channels full/cpu |
|---------------------------|-------------------------------------|--------|-------------------|
| deeplabv3plus_mobilenetv2 | last MobileNet-v2 stage (ASPP input)| 16     | 320 / 160         |
| fcn8s_vgg16               | fc7                                 | 32     | 4096 / 256        |
| deeplabv2_vgg16           | dilated VGG16 pool5 (ASPP input)    | 8      | 512 / 128         |
| erfnet                    | encoder output                      | 8      | 128 / 64          |

size="full" is the papers' network; size="cpu" keeps its structure at reduced width.
"""
from __future__ import annotations

from pathlib import Path

from .base import Segmenter, load_weights
from .deeplabv2 import deeplabv2_vgg16
from .deeplabv3plus import deeplabv3plus_mobilenetv2
from .erfnet import erfnet
from .fcn import fcn8s_vgg16

_BUILDERS = {
    "deeplabv3plus_mobilenetv2": deeplabv3plus_mobilenetv2,
    "fcn8s_vgg16": fcn8s_vgg16,
    "deeplabv2_vgg16": deeplabv2_vgg16,
    "erfnet": erfnet,
}
ARCHS: tuple[str, ...] = tuple(_BUILDERS)
SIZES: tuple[str, ...] = ("full", "cpu")

__all__ = ["ARCHS", "SIZES", "Segmenter", "build_segmenter"]


def build_segmenter(arch: str, num_classes: int, *, size: str = "full", pretrained: bool = False,
                    weights: str | Path | None = None) -> Segmenter:
    """Build a segmenter, randomly initialised (Kaiming convs; timm's init for timm backbones).

    pretrained: ImageNet backbone weights through timm (downloads; ValueError where none
        exist: ERFNet, and the VGG archs at size="cpu").
    weights: a local torch.save'd state dict of the whole segmenter (plain or under "model").
        It replaces every parameter, so `pretrained` is then skipped.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {SIZES}")
    model = _BUILDERS[arch](num_classes, size, pretrained and weights is None)
    if weights is not None:
        load_weights(model, weights)
    return model
