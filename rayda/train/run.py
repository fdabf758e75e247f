"""Driver side of training: build the TorchTrainer for a config, fit it, evaluate, report."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from rayda.config import ConfigError, RunConfig, to_dict
from rayda.data import eval_dataset, read_info
from rayda.methods import method_class
from rayda.pairing import pair_plan
from rayda.report import save_loss_curves
from rayda.train import checkpoint as ckpt
from rayda.train.entry import train_loop_per_worker


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: ray.train.Checkpoint
    history: list[dict]
    metrics: dict | None  # target-validation metrics, when data.val is set


def build_trainer(cfg: RunConfig, callbacks: list | None = None) -> TorchTrainer:
    method_cls = method_class(cfg.method.name)
    method_cls.parse_params(cfg)  # fail on the driver, before any worker starts
    if cfg.data.val and not method_cls.has_segmenter:
        raise ConfigError(f"data.val is set but method '{cfg.method.name}' trains no segmenter to evaluate; "
                          "remove data.val (evaluate after `rayda translate` and `rayda train`)")
    source = read_info(cfg.data.source)
    if method_cls.needs_depth and not source.has_depth:
        raise ConfigError(f"method '{cfg.method.name}' needs depth on the synthetic side, but data.source "
                          f"({source.path}) has none (dataset.json: has_depth false); convert the dataset with its "
                          "depth maps (e.g. SYNTHIA's Depth/, Virtual KITTI's depthgt) or pick one that has depth")
    if cfg.data.val:
        val = read_info(cfg.data.val)
        if val.classes != source.classes:
            raise ConfigError(f"data.val ({val.name}) has classes {val.classes.names}, data.source ({source.name}) has {source.classes.names}")
    loop_config = {"cfg": to_dict(cfg), "classes": source.classes.to_json()}
    if method_cls.needs_target:
        if not cfg.data.target:
            raise ConfigError(f"method '{cfg.method.name}' adapts to a target domain: set data.target")
        # Ids and neighbour lists only; each worker streams its pairs (`rayda.pairing.paired_stream`).
        pairs = cfg.data.pairs if cfg.data.pairing == "spfeat" else None
        loop_config["pair_plan"] = ray.put(pair_plan(source, read_info(cfg.data.target), pairs))
    elif cfg.data.pairs:
        raise ConfigError(f"data.pairs is set but method '{cfg.method.name}' trains on the source alone")
    # No train dataset here: each worker opens its own stream at its resume step.
    datasets = {"val": eval_dataset(val)} if cfg.train.val_every else None
    if datasets:
        datasets["val"].context.enable_progress_bars = False  # the loop prints its own progress line per report
    sc = cfg.scaling
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu,
                                               resources_per_worker={**sc.resources_per_worker, "CPU": sc.cpus_per_worker},
                                               placement_strategy=sc.placement_strategy),
        run_config=ray.train.RunConfig(
            name=cfg.name, storage_path=cfg.storage,
            failure_config=ray.train.FailureConfig(max_failures=sc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )


def train(cfg: RunConfig, evaluate_after: bool = True) -> TrainResult:
    """Fit (or resume: same storage_path and name) a run, then evaluate it on data.val if given."""
    from rayda.eval import evaluate

    from rayda.runtime import started_local_ray

    # An autoscaling cluster may add GPU nodes on demand; a local Ray without GPUs never will.
    if cfg.scaling.use_gpu and started_local_ray() and not ray.cluster_resources().get("GPU"):
        raise ConfigError("scaling.use_gpu is true but this machine has no GPU; set scaling.use_gpu=false")
    result = build_trainer(cfg).fit()
    run_dir = cfg.run_dir
    with result.checkpoint.as_directory() as d:
        history = torch.load(Path(d) / ckpt.STATE_FILE, map_location="cpu", weights_only=True)["history"]
        if (Path(d) / ckpt.VISUALS_FILE).is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(d) / ckpt.VISUALS_FILE, run_dir / ckpt.VISUALS_FILE)
        metrics = None
        if cfg.data.val and evaluate_after:
            metrics = evaluate(d, cfg.data.val, run_dir / "eval", batch_size=cfg.eval.batch_size,
                               protocol=cfg.eval.protocol, num_grid_images=cfg.eval.num_grid_images,
                               use_gpu=cfg.scaling.use_gpu)
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    curves = {}
    for row in history:
        for k, v in row.items():
            if k.startswith("loss/"):
                curves.setdefault(k[5:], []).append((row["step"], v))
    save_loss_curves(run_dir / "loss_curves.png", curves)
    write_run_report(cfg, run_dir, history, metrics)
    return TrainResult(run_dir, result.checkpoint, history, metrics)


def write_run_report(cfg: RunConfig, run_dir: Path, history: list[dict], metrics: dict | None) -> None:
    """RUN/report.md (images linked) and report.html (images inline): config, final losses, metrics, images."""
    import yaml

    from rayda.eval import format_table
    from rayda.report import write_html, write_markdown

    last = history[-1] if history else {}
    losses = "\n".join(f"| {k[5:]} | {v:.4g} |" for k, v in last.items() if k.startswith("loss/"))
    sections = [("Run", f"method `{cfg.method.name}`, {last.get('step', 0)} of {cfg.train.steps} steps on "
                        f"{last.get('workers', cfg.scaling.num_workers)} worker(s), "
                        f"{last.get('images_per_s', 0):.1f} images/s in the last report window"),
                ("Losses at the last report", "| loss | value |\n|---|---:|\n" + losses)]
    if metrics is not None:
        sections.append((f"Target validation ({metrics['dataset']})",
                         format_table({cfg.name: metrics}, list(metrics["per_class"]))))
    sections.append(("Config", "```yaml\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False) + "```"))
    images = [(caption, run_dir / name) for caption, name in (
        ("training losses", "loss_curves.png"), ("the method's images at the last checkpoint", ckpt.VISUALS_FILE),
        ("target validation predictions", "eval/predictions.png")) if (run_dir / name).is_file()]
    write_markdown(run_dir / "report.md", f"rayda run {cfg.name}",
                   sections + [("Images", "\n".join(f"![{c}]({p.relative_to(run_dir)})" for c, p in images))])
    write_html(run_dir / "report.html", f"rayda run {cfg.name}", sections, images)
