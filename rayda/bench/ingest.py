"""`rayda bench ingest|train-overhead`: rayda's Ray paths against plain PyTorch equivalents, in one run."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray
import torch

from rayda.data import Augment, read_info, to_network_input, train_stream
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
            # No Arrow thread pool: a forked DataLoader worker inherits the driver's, without its threads.
            for rb in pq.ParquetFile(f).iter_batches(batch_size=16, columns=["id", "image", "label"], use_threads=False):
                batch = {k: rb.column(k).to_numpy(zero_copy_only=False) for k in ("id", "image", "label")}
                batch["path"] = np.array([f] * rb.num_rows)
                out = decode_batch(batch, self.light, self.augment, keep_id=False, with_depth=False)
                for i in range(len(out["image"])):
                    yield {"image": out["image"][i], "label": out["label"][i]}


def _dataset(out: Path, n: int, domain: str = "synthetic"):
    from rayda.simworld import generate

    path = out / f"simworld_{domain}_{n}"
    if not (path / "dataset.json").exists():
        generate(domain, n, BENCH_SIZE, 0 if domain == "synthetic" else 1, path, overwrite=True)
    return read_info(path)


def bench_ingest(out: Path, n: int = 2048, epochs: int = 2, batch_size: int = 16) -> dict:
    """Decode + augment throughput over `epochs` passes: Ray Data pipeline vs DataLoader, same shards,
    same CPU count, start-up included on both sides (as a training run streams them)."""
    info = _dataset(out, n)
    cpus = int(ray.cluster_resources().get("CPU", 1))

    def ray_data():
        stream = train_stream(info, AUGMENT, seed=0, rows=epochs * info.num_rows)  # as a training worker reads
        for _ in stream.iter_torch_batches(batch_size=batch_size):
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


def bench_train_overhead(out: Path, steps: int = 60, use_gpu: bool = False, method: str = "source_only",
                         report_every: int = 10) -> dict:
    """A method's steps/s under TorchTrainer (1 worker) vs a plain single-process loop, same everything.

    CPU: the cpu-size nets at 128x256, batch 8 (2 for adversarial methods), one torch thread on both sides
    (a Ray worker with 1 CPU runs torch with OMP_NUM_THREADS=1). GPU: full size at 256x512, batch 16 (2), bf16.
    The method runs with its simworld config's parameters (without a segmenter_init).
    """
    import yaml

    from rayda.bench.methods import CONFIGS
    from rayda.classes import CITYSCAPES_19
    from rayda.config import validate
    from rayda.methods import StepContext, method_class
    from rayda.train.run import build_trainer

    method_cls = method_class(method)
    if method_cls.needs_depth:  # the plain loop's DataLoader side decodes images and labels only
        raise ValueError(f"train-overhead times methods without depth; '{method}' needs depth")
    n = 512 if use_gpu else 256
    info = _dataset(out, n)
    target = _dataset(out, n, "real") if method_cls.needs_target else None
    params = yaml.safe_load((CONFIGS / f"{method}.yaml").read_text())["method"]
    params.pop("segmenter_init", None)
    warmup = report_every  # the Ray side is timed from the report that closes the warm-up
    crop, batch_size, size = ((256, 512), 16, "full") if use_gpu else ((128, 256), 8, "cpu")
    if method != "source_only":
        batch_size = 2
    cpus = int(ray.cluster_resources().get("CPU", 2))
    raw = {
        "name": f"overhead_{int(time.time())}", "storage_path": str(out / "runs"),
        "data": {"source": str(info.path), "target": str(target.path) if target else None,
                 "crop": list(crop), "batch_size": batch_size},
        "model": {"arch": "deeplabv3plus_mobilenetv2", "size": size},
        "method": params,
        "train": {"steps": warmup + steps, "report_every": warmup, "checkpoint_every": warmup + steps},
        "scaling": {"num_workers": 1, "use_gpu": use_gpu, "cpus_per_worker": 1},
    }
    cfg = validate(raw)
    # Ray Train: wall time between the report closing the warm-up and the last one (reports included).
    result = build_trainer(cfg).fit()
    with result.checkpoint.as_directory() as d:
        hist = torch.load(Path(d) / "state.pt", weights_only=True)["history"]
    first = next(h for h in hist if h["step"] == warmup)
    ray_steps_per_s = (hist[-1]["step"] - first["step"]) / (hist[-1]["unix_time"] - first["unix_time"])

    # Plain loop: same method class and data, decoded by DataLoader workers (one on CPU, as Ray Data
    # gets the one CPU left beside the trainer; the rest of the CPUs on a GPU machine).
    device = torch.device("cuda" if use_gpu else "cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if not use_gpu else threads)
    try:
        m = method_cls(cfg, CITYSCAPES_19)
        m.nets = {k: v.to(device) for k, v in m.nets.items()}
        m.configure_optimizers()
        workers = max(1, cpus - 1)
        loader = lambda i: torch.utils.data.DataLoader(  # noqa: E731
            ShardRows(i, Augment(crop=crop)), batch_size=batch_size, num_workers=workers if not target else
            max(1, workers // 2), drop_last=True, pin_memory=use_gpu)
        it = iter(_forever(loader(info)))
        it_target = iter(_forever(loader(target))) if target else None

        def step(i):
            batch = _tensors(next(it), device)
            if it_target:
                batch["target_image"] = _tensors(next(it_target), device)["image"]
            m.train_step(batch, StepContext(i, cfg.train.steps, device, amp=True))

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
    return {"method": method, "steps": steps, "report_every": report_every, "batch_size": batch_size,
            "crop": list(crop), "model_size": size,
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
