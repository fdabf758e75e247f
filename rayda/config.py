"""Run configuration: YAML files validated against a typed schema, with dotted-path errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


class Section(BaseModel):
    # Unknown keys are errors, never silently ignored; values are checked on assignment too.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    source: str                        # labeled training dataset (synthetic, or real for the oracle)
    target: str | None = None          # unlabeled target-domain training dataset (adaptation methods)
    pairing: Literal["random", "spfeat"] = "random"  # how adaptation methods pair source and target images
    pairs: str | None = None           # `rayda pair` output, for pairing: spfeat
    val: str | None = None             # labeled target-domain validation dataset
    crop: tuple[int, int] = (128, 256)  # training crop, H x W
    scale: tuple[float, float] = (0.75, 1.25)  # random rescale range before the crop
    flip: bool = True
    batch_size: int = Field(8, gt=0)    # per worker
    shuffle_buffer: int = Field(256, ge=0)  # rows shuffled together: whole shards per training-stream slot

    @model_validator(mode="after")
    def _check(self):
        if min(self.crop) <= 0:
            raise ValueError(f"crop must be positive, got {self.crop}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must satisfy 0 < min <= max, got {self.scale}")
        if (self.pairing == "spfeat") != (self.pairs is not None):
            raise ValueError("pairing: spfeat needs pairs: DIR (from `rayda pair`), and pairs is only read with it")
        return self


class ModelConfig(Section):
    arch: str = "deeplabv3plus_mobilenetv2"
    size: Literal["full", "cpu"] = "full"
    pretrained: bool = False            # ImageNet weights through timm (needs internet)
    weights: str | None = None          # local state-dict file for the whole segmenter


class MethodConfig(Section):
    # The method's own keys are validated by the method class (rayda.methods).
    model_config = ConfigDict(extra="allow")
    name: str = "source_only"


class TrainConfig(Section):
    steps: int = Field(1000, gt=0)
    seed: int = 0
    report_every: int = Field(50, gt=0)      # a report is a barrier costing ~1 s: not every step
    checkpoint_every: int = Field(500, gt=0)
    val_every: int | None = Field(None, gt=0)  # also score data.val inside the loop (val/miou); rayda tune needs it
    keep_checkpoints: int = Field(2, gt=0)
    amp: bool = True                          # bf16 autocast on GPU; ignored on CPU


class ScalingConfig(Section):
    num_workers: int = Field(1, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(0, ge=-1)       # -1 = retry forever
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"  # workers over nodes
    resources_per_worker: dict[str, float] = {}  # extra (custom) resources each worker needs, e.g. {"A100": 1}

    @model_validator(mode="after")
    def _check(self):
        for key in ("CPU", "GPU"):
            if key in self.resources_per_worker:
                raise ValueError(f"resources_per_worker: set {key} with {'cpus_per_worker' if key == 'CPU' else 'use_gpu'}")
        return self


class EvalConfig(Section):
    batch_size: int = Field(8, gt=0)
    num_grid_images: int = Field(4, ge=0)
    protocol: str | None = None               # "19" | "16" | "13"; default: the dataset's own classes


class RunConfig(Section):
    name: str
    storage_path: str = "runs"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    method: MethodConfig = MethodConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingConfig = ScalingConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.train.val_every is not None:
            if not self.data.val:
                raise ValueError("train.val_every needs data.val (a labeled target-domain dataset)")
            if self.train.val_every % self.train.report_every:
                raise ValueError(f"train.val_every ({self.train.val_every}) must be a multiple of "
                                 f"train.report_every ({self.train.report_every}): scores travel with a report")
        return self

    @property
    def storage(self) -> str:
        """Where Ray Train keeps checkpoints: a URI (s3://, gs://) as given, else the resolved local directory."""
        return self.storage_path if "://" in self.storage_path else str(Path(self.storage_path).expanduser().resolve())

    @property
    def run_dir(self) -> Path:
        """The run's local outputs (history, reports, evaluation): beside its checkpoints, or ./runs/NAME on the
        driver when storage_path is a URI."""
        return (Path("runs").resolve() if "://" in self.storage_path else Path(self.storage)) / self.name


def _errors(e: ValidationError, source: str) -> ConfigError:
    lines = []
    for err in e.errors():
        path = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{path}'")
        elif err["type"] == "missing":
            lines.append(f"{source}: missing required key '{path}'")
        else:
            lines.append(f"{source}: '{path}': {err['msg']} (got {err.get('input')!r})")
    return ConfigError("\n".join(lines))


def set_dotted(d: dict, dotted: str, value: Any) -> None:
    """d['a']['b'] = value for dotted = 'a.b', creating sections as needed."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        d = d.setdefault(key, {})
        if not isinstance(d, dict):
            raise ConfigError(f"--set {dotted}: '{key}' is not a section")
    d[leaf] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """['train.steps=100', 'data.crop=[64,128]'] -> [(key, yaml-typed value)]."""
    out = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out.append((key.strip(), yaml.safe_load(raw)))
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = (), base: dict | None = None) -> RunConfig:
    """Read a YAML file (and/or a base dict), apply --set overrides, validate."""
    raw: dict = dict(base or {})
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw.update(loaded)
    for key, value in parse_overrides(list(overrides)):
        set_dotted(raw, key, value)
    return validate(raw, source)


def validate(raw: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise _errors(e, source) from None


def to_dict(cfg: RunConfig) -> dict:
    return cfg.model_dump(mode="json")
