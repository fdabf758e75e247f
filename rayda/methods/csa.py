"""CSA, colour space adaptation (seed 000, card 1): learn global colour adjustments of the source images.

Two stages over one run, split at `stage1` x train.steps:
  1. D learns real target images x_t (label 1) against random colour variants ops(x_t, alpha),
     alpha ~ N(0, sigma_for(p)) (label 0). D never sees a source image; the generators rest.
  2. D is frozen; G = {G_b, G_s, G_c} maps a source image to one alpha per operator, and learns to make
     D score the adapted image ops(x_s, G(x_s)) as real.
Adapted images keep their labels (only global colour changes): CSA trains no segmenter; `rayda translate`
its checkpoint, then `rayda train` a segmenter on the result. Operators: rayda.color.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from rayda.color import adjust, random_adjust
from rayda.config import Section
from rayda.gan import GANLoss, set_requires_grad
from rayda.methods.base import Method, StepContext, unwrap
from rayda.report import to_uint8_image


class CSAParams(Section):
    p: float = Field(0.99, gt=0, lt=1)             # P(|alpha| <= 1) of the random alphas (paper: 0.9/0.99/0.999)
    stage1: float = Field(0.5, gt=0, lt=1)         # fraction of train.steps for stage 1 (paper: 30K + 30K)
    stage2_freeze_d: bool = True                   # false: the paper's ablation, D keeps training in stage 2
    lr: float = Field(1e-3, gt=0)                  # Adam(1e-3, beta1 0.5) for D and for G
    beta1: float = Field(0.5, ge=0, lt=1)
    width: int | None = Field(None, gt=0)          # first conv width of D and of each G; default: model.size preset


def he_init(net: nn.Module) -> nn.Module:
    """He (Kaiming) normal init of every conv and linear weight, zero biases: the paper's init."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net


def _conv_groups(n: int, width: int, act: nn.Module) -> tuple[nn.Sequential, int]:
    """n x [conv 4x4 stride 2, InstanceNorm, act], widths width, 2width, ... capped at 8width (DCGAN)."""
    layers: list[nn.Module] = []
    c_in = 3
    for i in range(n):
        c_out = width * min(2**i, 8)
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.InstanceNorm2d(c_out), act]
        c_in = c_out
    return nn.Sequential(*layers), c_in


class ColourDiscriminator(nn.Module):
    """D: 4 x [conv stride 2, IN, LeakyReLU(0.2)], then FC -> one logit per image (the paper's sigmoid is
    in the BCE-with-logits loss). Global average pooling before the FC takes any input size."""

    SIZES: ClassVar[dict[str, dict[str, int]]] = {"full": {"width": 64}, "cpu": {"width": 16}}

    def __init__(self, width: int = 64, n_layers: int = 4):
        super().__init__()
        self.features, c = _conv_groups(n_layers, width, nn.LeakyReLU(0.2, True))
        self.fc = nn.Linear(c, 1)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3))).squeeze(1)


class AlphaGenerator(nn.Module):
    """One of G_b, G_s, G_c: 5 x [conv stride 2, IN, ReLU], then FC + tanh -> one alpha per image.
    Inputs need more than one position after five halvings, e.g. 32 x 64 (instance norm's minimum)."""

    SIZES: ClassVar[dict[str, dict[str, int]]] = {"full": {"width": 64}, "cpu": {"width": 8}}

    def __init__(self, width: int = 64, n_layers: int = 5):
        super().__init__()
        self.features, c = _conv_groups(n_layers, width, nn.ReLU(True))
        self.fc = nn.Linear(c, 1)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(self.features(x).mean((2, 3))).squeeze(1))


def adapt(x: torch.Tensor, g_b: nn.Module, g_s: nn.Module, g_c: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """g_s->r(x) = ops(x, G(x)): [-1, 1] images -> ([-1, 1] adapted images, alphas [N, 3] as (b, s, c)).
    The operators run in float32, also under bf16 autocast."""
    alphas = torch.stack([g(x).float() for g in (g_b, g_s, g_c)], 1)
    x01 = (x.float() + 1) / 2
    return adjust(x01, alphas[:, 0], alphas[:, 1], alphas[:, 2]) * 2 - 1, alphas


class ColourAdapter(nn.Module):
    """The translator `rayda translate` runs: [-1, 1] source images -> [-1, 1] colour-adapted images."""

    def __init__(self, g_b: nn.Module, g_s: nn.Module, g_c: nn.Module):
        super().__init__()
        self.g_b, self.g_s, self.g_c = g_b, g_s, g_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adapt(x, self.g_b, self.g_s, self.g_c)[0]


class CSA(Method):
    name = "csa"
    Params = CSAParams
    needs_target = True
    has_segmenter = False

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        p, size = self.params, cfg.model.size

        def net(cls):
            return cls(width=p.width) if p.width else cls(**cls.SIZES[size])

        self.nets = {"d": net(ColourDiscriminator), "g_b": net(AlphaGenerator), "g_s": net(AlphaGenerator),
                     "g_c": net(AlphaGenerator)}
        self.gan = GANLoss("bce")
        self.stage1_steps = int(p.stage1 * cfg.train.steps)

    def configure_optimizers(self) -> None:
        p, n = self.params, self.nets
        adam = lambda params: torch.optim.Adam(params, lr=p.lr, betas=(p.beta1, 0.999))  # noqa: E731
        self.optimizers = {"d": adam(n["d"].parameters()),
                           "g": adam([q for k in ("g_b", "g_s", "g_c") for q in n[k].parameters()])}

    def train_step(self, batch, ctx: StepContext):
        x_s, x_t = batch["image"], batch["target_image"]
        # The stage depends on the step only, so every rank takes the same branch. Under DDP a step runs
        # only the nets it trains through their wrappers: a wrapped net left without gradients would hang.
        if ctx.step < self.stage1_steps:
            fake = random_adjust((x_t.float() + 1) / 2, self.params.p) * 2 - 1  # randn(X_r, ops)
            return {"d": self._update_d(x_t, fake, ctx)}
        losses, adapted = self._update_g(x_s, ctx)
        if not self.params.stage2_freeze_d:
            # Ablation: D goes on as a standard GAN discriminator, real x_t against the adapted source
            # images, which is what the paper says ruins it (D starts to see synthetic content).
            losses["d"] = self._update_d(x_t, adapted, ctx)
        return losses

    def _update_d(self, real: torch.Tensor, fake: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        d = self.nets["d"]
        set_requires_grad(d, True)
        with ctx.autocast():
            logits = d(torch.cat([real, fake]))  # one forward: instance norm keeps images independent
        loss = self.gan.discriminator(logits[: len(real)], logits[len(real):])
        self.optimizers["d"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["d"].step()
        return loss.detach()

    def _update_g(self, x_s: torch.Tensor, ctx: StepContext) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        d = unwrap(self.nets["d"])  # fixed here: unwrapped, no gradients for its parameters
        set_requires_grad(d, False)
        with ctx.autocast():
            adapted, alphas = adapt(x_s, self.nets["g_b"], self.nets["g_s"], self.nets["g_c"])
            logits = d(adapted)
        # G maximises D's score of ops(x_s, G(x_s)): the non-saturating form, -log D(adapted).
        loss = self.gan.generator(logits)
        self.optimizers["g"].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers["g"].step()
        mean_abs = alphas.detach().abs().mean(0)  # diagnostics: how far G moves each operator
        losses = {"g": loss.detach(), "alpha_b": mean_abs[0], "alpha_s": mean_abs[1], "alpha_c": mean_abs[2]}
        return losses, adapted.detach()

    def translator(self) -> nn.Module:
        """Source -> colour-adapted source, for `rayda translate`."""
        return ColourAdapter(*(unwrap(self.nets[k]) for k in ("g_b", "g_s", "g_c")))

    @torch.no_grad()
    def visuals(self, batch):
        """Source images beside their adaptation; target images beside a random variant (D's fakes)."""
        x_s, x_t = batch["image"][:2], batch["target_image"][:2]
        adapted = self.translator()(x_s)
        # A private generator: drawing from the global RNG on rank 0 alone would desync the ranks' streams.
        variant = random_adjust((x_t.float() + 1) / 2, self.params.p, torch.Generator().manual_seed(0)) * 2 - 1
        rows = [[to_uint8_image(x[i]), to_uint8_image(y[i])] for x, y in ((x_s, adapted), (x_t, variant))
                for i in range(len(x))]
        return ["input", "adapted (source) / random variant (target)"], rows
