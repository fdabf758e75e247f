"""`rayda translate`: a trained source->target generator over a dataset, as Ray Data batch inference.

The product both translation seeds train their segmenter on: the same rows, labels and depth, with each
image replaced by its translation. `dataset.json` records the checkpoint it came from.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import torch
import torch.nn.functional as F

from rayda.classes import ClassSet
from rayda.config import validate
from rayda.data import DatasetError, prepare_output, read_dataset, read_info, write_dataset
from rayda.data.format import SCHEMA, encode_png
from rayda.data.pipeline import decode_image_bytes, to_network_input
from rayda.train.checkpoint import STATE_FILE, CheckpointError, read_meta

PAD_MULTIPLE = 16  # generators downsample; pad so every size round-trips


def load_translator(checkpoint: str | Path, device: torch.device) -> torch.nn.Module:
    """The source->target network of a translating method's checkpoint, in eval mode."""
    from rayda.methods import method_class

    meta = read_meta(checkpoint)
    method_cls = method_class(meta["method"])
    raw = json.loads(json.dumps(meta["config"]))
    # Every weight comes from the checkpoint: no timm download, no initial segmenter to find.
    raw["model"].update(pretrained=False, weights=None)
    raw["method"].pop("segmenter_init", None)
    method = method_cls(validate(raw), ClassSet.from_json(meta["classes"]))
    state = torch.load(Path(checkpoint) / STATE_FILE, map_location="cpu", weights_only=True)
    method.load_state_dict(state["method_state"], nets_only=True)
    translator = method.translator()
    if translator is None:
        raise CheckpointError(f"{checkpoint}: method '{meta['method']}' does not translate images")
    return translator.to(device).eval()


class Translator:
    """Actor: raw rows -> the same rows with each image translated (PNG)."""

    def __init__(self, checkpoint: str, use_gpu: bool, name: str):
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.net = load_translator(checkpoint, self.device)
        self.name = name

    @torch.inference_mode()
    def __call__(self, batch: pa.Table) -> pa.Table:
        images = []
        for sample_id, data in zip(batch.column("id").to_pylist(), batch.column("image").to_pylist()):
            try:
                image = decode_image_bytes(data)
            except Exception as e:
                raise DatasetError(f"dataset '{self.name}', id {sample_id}: image bytes do not decode ({e})") from None
            images.append(encode_png(translate_image(self.net, image, self.device)))
        table = batch.drop_columns(["path"]) if "path" in batch.column_names else batch
        table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
        return table.select(SCHEMA.names).cast(SCHEMA)


def translate_image(net: torch.nn.Module, image: torch.Tensor, device: torch.device) -> np.ndarray:
    """uint8 [3,H,W] -> translated uint8 [H,W,3], reflection-padded to the generator's stride and cropped back."""
    h, w = image.shape[1:]
    x = to_network_input(image[None].to(device))
    ph, pw = -h % PAD_MULTIPLE, -w % PAD_MULTIPLE
    x = F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        y = net(x)[..., :h, :w]
    return ((y.float().clamp(-1, 1) + 1) * 127.5).round().byte()[0].permute(1, 2, 0).cpu().numpy()


def translate(checkpoint: str | Path, data: str | Path, out: str | Path, *, batch_size: int = 8,
              use_gpu: bool = False, num_actors: int | None = None, overwrite: bool = False):
    """Write the translated copy of dataset `data` to `out`; returns its DatasetInfo."""
    meta = read_meta(checkpoint)
    info = read_info(data)
    if ClassSet.from_json(meta["classes"]) != info.classes:
        raise CheckpointError(f"checkpoint {checkpoint} was trained on {meta['classes']['names']}; "
                              f"dataset '{info.name}' has {list(info.classes.names)}")
    out = prepare_output(out, overwrite)
    if num_actors is None:
        num_actors = max(1, min(4, int(ray.available_resources().get("GPU" if use_gpu else "CPU", 1))))
    rows = read_dataset(info).map_batches(
        Translator, batch_size=batch_size, batch_format="pyarrow", num_gpus=1 if use_gpu else 0,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=num_actors),
        fn_constructor_kwargs={"checkpoint": str(Path(checkpoint).resolve()), "use_gpu": use_gpu, "name": info.name})
    result = replace(info, name=f"{info.name}-{meta['method']}", shards=[], num_rows=0, class_pixels=None,
                     source={"translated_from": {"dataset": info.name, "path": str(info.path), "source": info.source},
                             "checkpoint": str(Path(checkpoint).resolve()), "method": meta["method"], "step": meta["step"]})
    result = write_dataset(rows, out, result)
    _save_preview(info, result, out / "preview.png")
    (out / "translate.json").write_text(json.dumps(result.source, indent=2))
    return result


def _save_preview(source, translated, path: Path, n: int = 4) -> None:
    """Source image beside its translation for the first few rows."""
    from rayda.eval.evaluate import first_ids
    from rayda.pairing.report import read_rows
    from rayda.report import save_grid

    ids = first_ids(translated, n)
    before, after = read_rows(source, ids, ["image"]), read_rows(translated, ids, ["image"])
    as_hwc = lambda row: decode_image_bytes(row["image"]).numpy().transpose(1, 2, 0)  # noqa: E731
    save_grid(path, [[as_hwc(before[i]), as_hwc(after[i])] for i in ids], titles=["source", "translated"])
