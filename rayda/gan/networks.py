"""Translation networks the adversarial methods share: CycleGAN's ResNet generator, PatchGAN
discriminators, and the helpers every GAN update needs (weight init, requires_grad toggling)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

Norm = Literal["instance", "none"]
M = TypeVar("M", bound=nn.Module)


def sized(cls: type[M], size: str, **kwargs: Any) -> M:
    """`cls` at a preset width: "full" is the papers' network, "cpu" the same layout, narrower."""
    if size not in cls.SIZES:
        raise ValueError(f"unknown size {size!r} for {cls.__name__}; choose one of {tuple(cls.SIZES)}")
    return cls(**{**cls.SIZES[size], **kwargs})


def init_weights(net: M, std: float = 0.02) -> M:
    """CycleGAN's default ("normal") init: conv/linear weights ~ N(0, std), biases 0, affine norm
    scales ~ N(1, std). Draws from torch's global RNG, so a seed fixes it on every rank."""
    for m in net.modules():  # modules() visits a shared block once
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return net


def set_requires_grad(nets: nn.Module | Iterable[nn.Module], flag: bool) -> None:
    """Freeze (False) or unfreeze (True) every parameter of `nets` (DDP-wrapped or not).

    Under DDP call it identically on every rank and before the forward it should affect.
    """
    for net in [nets] if isinstance(nets, nn.Module) else nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # CycleGAN's: no affine, no running stats
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose 'instance' or 'none'")


class ResBlock(nn.Module):
    """x + (pad, conv3, IN, ReLU, pad, conv3, IN)(x): the residual block of CycleGAN and UNIT."""

    def __init__(self, channels: int):
        super().__init__()

        def conv() -> list[nn.Module]:
            return [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels)]

        self.body = nn.Sequential(*conv(), nn.ReLU(True), *conv())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def image_to_features(in_channels: int, ngf: int, n_down: int) -> nn.Sequential:
    """conv7 (reflection-padded), then n_down stride-2 conv3s doubling the width, each with IN
    and ReLU: [N, in, H, W] -> [N, ngf * 2**n_down, H / 2**n_down, W / 2**n_down]."""
    layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7),
                               nn.InstanceNorm2d(ngf), nn.ReLU(True)]
    for i in range(n_down):
        c = ngf * 2**i
        layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), nn.ReLU(True)]
    return nn.Sequential(*layers)


def features_to_image(ngf: int, out_channels: int, n_up: int) -> nn.Sequential:
    """The mirror of image_to_features: n_up fractionally strided conv3s halving the width, then a
    reflection-padded conv7 and tanh, so images come out in [-1, 1]."""
    layers: list[nn.Module] = []
    for i in reversed(range(n_up)):
        c = ngf * 2 ** (i + 1)
        layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                   nn.InstanceNorm2d(c // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


class ResnetGenerator(nn.Module):
    """CycleGAN's generator (Zhu et al. 2017, after Johnson et al. 2016): 2 stride-2 convs down,
    n_blocks residual blocks, 2 fractionally strided convs up, tanh. Preserves H x W when both are
    multiples of 4. ngf 64 with 9 blocks is the paper's network for 256 px and larger inputs."""

    SIZES: ClassVar[dict[str, dict[str, int]]] = {"full": {"ngf": 64, "n_blocks": 9},
                                                  "cpu": {"ngf": 16, "n_blocks": 3}}

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        self.model = nn.Sequential(image_to_features(in_channels, ngf, 2),
                                   *(ResBlock(ngf * 4) for _ in range(n_blocks)),
                                   features_to_image(ngf, out_channels, 2))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """A fully convolutional discriminator: one real/fake logit per patch, no sigmoid.

    n_layers convolutions, all with the same `stride` (seed 003: image discriminators are "a cascade
    of 5 stride-2 convolutional layers", the feature discriminators the same "with stride 1 for all
    layers"). Widths ndf, 2ndf, 4ndf, ... capped at 8ndf, each conv followed by `norm` (not after
    the first, as in CycleGAN) and LeakyReLU(0.2); the last conv maps to 1 channel.
    kernel_size defaults to CycleGAN's 4 for stride 2 (each layer halves H and W) and to 3 for
    stride 1 (each layer keeps H and W, so small encoder maps never shrink to nothing).
    With ndf 64 it has exactly the parameters of CycleGAN's 70x70 PatchGAN (the same five convs).
    """

    SIZES: ClassVar[dict[str, dict[str, int]]] = {"full": {"ndf": 64}, "cpu": {"ndf": 16}}

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 5, stride: int = 2,
                 norm: Norm = "instance", kernel_size: int | None = None):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        k = kernel_size or (4 if stride > 1 else 3)
        pad = (k - 1) // 2
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(n_layers - 1):
            c_out = ndf * min(2**i, 8)
            layers += [nn.Conv2d(c_in, c_out, k, stride, pad),
                       _norm(norm, c_out) if i > 0 else nn.Identity(), nn.LeakyReLU(0.2, True)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, 1, k, stride, pad))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MultiScaleDiscriminator(nn.Module):
    """n_scales PatchDiscriminators, on the input and on 2x, 4x, ... average-pooled copies (as in
    pix2pixHD and UNIT's/MUNIT's public code, 3 scales). Returns the list of logit maps, fine to
    coarse, which GANLoss sums over. kwargs go to every PatchDiscriminator."""

    def __init__(self, n_scales: int = 3, **kwargs: Any):
        super().__init__()
        self.nets = nn.ModuleList(PatchDiscriminator(**kwargs) for _ in range(n_scales))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(net(x))
        return out
