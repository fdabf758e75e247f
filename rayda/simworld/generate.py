"""Generate a simworld domain as a shard dataset, in parallel with Ray Data."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import ray

from rayda.classes import CITYSCAPES_19
from rayda.data import DatasetInfo, make_row, prepare_output, rows_to_table, write_dataset
from rayda.simworld.render import GapConfig, render

DOMAINS = ("synthetic", "real")


def _render_rows(batch: dict, seed: int, domain: str, height: int, width: int, gap: GapConfig):
    rows = []
    for index in batch["id"]:
        scene = render(int(index), seed, domain, height, width, gap)
        rows.append(make_row(f"simworld-{domain}-s{seed}-{int(index):07d}", scene.image, scene.label,
                             scene.depth, CITYSCAPES_19.num_classes))
    return rows_to_table(rows)


def generate(domain: str, n: int, size: tuple[int, int], seed: int, out: str | Path, *,
             gap: GapConfig = GapConfig(), overwrite: bool = False, rows_per_shard: int = 64,
             name: str | None = None) -> DatasetInfo:
    """Render n scenes of one domain (image, trainId label, depth) into a dataset directory."""
    if domain not in DOMAINS:
        raise ValueError(f"--domain must be one of {DOMAINS}, got {domain!r}")
    if n <= 0:
        raise ValueError(f"--n must be positive, got {n}")
    height, width = size
    if height < 32 or width < 32:
        raise ValueError(f"--size must be at least 32x32, got {height}x{width}")
    out = prepare_output(out, overwrite)
    blocks = max(1, min(n // 16, 1024))  # enough tasks to keep every CPU busy, not so many they are tiny
    rows = ray.data.range(n, override_num_blocks=blocks).map_batches(
        _render_rows, batch_size=16, batch_format="numpy",
        fn_kwargs=dict(seed=seed, domain=domain, height=height, width=width, gap=gap),
    )
    info = DatasetInfo(
        name=name or f"simworld-{domain}-s{seed}", domain=domain, classes=CITYSCAPES_19,
        has_labels=True, has_depth=True,
        source={"generator": "simworld", "domain": domain, "seed": seed, "n": n, "size": [height, width],
                "gap": asdict(gap)},
    )
    return write_dataset(rows, out, info, rows_per_shard=rows_per_shard)
