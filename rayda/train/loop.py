"""The one training loop, run by every Ray Train worker for every method."""
from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch

from rayda.classes import ClassSet
from rayda.config import validate
from rayda.data import Augment, read_info, to_network_input, train_stream
from rayda.eval.evaluate import predict, protocol_classes
from rayda.eval.metrics import confusion_matrix, summarize
from rayda.methods import StepContext, method_class
from rayda.report import save_grid
from rayda.train import checkpoint as ckpt


log = logging.getLogger("rayda")  # Ray Train sends worker logs to the driver's console (print is echoed twice)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or Inf; the message names step, loss term and last good checkpoint."""


def seed_everything(seed: int, rank: int, step: int) -> None:
    # RNG streams are a function of (seed, rank, step), re-derived at every step, so a run resumed from
    # any step (a preemption checkpoint too) draws exactly what the uninterrupted run drew from there on.
    s = (seed * 1_000_003 + rank * 7_919 + step) % 2**32
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def source_batches(cfg, needs_depth: bool, rank: int, world: int, start: int):
    """This worker's batches for steps start.. of the run: its deterministic stream (`rayda.data.stream`)
    from sample start * batch_size on, so a resumed run trains on what the uninterrupted one would have."""
    b = cfg.data.batch_size
    ds = train_stream(read_info(cfg.data.source), Augment.of(cfg.data), cfg.train.seed,
                      rows=(cfg.train.steps - start) * b, start=start * b, rank=rank, world=world,
                      mix_rows=cfg.data.shuffle_buffer, with_depth=needs_depth)
    return iter(ds.iter_torch_batches(batch_size=b, drop_last=True))


def paired_batches(shard, batch_size: int, shuffle_buffer: int, seed: int, name: str):
    """Endless stream of batches, epoch after epoch, from this worker's shard of the paired dataset."""
    epoch = 0
    while True:
        n = 0
        for batch in shard.iter_torch_batches(batch_size=batch_size, drop_last=True,
                                              local_shuffle_buffer_size=shuffle_buffer or None,
                                              local_shuffle_seed=seed + epoch):
            n += 1
            yield batch
        if n == 0:
            raise ValueError(f"dataset '{name}' gave this worker no full batch of {batch_size}: "
                             "lower data.batch_size or use fewer workers")
        epoch += 1


@torch.inference_mode()
def validate_segmenter(net: torch.nn.Module, shard, classes: ClassSet, device: torch.device, batch_size: int,
                       scored: list[int] | None) -> float:
    """mIoU of the segmenter on this worker's shard of data.val, summed over all workers."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        # Under no_grad DDP skips its buffer sync, so each rank would score with its own BatchNorm
        # statistics; score with rank 0's, the ones the checkpoint keeps (DDP resends them next step anyway).
        for buffer in net.buffers():
            torch.distributed.broadcast(buffer, src=0)
    modes = {m: m.training for m in net.modules()}
    net.eval()
    c = classes.num_classes
    conf = np.zeros((c, c), np.int64)
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for image, label in zip(batch["image"], batch["label"]):
            conf += confusion_matrix(predict(net, image[None], device)[0], label, c)
    for m, mode in modes.items():
        m.train(mode)
    if distributed:
        total = torch.from_numpy(conf).to(device)
        torch.distributed.all_reduce(total)
        conf = total.cpu().numpy()
    return summarize(conf, classes.names, scored)["miou"]


def train_loop(config: dict) -> None:
    cfg = validate(config["cfg"])
    classes = ClassSet.from_json(config["classes"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()

    seed_everything(cfg.train.seed, 0, 0)  # the same initial weights in every run of this seed
    method = method_class(cfg.method.name)(cfg, classes)
    for name, net in method.nets.items():
        method.nets[name] = ray.train.torch.prepare_model(net)
    method.configure_optimizers()

    start, history, resumed = 0, [], None
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            state = ckpt.load_state(d, method)
        method.load_state_dict(state["method_state"])
        start, history = state["step"], state["history"]
        resumed = start
        if rank == 0:
            log.info(f"[{cfg.name}] resuming from the checkpoint of step {start}")
    scored = protocol_classes(classes, cfg.eval.protocol)

    if method.needs_target:  # a paired (source, target) dataset, split across workers by Ray Train
        stream = paired_batches(ray.train.get_dataset_shard("train"), cfg.data.batch_size,
                                cfg.data.shuffle_buffer, cfg.train.seed + start, cfg.data.source)
    else:
        stream = source_batches(cfg, method.needs_depth, rank, ctx.get_world_size(), start)
    # Per-loss counts: a method may return a term only on some steps (CSA's stages, for one).
    sums, counts, count, t0 = defaultdict(float), defaultdict(int), 0, time.perf_counter()
    last_checkpoint, preemption_saved = "none yet", False
    for step in range(start, cfg.train.steps):
        seed_everything(cfg.train.seed, rank, step)
        batch = next(stream)
        for key in ("image", "target_image"):
            if key in batch:
                batch[key] = to_network_input(batch[key])
        losses = method.train_step(batch, StepContext(step, cfg.train.steps, device, cfg.train.amp))
        for name, value in losses.items():
            value = float(value)
            if not math.isfinite(value):
                raise NonFiniteLossError(f"step {step}: loss '{name}' is {value}; last good checkpoint: {last_checkpoint}")
            sums[name] += value
            counts[name] += 1
        count += 1

        done = step + 1
        save = done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps
        if done % cfg.train.report_every and not save:
            continue
        # A node of the run is being reclaimed (spot): checkpoint now. A barrier, asked at every report.
        if not preemption_saved and ray.train.get_preemption_info() is not None:
            save = preemption_saved = True
            if rank == 0:
                log.warning(f"[{cfg.name}] a node of this run is being preempted: checkpointing at step {done}")
        elapsed = time.perf_counter() - t0
        metrics = {f"loss/{k}": v / counts[k] for k, v in sums.items()}
        metrics.update(method.learning_rates())
        metrics.update(step=done, workers=ctx.get_world_size(), unix_time=time.time(),
                       images_per_s=count * cfg.data.batch_size * ctx.get_world_size() / elapsed)
        if resumed is not None:  # the first report after a restart says where it restarted
            metrics["resumed_from"], resumed = resumed, None
        if cfg.train.val_every and (done % cfg.train.val_every == 0 or done == cfg.train.steps):
            metrics["val/miou"] = validate_segmenter(method.segmenter, ray.train.get_dataset_shard("val"), classes,
                                                     device, cfg.eval.batch_size, scored)
        history.append(metrics)
        if rank == 0:
            losses_text = " ".join(f"{k[5:]} {v:.4g}" for k, v in metrics.items() if k.startswith("loss/"))
            log.info(f"[{cfg.name}] step {done}/{cfg.train.steps} {losses_text} ({metrics['images_per_s']:.1f} img/s)")
        if save:
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    ckpt.save(d, method=method, step=done, history=history, config=config["cfg"])
                    grid = method.visuals(batch)
                    if grid is not None:  # travels with the checkpoint to the run's storage
                        save_grid(Path(d) / ckpt.VISUALS_FILE, grid[1], titles=grid[0])
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None,
                                 checkpoint_dir_name=f"checkpoint_{done:08d}")
            last_checkpoint = f"step {done}"
        else:
            ray.train.report(metrics)
        sums, counts, count, t0 = defaultdict(float), defaultdict(int), 0, time.perf_counter()
