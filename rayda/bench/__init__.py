"""`rayda bench`: performance benchmarks (ingest, train-overhead, pairing) and the method comparison."""
from __future__ import annotations

import json
import os
from pathlib import Path

import ray
import torch

PERFORMANCE = ("ingest", "train-overhead", "pairing")


def run(which: str, out: str | Path, steps: int = 60, use_gpu: bool = False, method: str = "source_only",
        report_every: int = 10) -> dict:
    """One performance benchmark; writes out/<which>.json and prints it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if which == "pairing":
        from rayda.pairing.bench import bench_pairing

        result = bench_pairing(out)
    elif which == "ingest":
        from rayda.bench.ingest import bench_ingest

        result = bench_ingest(out)
    elif which == "train-overhead":
        from rayda.bench.ingest import bench_train_overhead

        result = bench_train_overhead(out, steps=steps, use_gpu=use_gpu, method=method, report_every=report_every)
    else:
        raise ValueError(f"unknown benchmark {which!r}; choose one of {PERFORMANCE} (or `rayda bench methods`)")
    result.update(benchmark=which, cpu_count=os.cpu_count(), torch=torch.__version__, ray=ray.__version__)
    path = out / (f"{which}_{method}.json" if which == "train-overhead" and method != "source_only" else f"{which}.json")
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result
