"""Source-only baseline (and the oracle, when its labeled data is the target domain)."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from rayda.classes import IGNORE_INDEX
from rayda.color import random_adjust
from rayda.config import Section
from rayda.methods.base import Method, StepContext
from rayda.models import build_segmenter


class SourceOnlyParams(Section):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)       # SGD momentum, or Adam's beta1
    weight_decay: float = Field(5e-4, ge=0)
    poly_power: float = Field(0.9, ge=0)           # lr * (1 - step/steps) ** power
    # Seed 000's "randomly colour-augmented" baseline: every source image under random colour operators,
    # alpha ~ N(0, sigma) with P(|alpha| <= 1) = p (rayda.color). None: no colour augmentation.
    color_augment_p: float | None = Field(None, gt=0, lt=1)


class SourceOnly(Method):
    """Pixel cross-entropy on labeled images (optionally colour-augmented); nothing else."""

    name = "source_only"
    Params = SourceOnlyParams

    def __init__(self, cfg, classes):
        super().__init__(cfg, classes)
        m = cfg.model
        self.nets["segmenter"] = build_segmenter(m.arch, classes.num_classes, size=m.size,
                                                 pretrained=m.pretrained, weights=m.weights)

    def configure_optimizers(self) -> None:
        p = self.params
        params = self.nets["segmenter"].parameters()
        if p.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=p.lr, betas=(p.momentum, 0.999), weight_decay=p.weight_decay)
        self.optimizers["segmenter"] = opt
        self.schedulers["segmenter"] = torch.optim.lr_scheduler.PolynomialLR(
            opt, total_iters=self.cfg.train.steps, power=p.poly_power)

    def train_step(self, batch, ctx: StepContext):
        net, opt = self.nets["segmenter"], self.optimizers["segmenter"]
        x = batch["image"]
        if self.params.color_augment_p is not None:  # the operators work in [0, 1]
            x = random_adjust((x.float() + 1) / 2, self.params.color_augment_p) * 2 - 1
        net.train()
        with ctx.autocast():
            logits = net(x)
        loss = F.cross_entropy(logits.float(), batch["label"].long(), ignore_index=IGNORE_INDEX)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.schedulers["segmenter"].step()
        return {"seg": loss.detach()}
