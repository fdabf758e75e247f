"""Distributed evaluation: Ray Data batch inference on an actor pool, one summed confusion matrix."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from PIL import Image

from rayda.classes import PROTOCOLS, ClassSet
from rayda.data import eval_dataset, read_info, to_network_input
from rayda.data.format import encode_png
from rayda.eval.metrics import confusion_matrix, format_table, summarize
from rayda.train.checkpoint import CheckpointError, load_segmenter, read_meta


class ConfusionPredictor:
    """Actor: holds one segmenter; a batch of images and labels -> its confusion matrix, plus
    image | ground truth | prediction panels for the samples chosen for the grid."""

    def __init__(self, checkpoint: str, use_gpu: bool, grid_ids: list[str]):
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.net, meta = load_segmenter(checkpoint, self.device)
        self.classes = ClassSet.from_json(meta["classes"])
        self.grid_ids = set(grid_ids)

    def __call__(self, batch: dict) -> dict:
        c = self.classes.num_classes
        conf = np.zeros((c, c), np.int64)
        panel_ids, panel_pngs = [], []
        for sample_id, image, label in zip(batch["id"], batch["image"], batch["label"]):
            pred = predict(self.net, image[None], self.device)[0]
            conf += confusion_matrix(pred, label, c)
            if sample_id in self.grid_ids:
                row = [image.transpose(1, 2, 0), self.classes.colorize(label), self.classes.colorize(pred)]
                panel_ids.append(str(sample_id))
                panel_pngs.append(encode_png(np.concatenate(row, axis=1)))
        return pa.table({"conf": [conf.ravel().tolist()], "panel_ids": [panel_ids],
                         "panel_pngs": pa.array([panel_pngs], pa.list_(pa.binary()))})


@torch.inference_mode()
def predict(net: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """uint8 images [N,3,H,W] -> uint8 [N,H,W] class ids."""
    x = to_network_input(torch.as_tensor(np.array(images), device=device))  # copy: Ray's batches are read-only
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = net(x)
    return logits.argmax(1).to(torch.uint8).cpu().numpy()


def protocol_classes(classes: ClassSet, protocol: str | None) -> list[int] | None:
    """Class ids scored under a protocol; None = every class of the dataset."""
    if protocol is None or protocol == classes.protocol:
        return None
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    if classes.protocol != "19":
        raise ValueError(f"protocol {protocol} needs 19-class (trainId) labels; this dataset uses protocol {classes.protocol}")
    return list(PROTOCOLS[protocol])


def evaluate(checkpoint: str | Path, data: str | Path, out: str | Path | None = None, *, batch_size: int = 8,
             protocol: str | None = None, num_grid_images: int = 4, use_gpu: bool = False,
             num_actors: int | None = None) -> dict:
    """mIoU of a checkpoint's segmenter on a labeled dataset; writes metrics.json, metrics.md, grids."""
    meta = read_meta(checkpoint)
    info = read_info(data)
    classes = ClassSet.from_json(meta["classes"])
    if classes != info.classes:
        raise CheckpointError(f"checkpoint {checkpoint} predicts {classes.names}; dataset '{info.name}' has {info.classes.names}")
    scored = protocol_classes(classes, protocol)
    if num_actors is None:
        free = ray.available_resources().get("GPU" if use_gpu else "CPU", 1)
        num_actors = max(1, min(4, int(free)))
    grid_ids = first_ids(info, num_grid_images)
    parts = eval_dataset(info).map_batches(
        ConfusionPredictor, fn_constructor_kwargs={"checkpoint": str(Path(checkpoint).resolve()),
                                                   "use_gpu": use_gpu, "grid_ids": grid_ids},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=num_actors), batch_size=batch_size,
        num_gpus=1 if use_gpu else 0, batch_format="numpy",
    )
    conf = np.zeros((classes.num_classes, classes.num_classes), np.int64)
    panels = {}
    for row in parts.iter_rows():
        conf += np.asarray(row["conf"], np.int64).reshape(conf.shape)
        panels.update(zip(row["panel_ids"], row["panel_pngs"]))
    summary = summarize(conf, classes.names, scored)
    summary.update(dataset=info.name, checkpoint=str(checkpoint), step=meta["step"], method=meta["method"],
                   protocol=protocol or classes.protocol, num_images=info.num_rows)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        (out / "confusion.json").write_text(json.dumps(conf.tolist()))
        (out / "metrics.md").write_text(format_table({meta["method"]: summary}, classes.names) + "\n")
        if panels:
            from rayda.report import save_grid

            rows = [np.split(np.asarray(Image.open(io.BytesIO(panels[i]))), 3, axis=1) for i in grid_ids]
            save_grid(out / "predictions.png", rows, titles=["image", "ground truth", "prediction"])
    return summary


def first_ids(info, n: int) -> list[str]:
    """The first n ids of the first shard: the same grid images every time (reads one small column)."""
    if n <= 0:
        return []
    return pq.read_table(info.shard_paths()[0], columns=["id"]).column("id").to_pylist()[:n]
