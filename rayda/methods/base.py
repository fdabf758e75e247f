"""The contract between a method and the one training loop."""
from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from rayda.config import ConfigError, RunConfig, Section
from rayda.classes import ClassSet


@dataclass
class StepContext:
    """What the loop hands a method for one step."""

    step: int           # 0-based index of this step
    total_steps: int
    device: torch.device
    amp: bool           # bf16 autocast on GPU

    def autocast(self):
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


class Method(abc.ABC):
    """A method owns its networks, optimizers, schedulers and losses, and exposes `train_step`.

    Subclasses declare `Params` (their config keys under `method:`), build their networks in
    `__init__` into `self.nets`, their optimizers/schedulers in `configure_optimizers` (called
    after the loop has moved and wrapped every net), and return named losses from `train_step`.
    The loop owns devices, DDP, AMP, data, reporting and checkpoints.
    """

    name: str = ""
    Params: type[Section] = Section
    needs_target: bool = False   # streams unlabeled target images next to the source batch
    needs_depth: bool = False
    has_segmenter: bool = True   # False: a translation-only method (evaluate via translate + train)

    def __init__(self, cfg: RunConfig, classes: ClassSet):
        self.cfg = cfg
        self.classes = classes
        self.params = self.parse_params(cfg)
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.buffers: dict[str, Any] = {}  # other state a resume must restore (image pools), by name

    @classmethod
    def parse_params(cls, cfg: RunConfig) -> Section:
        raw = {k: v for k, v in (cfg.method.model_extra or {}).items()}
        try:
            return cls.Params.model_validate(raw)
        except ValidationError as e:
            lines = []
            for err in e.errors():
                path = "method." + ".".join(str(p) for p in err["loc"])
                if err["type"] == "extra_forbidden":
                    lines.append(f"unknown key '{path}' for method '{cls.name}' (known: {', '.join(cls.Params.model_fields)})")
                else:
                    lines.append(f"'{path}': {err['msg']} (got {err.get('input')!r})")
            raise ConfigError("\n".join(lines)) from None

    @abc.abstractmethod
    def configure_optimizers(self) -> None:
        """Build self.optimizers and self.schedulers over the (already wrapped) self.nets."""

    @abc.abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One update of every net, in the method's order; returns named losses (for logging)."""

    def visuals(self, batch: dict[str, torch.Tensor]) -> tuple[list[str], list[list[np.ndarray]]] | None:
        """(column titles, rows of uint8 HxWx3 images) for the grid saved with each checkpoint, or None.
        Runs on rank 0 only: use unwrapped nets (a DDP forward on one rank would hang the others)."""
        return None

    def translator(self) -> nn.Module | None:
        """Source -> target image network for `rayda translate`; None for methods that do not translate."""
        return None

    @property
    def segmenter(self) -> nn.Module | None:
        """The task network that evaluation and export use (unwrapped from DDP); None if it has none."""
        return unwrap(self.nets["segmenter"]) if self.has_segmenter else None

    def learning_rates(self) -> dict[str, float]:
        return {f"lr/{name}": opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

    # -- checkpoint state: every net, optimizer and scheduler by its declared name ---------------
    def state_dict(self) -> dict:
        return {
            "nets": {k: unwrap(v).state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "buffers": {k: v.state_dict() for k, v in self.buffers.items()},
        }

    def load_state_dict(self, state: dict, nets_only: bool = False) -> None:
        """Restore a checkpoint's state; nets_only for inference (no optimizers were configured)."""
        for group in ("nets",) if nets_only else ("nets", "optimizers", "schedulers", "buffers"):
            mine = getattr(self, group)
            if set(state[group]) != set(mine):
                raise ValueError(f"checkpoint holds {group} {sorted(state[group])}, method '{self.name}' has {sorted(mine)}")
        for k, v in state["nets"].items():
            unwrap(self.nets[k]).load_state_dict(v)
        if nets_only:
            return
        for k, v in state["optimizers"].items():
            self.optimizers[k].load_state_dict(v)
        for k, v in state["schedulers"].items():
            self.schedulers[k].load_state_dict(v)
        for k, v in state["buffers"].items():
            self.buffers[k].load_state_dict(v)


def unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
