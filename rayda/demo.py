"""`rayda demo`: simworld end to end on a local Ray: generate, train source-only and oracle, evaluate, report."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from rayda.config import validate
from rayda.data import prepare_output
from rayda.eval import format_table
from rayda.simworld import generate
from rayda.train.run import train

log = logging.getLogger("rayda")

# Scale presets: images per split, image size, training steps. "default" shows the domain gap;
# "quick" only exercises the whole path.
SCALES = {
    "default": {"n_train": 400, "n_val": 100, "size": (128, 256), "crop": (96, 192), "steps": 500, "batch": 8},
    "quick": {"n_train": 64, "n_val": 16, "size": (64, 128), "crop": (64, 128), "steps": 20, "batch": 4},
}


def demo_config(name: str, source: str, val: str, out: Path, scale: dict) -> dict:
    return {
        "name": name,
        "storage_path": str(out / "runs"),
        "data": {"source": source, "val": val, "crop": list(scale["crop"]), "batch_size": scale["batch"]},
        "model": {"arch": "deeplabv3plus_mobilenetv2", "size": "cpu"},
        "method": {"name": "source_only", "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0},
        "train": {"steps": scale["steps"], "report_every": max(1, scale["steps"] // 10),
                  "checkpoint_every": scale["steps"]},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "eval": {"num_grid_images": 4},
    }


def run_demo(out: str | Path, quick: bool = False, overwrite: bool = False) -> dict:
    scale = SCALES["quick" if quick else "default"]
    out = prepare_output(out, overwrite)
    t0 = time.perf_counter()
    data = out / "data"
    splits = {  # distinct seeds: the real validation images are never trained on
        "synthetic_train": ("synthetic", scale["n_train"], 0),
        "real_train": ("real", scale["n_train"], 1),
        "real_val": ("real", scale["n_val"], 2),
    }
    for i, (split, (domain, n, seed)) in enumerate(splits.items(), 1):
        log.info(f"[demo {i}/5] generating {split}: {n} {domain} images at {scale['size'][0]}x{scale['size'][1]}")
        generate(domain, n, scale["size"], seed, data / split)

    runs = {"source_only": data / "synthetic_train", "oracle": data / "real_train"}
    results, configs = {}, {}
    for i, (run, source) in enumerate(runs.items(), 4):
        log.info(f"[demo {i}/5] training {run} on {source.name} for {scale['steps']} steps, evaluating on real_val")
        configs[run] = demo_config(run, str(source), str(data / "real_val"), out, scale)
        result = train(validate(configs[run]))
        results[run] = result
    summaries = {run: r.metrics for run, r in results.items()}
    report = {
        "runs": {run: {"target_miou": m["miou"], "per_class": m["per_class"], "run_dir": str(results[run].run_dir)}
                 for run, m in summaries.items()},
        "gap_points": 100 * (summaries["oracle"]["miou"] - summaries["source_only"]["miou"]),
        "config": {"scale": "quick" if quick else "default", **scale, "runs": configs},
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    write_demo_report(out, report, summaries, results)
    return report


def write_demo_report(out: Path, report: dict, summaries: dict, results: dict) -> None:
    import shutil

    from rayda.classes import CITYSCAPES_NAMES
    from rayda.report import write_html, write_markdown

    table = format_table(summaries, CITYSCAPES_NAMES)
    images = []
    for run, r in results.items():
        shutil.copy(r.run_dir / "eval" / "predictions.png", out / f"{run}_predictions.png")
        images.append((f"{run}: target validation predictions", out / f"{run}_predictions.png"))
        shutil.copy(r.run_dir / "loss_curves.png", out / f"{run}_loss_curves.png")
        images.append((f"{run}: training loss", out / f"{run}_loss_curves.png"))
    summary = (f"Target (real-style) validation mIoU: source-only {100 * report['runs']['source_only']['target_miou']:.1f}, "
               f"oracle {100 * report['runs']['oracle']['target_miou']:.1f}; domain gap "
               f"{report['gap_points']:.1f} points. Wall time {report['wall_time_s']:.0f} s.")
    sections = [("Summary", summary), ("Per-class IoU (%) on the real-style validation split", table)]
    write_markdown(out / "report.md", "rayda demo: simworld synthetic -> real", sections
                   + [("Images", "\n".join(f"![{c}]({p.name})" for c, p in images))])
    write_html(out / "report.html", "rayda demo: simworld synthetic -> real", sections, images)
    print("\n" + table + "\n\n" + summary + f"\nReport: {out / 'report.md'}")
