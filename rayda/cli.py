"""The `rayda` command line."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from rayda.classes import PROTOCOLS
from rayda.config import ConfigError
from rayda.convert import KINDS as CONVERT_KINDS


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 256x512), got {text!r}") from None
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rayda", description=__doc__)
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, a running cluster, or a local Ray)")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a built-in benchmark dataset")
    g.add_argument("benchmark", choices=["simworld"])
    g.add_argument("--domain", required=True, choices=["synthetic", "real"])
    g.add_argument("--n", type=int, required=True, help="number of images")
    g.add_argument("--size", type=_size, default=(256, 512), help="HxW (default 256x512)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True)
    g.add_argument("--gap", action="append", default=[], metavar="KEY=VALUE", help="override a domain-gap knob")
    g.add_argument("--rows-per-shard", type=int, default=64)
    g.add_argument("--overwrite", action="store_true")

    c = sub.add_parser("convert", help="convert a public dataset or a folder of images to a shard dataset")
    c.add_argument("kind", choices=CONVERT_KINDS)
    c.add_argument("--root", required=True, help="the dataset as downloaded (its top folder)")
    c.add_argument("--out", required=True)
    c.add_argument("--split", help="cityscapes: train|val|test; kitti: training|testing; vkitti1/2: all or a variation")
    c.add_argument("--protocol", choices=list(PROTOCOLS), help="class protocol the labels are remapped to (default 19)")
    c.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="raise: stop at the first bad file; skip: convert the rest, list them in OUT/skipped.json")
    c.add_argument("--depth-scale", type=float, help="synthia, folder: depth PNG units per metre (default 100: cm)")
    c.add_argument("--rgb", choices=["rgb", "rgb-2k"], help="synscapes: 1440x720 images or 2048x1024 ones (default rgb)")
    c.add_argument("--classes", help="folder: YAML class map (label value or colour -> class name)")
    c.add_argument("--domain", choices=["synthetic", "real"], help="folder: what the images are (default real)")
    c.add_argument("--name", help="dataset name (default: KIND-SPLIT; folder: the root's name)")
    c.add_argument("--rows-per-shard", type=int, default=64)
    c.add_argument("--overwrite", action="store_true")

    pr = sub.add_parser("pair", help="SP-Feat pairing: each real image's K nearest synthetic images, balanced")
    pr.add_argument("--synthetic", required=True, help="labeled synthetic dataset")
    pr.add_argument("--real", required=True, help="real dataset (labels, or --real-labels-from)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--k", type=int, default=15)
    pr.add_argument("--levels", default="1,2,4", help="pyramid levels, comma-separated")
    pr.add_argument("--real-labels-from", metavar="CHECKPOINT", help="use a segmenter's predictions as real labels")
    pr.add_argument("--max-uses", type=int, help="lists an image may join before it gives way (default 2*K*R/N)")
    pr.add_argument("--max-rows-per-worker", type=int, default=250_000,
                    help="synthetic feature rows one KNN actor holds; more rows are sharded over actors")
    pr.add_argument("--use-gpu", action="store_true", help="predict real labels on GPU")
    pr.add_argument("--overwrite", action="store_true")

    tr = sub.add_parser("translate", help="translate a dataset's images with a trained source->target generator")
    tr.add_argument("--checkpoint", required=True)
    tr.add_argument("--data", required=True, help="the (synthetic) dataset to translate")
    tr.add_argument("--out", required=True)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--use-gpu", action="store_true")
    tr.add_argument("--overwrite", action="store_true")

    t = sub.add_parser("train", help="train a method (resumes if the run exists)")
    t.add_argument("--config", required=True)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted)")

    tu = sub.add_parser("tune", help="Ray Tune sweep of a run config's keys (loss weights, CSA's p, ...)")
    tu.add_argument("--config", required=True, help="the run config every trial starts from; its name names the sweep")
    tu.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted)")
    tu.add_argument("--space", required=True, help="search-space YAML (see jobs/configs/*/tune_*.yaml)")
    tu.add_argument("--num-samples", type=int, default=8, help="trials (each grid value this many times)")
    tu.add_argument("--scheduler", choices=["asha", "none"], default="asha", help="asha: stop poor trials early")
    tu.add_argument("--search", choices=["random", "optuna", "hyperopt"], default="random",
                    help="optuna/hyperopt need the 'tune' extra")
    tu.add_argument("--grace-period", type=int, help="asha: steps before a trial may be stopped "
                    "(default: a quarter of train.steps)")
    tu.add_argument("--max-concurrent", type=int, help="trials at a time (default: as many as the cluster fits)")
    tu.add_argument("--restore", action="store_true", help="continue the interrupted sweep of this name")

    e = sub.add_parser("eval", help="evaluate a checkpoint on a labeled dataset")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--protocol", choices=["19", "16", "13"])
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--use-gpu", action="store_true")

    m = sub.add_parser("measure", help="domain gap: SWD or FID between two datasets, cross-domain retrieval of segmenters")
    m.add_argument("which", choices=["swd", "fid", "retrieval"])
    m.add_argument("--a", help="swd/fid: a dataset, e.g. a translated synthetic set")
    m.add_argument("--b", help="swd/fid: the dataset to compare it with, e.g. the real set")
    m.add_argument("--max-images", type=int, help="swd/fid: images drawn from each dataset (default swd 512, fid 1000)")
    m.add_argument("--size", type=_size, default=(256, 512), help="swd/fid: images are resized to HxW first")
    m.add_argument("--checkpoint", action="append", metavar="[NAME=]DIR",
                   help="retrieval: a checkpoint with a segmenter; repeat to compare (e.g. source_only=... lsd=...)")
    m.add_argument("--source", help="retrieval: the synthetic dataset")
    m.add_argument("--target", help="retrieval: the real dataset")
    m.add_argument("--pool", type=int, default=200, help="retrieval: pool images per domain")
    m.add_argument("--queries", type=int, default=100, help="retrieval: query images per domain (disjoint from the pool)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--use-gpu", action="store_true")
    m.add_argument("--out", required=True)

    d = sub.add_parser("demo", help="end-to-end demo on a local Ray: simworld, source-only vs oracle")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--quick", action="store_true", help="smallest scale (about 3 minutes on 2 cores)")
    d.add_argument("--overwrite", action="store_true")

    b = sub.add_parser("bench", help="performance benchmarks, or the method comparison ('methods')")
    b.add_argument("which", choices=["ingest", "train-overhead", "pairing", "methods"])
    b.add_argument("--out", default="bench_out")
    b.add_argument("--steps", type=int, default=60, help="train-overhead: steps per side")
    b.add_argument("--use-gpu", action="store_true", help="train-overhead on one GPU (full-size model, bf16); "
                   "methods: train every run on a GPU")
    b.add_argument("--method", default="source_only", help="train-overhead: the method to time")
    b.add_argument("--report-every", type=int, default=10,
                   help="train-overhead: ray.train.report every N steps (also the warm-up steps)")
    b.add_argument("--benchmark", choices=["simworld"], default="simworld", help="methods: the benchmark")
    b.add_argument("--scale", choices=["demo", "full", "smoke"], default="demo", help="methods: data and steps")
    b.add_argument("--methods", default="all", help="methods: 'all' or a comma list, e.g. csa,lsd,gio_ada")
    b.add_argument("--parallel", type=int, default=None, help="methods: runs at a time (default: from resources)")
    b.add_argument("--overwrite", action="store_true", help="methods: replace a non-empty --out")
    return p


def run(args: argparse.Namespace) -> int:
    from rayda.runtime import init_ray

    if args.command == "generate":
        from rayda.config import parse_overrides
        from rayda.simworld import GapConfig, generate

        init_ray(args.address)
        known = GapConfig.__dataclass_fields__
        gap = {}
        for key, value in parse_overrides(args.gap):
            if key not in known:
                raise ConfigError(f"--gap: unknown knob '{key}'; known: {', '.join(known)}")
            gap[key] = value
        info = generate(args.domain, args.n, args.size, args.seed, args.out, gap=GapConfig(**gap),
                        overwrite=args.overwrite, rows_per_shard=args.rows_per_shard)
        print(f"wrote {info.num_rows} rows in {len(info.shards)} shards to {info.path}")
    elif args.command == "convert":
        from rayda.convert import convert

        init_ray(args.address)
        info = convert(args.kind, args.root, args.out, split=args.split, protocol=args.protocol,
                       on_error=args.on_error, overwrite=args.overwrite, name=args.name,
                       rows_per_shard=args.rows_per_shard, depth_scale=args.depth_scale, rgb=args.rgb,
                       classes=args.classes, domain=args.domain)
        print(f"wrote {info.num_rows} rows in {len(info.shards)} shards to {info.path}"
              + (f"; skipped {info.source['skipped']} (see skipped.json)" if info.source["skipped"] else ""))
    elif args.command == "pair":
        from rayda.pairing import pair

        try:
            levels = tuple(int(v) for v in args.levels.split(","))
        except ValueError:
            raise ConfigError(f"--levels must be comma-separated integers, got {args.levels!r}") from None
        if args.real_labels_from:
            from rayda.train.checkpoint import read_meta

            read_meta(args.real_labels_from)  # a bad path fails before Ray starts
        init_ray(args.address)
        s = pair(args.synthetic, args.real, args.out, k=args.k, levels=levels, real_labels_from=args.real_labels_from,
                 max_uses=args.max_uses, max_rows_per_worker=args.max_rows_per_worker, use_gpu=args.use_gpu,
                 overwrite=args.overwrite)
        print(f"{s['num_pairs']} pairs for {s['num_real']} real images; coverage {100 * s['coverage']:.1f}% "
              f"of {s['num_synthetic']} synthetic images; written to {args.out}")
    elif args.command == "translate":
        from rayda.train.checkpoint import read_meta
        from rayda.translate import translate

        read_meta(args.checkpoint)  # a bad path fails before Ray starts
        init_ray(args.address)
        info = translate(args.checkpoint, args.data, args.out, batch_size=args.batch_size, use_gpu=args.use_gpu,
                         overwrite=args.overwrite)
        print(f"wrote {info.num_rows} translated rows in {len(info.shards)} shards to {info.path}")
    elif args.command == "train":
        from rayda.config import load_config
        from rayda.train.run import train

        cfg = load_config(args.config, args.set)
        init_ray(args.address)
        result = train(cfg)
        print(f"run directory: {result.run_dir}")
        if result.metrics:
            print(f"target mIoU: {100 * result.metrics['miou']:.1f}")
    elif args.command == "tune":
        from rayda.config import load_config
        from rayda.tune import tune

        cfg = load_config(args.config, args.set)
        # A local Ray gets two logical CPUs per core: Ray Data splits the CPUs left beside the trials between
        # the datasets it knows of in whole CPUs, and on 2 CPUs a third trial's reads got none.
        init_ray(args.address, num_cpus=2 * (os.cpu_count() or 1))
        s = tune(cfg, args.space, num_samples=args.num_samples, scheduler=args.scheduler, search=args.search,
                 grace_period=args.grace_period, max_concurrent_trials=args.max_concurrent, restore=args.restore)
        print(f"best {s['metric']}: {s['best'][s['metric']]:.4g} (trial {s['best']['trial']}); "
              f"best config: {s['best_config']}")
    elif args.command == "eval":
        from rayda.eval import evaluate
        from rayda.train.checkpoint import read_meta

        read_meta(args.checkpoint)  # a bad path fails before Ray starts
        init_ray(args.address)
        m = evaluate(args.checkpoint, args.data, args.out, batch_size=args.batch_size, protocol=args.protocol,
                     use_gpu=args.use_gpu)
        print(json.dumps({"miou": m["miou"], "per_class": m["per_class"]}, indent=1))
    elif args.command == "measure":
        from rayda.eval.measure import measure

        print(json.dumps(measure(args), indent=1))
    elif args.command == "demo":
        from rayda.demo import run_demo

        init_ray(args.address)
        run_demo(args.out, quick=args.quick, overwrite=args.overwrite)
    elif args.command == "bench":
        from rayda import bench

        if args.which == "methods":
            # A local Ray gets two logical CPUs per core: a run that evaluates holds an actor CPU and needs
            # one more for its reads, and the runs side by side would otherwise starve each other.
            init_ray(args.address, num_cpus=2 * (os.cpu_count() or 1))
            from rayda.bench.methods import bench_methods

            bench_methods(args.out, methods=args.methods, scale=args.scale, parallel=args.parallel,
                          use_gpu=args.use_gpu, overwrite=args.overwrite)
        else:
            init_ray(args.address)
            bench.run(args.which, args.out, steps=args.steps, use_gpu=args.use_gpu, method=args.method,
                      report_every=args.report_every)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except Exception as e:  # every failure ends with one clear line and a non-zero status
        print(f"rayda {args.command}: error: {describe(e)}", file=sys.stderr)
        return 1


def describe(e: BaseException) -> str:
    """The user-facing message of an error, unwrapped from Ray's wrappers."""
    import ray.exceptions
    import ray.train

    while True:
        if isinstance(e, ray.exceptions.RayTaskError) and e.cause is not None:
            e = e.cause
        elif isinstance(e, ray.train.WorkerGroupError) and e.worker_failures:
            e = next(iter(e.worker_failures.values()))
        elif isinstance(e, ray.train.ControllerError):
            e = e.controller_failure
        elif e.__cause__ is not None and type(e).__module__.startswith("ray"):
            e = e.__cause__
        else:
            return str(e) if type(e).__name__.endswith("Error") and str(e) else f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    sys.exit(main())
