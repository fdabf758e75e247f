"""`rayda measure swd|fid|retrieval`: the domain-gap measures of the seeds, written as JSON and Markdown."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rayda.config import ConfigError

DEFAULT_MAX_IMAGES = {"swd": 512, "fid": 1000}


def measure(args: argparse.Namespace) -> dict:
    from rayda.runtime import init_ray

    out = Path(args.out)
    if args.which == "retrieval":
        if not (args.checkpoint and args.source and args.target):
            raise ConfigError("measure retrieval needs --checkpoint (one or more), --source and --target")
        checkpoints = dict(_named(c) for c in args.checkpoint)
        init_ray(args.address)
        from rayda.eval.retrieval import retrieval

        summary = retrieval(checkpoints, args.source, args.target, out, pool=args.pool, queries=args.queries,
                            seed=args.seed, use_gpu=args.use_gpu)
        return {name: {k: v for k, v in r.items() if k.startswith("map")} for name, r in summary["results"].items()}
    if not (args.a and args.b):
        raise ConfigError(f"measure {args.which} needs --a and --b (two datasets)")
    max_images = args.max_images or DEFAULT_MAX_IMAGES[args.which]
    if args.which == "fid":
        from rayda.eval.fid import dataset_fid, inception

        inception()  # a missing extra fails before Ray starts
        init_ray(args.address)
        result = dataset_fid(args.a, args.b, max_images=max_images, size=args.size, seed=args.seed, use_gpu=args.use_gpu)
        table = f"| FID |\n|---:|\n| {result['fid']:.2f} |"
    else:
        from rayda.eval.swd import dataset_swd

        init_ray(args.address)
        result = dataset_swd(args.a, args.b, max_images=max_images, size=args.size, seed=args.seed)
        levels = result["levels"]
        table = ("| " + " | ".join(levels) + " | mean |\n|" + "---:|" * (len(levels) + 1) + "\n| "
                 + " | ".join(f"{v:.2f}" for v in levels.values()) + f" | {result['mean']:.2f} |")
    write_distance(out, args.which, result, table)
    return result


def write_distance(out: Path, which: str, result: dict, table: str) -> None:
    from rayda.report import write_markdown

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{which}.json").write_text(json.dumps(result, indent=1))
    unit = " (x 1e3, per pyramid level)" if which == "swd" else ""
    write_markdown(out / f"{which}.md", f"{which.upper()} {result['a']} ↔ {result['b']}", [
        ("Setting", f"{result['num_images']} images per dataset, resized to {result['size'][0]}x{result['size'][1]}, "
                    f"seed {result['seed']}"),
        (f"{which.upper()}{unit}", table)])


def _named(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    return (name, path) if sep else (Path(text).parent.name or text, text)
