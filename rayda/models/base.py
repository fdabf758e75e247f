"""The interface shared by rayda's segmentation networks, plus small shared layers."""
from __future__ import annotations

import abc
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmenter(nn.Module, abc.ABC):
    """A segmentation network split into an encoder and a decoder.

    Inputs are float [N, 3, H, W] images in [-1, 1], any H and W. Subclasses implement
    `_extract` (padded image -> list of features, the last being the embedding) and
    `_head` (that list -> logits at any resolution); the base class pads the input,
    upsamples the logits bilinearly to the input size and crops the padding off.
    """

    num_classes: int
    embed_channels: int  # channels of encode()'s output
    embed_stride: int  # encode() output is ceil(H / embed_stride) x ceil(W / embed_stride)
    input_multiple: int = 1  # inputs are zero-padded (bottom/right) to a multiple of this

    @abc.abstractmethod
    def _extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Padded image -> features; the last one is the embedding."""

    @abc.abstractmethod
    def _head(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Features -> logits at any resolution."""

    def extract_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The features decode() consumes; the last one is the embedding."""
        m = self.input_multiple
        pad_h, pad_w = -x.shape[-2] % m, -x.shape[-1] % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # 0 is mid-grey in [-1, 1]
        return self._extract(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding [N, embed_channels, ceil(H/embed_stride), ceil(W/embed_stride)]."""
        return self.extract_features(x)[-1]

    def decode(self, feats: list[torch.Tensor], input_size: tuple[int, int]) -> torch.Tensor:
        """extract_features() output -> logits [N, num_classes, *input_size]."""
        h, w = input_size
        m = self.input_multiple
        padded_size = (math.ceil(h / m) * m, math.ceil(w / m) * m)
        logits = self._head(feats)
        if logits.shape[-2:] != padded_size:
            logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
        return logits[..., :h, :w]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding) from a single pass."""
        feats = self.extract_features(x)
        return self.decode(feats, x.shape[-2:]), feats[-1]

    def forward(self, x: torch.Tensor, with_embedding: bool = False):
        """Logits; with_embedding: (logits, embedding), the form a DDP-wrapped segmenter can return."""
        logits, embedding = self.forward_with_features(x)
        return (logits, embedding) if with_embedding else logits


class ImageNetNormalize(nn.Module):
    """[-1, 1] images -> the ImageNet mean/std normalisation timm's pretrained weights expect."""

    def __init__(self):
        super().__init__()
        # Not persistent: constants, so checkpoints need not carry them.
        for name, value in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(value).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2 - self.mean) / self.std


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=dilation * (kernel_size // 2),
                  dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) weights and zero biases for every (transposed) conv."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_classifier(*layers: nn.Module) -> None:
    """Small weights for the layers producing class scores, so training starts near uniform."""
    for layer in layers:
        nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(layer.bias)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a whole-model state dict (plain, or under key "model") saved with torch.save."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmenter weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state.get("model"), dict):
        state = state["model"]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = [f"{len(keys)} {kind} keys (e.g. {keys[:5]})" for kind, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong-shape", wrong_shape))
                if keys]
    if problems:
        raise ValueError(f"{path} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state)
