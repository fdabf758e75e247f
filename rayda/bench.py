"""Benchmarks that compare rayda's Ray paths against plain PyTorch equivalents in one run."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray
import torch

from rayda.data import Augment, read_info, stream_epochs, to_network_input, train_dataset
from rayda.data.pipeline import decode_batch

BENCH_SIZE = (256, 512)
AUGMENT = Augment(crop=(256, 512), scale=(0.75, 1.25), flip=True)


class ShardRows(torch.utils.data.IterableDataset):
    """The plain-PyTorch baseline: each DataLoader worker reads its share of the shards and decodes."""

    def __init__(self, info, augment):
        self.files, self.name, self.augment = info.shard_paths(), info.name, augment
        self.light = {"name": info.name, "num_classes": info.classes.num_classes}

    def __iter__(self):
        w = torch.utils.data.get_worker_info()
        files = self.files[w.id::w.num_workers] if w else self.files
        for f in files:
            for rb in pq.ParquetFile(f).iter_batches(batch_size=16, columns=["id", "image", "label"]):
                batch = {k: rb.column(k).to_numpy(zero_copy_only=False) for k in ("id", "image", "label")}
                batch["path"] = np.array([f] * rb.num_rows)
                out = decode_batch(batch, self.light, self.augment, keep_id=False, with_depth=False)
                for i in range(len(out["image"])):
                    yield {"image": out["image"][i], "label": out["label"][i]}


def _dataset(out: Path, n: int):
    from rayda.simworld import generate

    path = out / f"simworld_{n}"
    if not (path / "dataset.json").exists():
        generate("synthetic", n, BENCH_SIZE, 0, path, overwrite=True)
    return read_info(path)


def bench_ingest(out: Path, n: int = 2048, epochs: int = 2, batch_size: int = 16) -> dict:
    """Decode + augment throughput over `epochs` passes: Ray Data pipeline vs DataLoader, same shards,
    same CPU count, start-up included on both sides (as a training run streams them)."""
    info = _dataset(out, n)
    cpus = int(ray.cluster_resources().get("CPU", 1))

    def ray_data():
        per_stream = stream_epochs(info.num_rows, epochs * info.num_rows)  # as a training run streams it
        ds = train_dataset(info, AUGMENT, seed=0, epochs=per_stream)
        for _ in range(math.ceil(epochs / per_stream)):
            for _ in ds.iter_torch_batches(batch_size=batch_size):
                pass

    def dataloader():
        loader = torch.utils.data.DataLoader(ShardRows(info, AUGMENT), batch_size=batch_size, num_workers=cpus,
                                             persistent_workers=True)
        for _ in range(epochs):
            for _ in loader:
                pass

    timings = {}
    for name, fn in (("ray_data", ray_data), ("dataloader", dataloader)) * 2:  # interleaved, best of two
        t0 = time.perf_counter()
        fn()
        timings.setdefault(name, []).append(time.perf_counter() - t0)
    rates = {k: epochs * info.num_rows / min(v) for k, v in timings.items()}
    return {"images": info.num_rows, "epochs": epochs, "size": list(BENCH_SIZE), "cpus": cpus, "images_per_s": rates,
            "ratio_ray_data_over_dataloader": rates["ray_data"] / rates["dataloader"]}


def bench_train_overhead(out: Path, steps: int = 60, use_gpu: bool = False) -> dict:
    """Source-only steps/s under TorchTrainer (1 worker) vs a plain single-process loop, same everything.

    CPU: the cpu-size DeepLabV3+ at 128x256, batch 8, one torch thread on both sides (a Ray worker
    with 1 CPU runs torch with OMP_NUM_THREADS=1). GPU: the full-size one at 256x512, batch 16, bf16.
    """
    from rayda.classes import CITYSCAPES_19
    from rayda.config import validate
    from rayda.methods import StepContext, method_class
    from rayda.train.run import build_trainer

    info = _dataset(out, 512 if use_gpu else 256)
    warmup = 10
    crop, batch_size, size = ((256, 512), 16, "full") if use_gpu else ((128, 256), 8, "cpu")
    cpus = int(ray.cluster_resources().get("CPU", 2))
    raw = {
        "name": f"overhead_{int(time.time())}", "storage_path": str(out / "runs"),
        "data": {"source": str(info.path), "crop": list(crop), "batch_size": batch_size},
        "model": {"arch": "deeplabv3plus_mobilenetv2", "size": size},
        "method": {"name": "source_only", "optimizer": "adam", "lr": 1e-3},
        "train": {"steps": warmup + steps, "report_every": warmup, "checkpoint_every": warmup + steps},
        "scaling": {"num_workers": 1, "use_gpu": use_gpu, "cpus_per_worker": 1},
    }
    cfg = validate(raw)
    # Ray Train: wall time between the report closing the warm-up and the last one (reports included).
    result = build_trainer(cfg).fit()
    with result.checkpoint.as_directory() as d:
        hist = torch.load(Path(d) / "state.pt", weights_only=True)["history"]
    first = next(h for h in hist if h["step"] == warmup)
    ray_steps_per_s = (hist[-1]["step"] - first["step"]) / (hist[-1]["time_s"] - first["time_s"])

    # Plain loop: same method class and data, decoded by DataLoader workers (one on CPU, as Ray Data
    # gets the one CPU left beside the trainer; the rest of the CPUs on a GPU machine).
    device = torch.device("cuda" if use_gpu else "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if not use_gpu else threads)
    try:
        method = method_class("source_only")(cfg, CITYSCAPES_19)
        method.nets = {k: v.to(device) for k, v in method.nets.items()}
        method.configure_optimizers()
        loader = torch.utils.data.DataLoader(ShardRows(info, Augment(crop=crop)), batch_size=batch_size,
                                             num_workers=max(1, cpus - 1), drop_last=True, pin_memory=use_gpu)
        it = iter(_forever(loader))

        def step(i):
            batch = _tensors(next(it), device)
            method.train_step(batch, StepContext(i, cfg.train.steps, device, amp=True))

        for i in range(warmup):
            step(i)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(warmup, warmup + steps):
            step(i)
        _sync(device)
        plain_steps_per_s = steps / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return {"steps": steps, "batch_size": batch_size, "crop": list(crop), "model_size": size,
            "device": torch.cuda.get_device_name() if use_gpu else "cpu",
            "steps_per_s": {"ray_train": ray_steps_per_s, "plain_pytorch": plain_steps_per_s},
            "ratio_ray_train_over_plain": ray_steps_per_s / plain_steps_per_s}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _forever(loader):
    while True:
        yield from loader


def _tensors(batch: dict, device=torch.device("cpu")) -> dict:
    batch = {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items()}
    batch["image"] = to_network_input(batch["image"])
    return batch


def run(which: str, out: str | Path, steps: int = 60, use_gpu: bool = False) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if which == "pairing":
        from rayda.pairing.bench import bench_pairing

        result = bench_pairing(out)
    elif which == "ingest":
        result = bench_ingest(out)
    else:
        result = bench_train_overhead(out, steps=steps, use_gpu=use_gpu)
    result.update(benchmark=which, cpu_count=os.cpu_count(), torch=torch.__version__, ray=ray.__version__)
    path = out / f"{which}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result
