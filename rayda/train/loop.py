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
from rayda.methods import StepContext, method_class, unwrap
from rayda.pairing import paired_stream
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


def training_batches(cfg, method, rank: int, world: int, start: int, plan=None):
    """This worker's batches for steps start.. of the run: its deterministic stream (`rayda.data.stream`,
    paired with the target by `rayda.pairing.paired_stream`) from sample start * batch_size on, so a
    resumed run trains on what the uninterrupted one would have."""
    b = cfg.data.batch_size
    source, augment = read_info(cfg.data.source), Augment.of(cfg.data)
    where = dict(rows=(cfg.train.steps - start) * b, start=start * b, rank=rank, world=world,
                 mix_rows=cfg.data.shuffle_buffer, with_depth=method.needs_depth)
    if method.needs_target:
        ds = paired_stream(source, read_info(cfg.data.target), plan, augment, cfg.train.seed, **where)
    else:
        ds = train_stream(source, augment, cfg.train.seed, **where)
    return iter(ds.iter_torch_batches(batch_size=b, drop_last=True))


def gather_buffers(method, rank: int, world: int) -> list[dict] | None:
    """Every rank's buffers on rank 0 (a collective): each rank's image pools hold its own data."""
    if not method.buffers or world == 1:
        return None
    mine = {name: buffer.state_dict() for name, buffer in method.buffers.items()}
    everyone = [None] * world if rank == 0 else None
    torch.distributed.gather_object(mine, everyone, dst=0)
    return everyone


@torch.no_grad()
def broadcast_buffers(nets) -> None:
    """Rank 0's buffers (batch-norm statistics) to every rank, one collective per dtype. DDP does this on
    each forward of a wrapped net, but a step also runs nets unwrapped (held fixed, or in eval mode) on
    statistics a rank drifted to on its own, which no checkpoint holds; from the same start, each step
    then runs the same whether or not the run was resumed."""
    groups = defaultdict(list)
    for net in nets:
        for buffer in unwrap(net).buffers():
            groups[buffer.dtype].append(buffer)
    for buffers in groups.values():
        flat = torch.cat([b.reshape(-1) for b in buffers])
        torch.distributed.broadcast(flat, src=0)
        for b, value in zip(buffers, flat.split([b.numel() for b in buffers])):
            b.copy_(value.view_as(b))


@torch.inference_mode()
def validate_segmenter(net: torch.nn.Module, shard, classes: ClassSet, device: torch.device, batch_size: int,
                       scored: list[int] | None) -> float:
    """mIoU of the segmenter on this worker's shard of data.val, summed over all workers."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed:
        # Under no_grad DDP skips its buffer sync, so each rank would score with its own BatchNorm
        # statistics; score with rank 0's, the ones the checkpoint keeps.
        broadcast_buffers([net])
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
        if "rank_buffers" in state:  # this rank's own pools (by rank modulo, if the world size changed)
            mine = state["rank_buffers"][rank % len(state["rank_buffers"])]
            for name, buffer in mine.items():
                method.buffers[name].load_state_dict(buffer)
        start, history = state["step"], state["history"]
        resumed = start
        if rank == 0:
            log.info(f"[{cfg.name}] resuming from the checkpoint of step {start}")
    scored = protocol_classes(classes, cfg.eval.protocol)

    stream = training_batches(cfg, method, rank, ctx.get_world_size(), start, config.get("pair_plan"))
    # Per-loss counts: a method may return a term only on some steps (CSA's stages, for one).
    sums, counts, count, t0 = defaultdict(float), defaultdict(int), 0, time.perf_counter()
    last_checkpoint, preemption_saved = "none yet", False
    for step in range(start, cfg.train.steps):
        seed_everything(cfg.train.seed, rank, step)
        if ctx.get_world_size() > 1:
            broadcast_buffers(method.nets.values())
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
            rank_buffers = gather_buffers(method, rank, ctx.get_world_size())
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    ckpt.save(d, method=method, step=done, history=history, config=config["cfg"],
                              rank_buffers=rank_buffers)
                    grid = method.visuals(batch)
                    if grid is not None:  # travels with the checkpoint to the run's storage
                        save_grid(Path(d) / ckpt.VISUALS_FILE, grid[1], titles=grid[0])
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None,
                                 checkpoint_dir_name=f"checkpoint_{done:08d}")
            last_checkpoint = f"step {done}"
        else:
            ray.train.report(metrics)
        sums, counts, count, t0 = defaultdict(float), defaultdict(int), 0, time.perf_counter()
