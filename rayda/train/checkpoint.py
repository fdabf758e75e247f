"""Training checkpoints: full state for exact resume, plus the segmenter alone for eval/export."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from rayda.classes import ClassSet

CHECKPOINT_VERSION = 1
STATE_FILE = "state.pt"          # every net, optimizer, scheduler, buffer, the step and the history
SEGMENTER_FILE = "segmenter.pt"  # the task network's weights
META_FILE = "meta.json"          # what the checkpoint is: method, architecture, classes, step
VISUALS_FILE = "visuals.png"     # the method's image grid at this step (translations), if it has one


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or belongs to another method or class set."""


def save(directory: str | Path, *, method, step: int, history: list[dict], config: dict,
         rank_buffers: list[dict] | None = None) -> None:
    """`rank_buffers`: every rank's buffers (its image pools hold its own data), in rank order."""
    directory = Path(directory)
    state = {"version": CHECKPOINT_VERSION, "method": method.name, "step": step,
             "method_state": method.state_dict(), "history": history}
    if rank_buffers is not None:
        state["rank_buffers"] = rank_buffers
    torch.save(state, directory / STATE_FILE)
    if method.segmenter is not None:
        torch.save(method.segmenter.state_dict(), directory / SEGMENTER_FILE)
    meta = {"version": CHECKPOINT_VERSION, "method": method.name, "step": step,
            "arch": config["model"]["arch"], "size": config["model"]["size"],
            "classes": method.classes.to_json(), "config": config}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))


def read_meta(directory: str | Path) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory not found: {directory}")
    path = directory / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {META_FILE}; not a rayda checkpoint")
    meta = json.loads(path.read_text())
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')}, this rayda reads {CHECKPOINT_VERSION}")
    return meta


def load_state(directory: str | Path, method) -> dict:
    """The full training state, checked against the method and class set about to receive it."""
    meta = read_meta(directory)
    if meta["method"] != method.name:
        raise CheckpointError(f"{directory}: checkpoint of method '{meta['method']}', this run is '{method.name}'")
    if ClassSet.from_json(meta["classes"]) != method.classes:
        raise CheckpointError(f"{directory}: checkpoint class set {meta['classes']['names']} differs from the data's")
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def load_segmenter(directory: str | Path, device: str | torch.device = "cpu"):
    """(segmenter in eval mode, meta) from a checkpoint directory."""
    from rayda.models import build_segmenter

    meta = read_meta(directory)
    if not (Path(directory) / SEGMENTER_FILE).is_file():
        raise CheckpointError(f"{directory}: method '{meta['method']}' trains no segmenter; `rayda translate` "
                              "with this checkpoint, then `rayda train` a segmenter on the translated data")
    classes = ClassSet.from_json(meta["classes"])
    net = build_segmenter(meta["arch"], classes.num_classes, size=meta["size"])
    net.load_state_dict(torch.load(Path(directory) / SEGMENTER_FILE, map_location="cpu", weights_only=True))
    return net.to(device).eval(), meta


def load_segmenter_weights(net, directory: str | Path, arch: str, classes: ClassSet) -> None:
    """Start a method's segmenter from another run's checkpoint (e.g. source-only), checked to fit."""
    meta = read_meta(directory)
    if meta["arch"] != arch:
        raise CheckpointError(f"{directory}: segmenter is '{meta['arch']}', this run's model.arch is '{arch}'")
    if ClassSet.from_json(meta["classes"]) != classes:
        raise CheckpointError(f"{directory}: checkpoint class set {meta['classes']['names']} differs from the data's")
    try:
        net.load_state_dict(torch.load(Path(directory) / SEGMENTER_FILE, map_location="cpu", weights_only=True))
    except RuntimeError as e:  # e.g. model.size differs
        raise CheckpointError(f"{directory}: segmenter weights do not fit this run's model ({e})") from None
