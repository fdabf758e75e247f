"""What people look at after pairing: pairs.md (the numbers) and pairs.png (real images and their neighbours)."""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads

from rayda.data import DatasetInfo
from rayda.data.pipeline import decode_image_bytes
from rayda.report import save_grid, write_markdown

GRID_NEIGHBOURS = 3


def read_rows(info: DatasetInfo, ids: list[str], columns: list[str]) -> dict[str, dict]:
    """A few rows by id (Parquet filter pushdown: reads the id column and the matching row groups only)."""
    table = pads.dataset(info.shard_paths()).to_table(columns=["id"] + columns, filter=pc.field("id").isin(ids))
    return {row["id"]: row for row in table.to_pylist()}


def write_pair_report(out: Path, summary: dict, synthetic: DatasetInfo, real: DatasetInfo, num_grid: int) -> None:
    rows = [("real images (queries)", summary["num_real"]), ("synthetic images", summary["num_synthetic"]),
            ("K", summary["k"]), ("pairs", summary["num_pairs"]),
            ("coverage of the synthetic set", f"{100 * summary['coverage']:.1f}%"),
            ("coverage before balancing", f"{100 * summary['coverage_before_balancing']:.1f}%"),
            ("max uses allowed", summary["max_uses"]),
            ("max uses before / after", f"{summary['max_use_before']} / {summary['max_use_after']}"),
            ("neighbours replaced by balancing", summary["replaced"]),
            ("lists shorter than K", summary["short_lists"]),
            ("feature dimension", summary["feature_dim"]),
            ("KNN shards x rows", f"{summary['shards']} x {summary['rows_per_shard']}"),
            ("peak KNN worker memory", f"{summary['peak_worker_rss_mb']:.0f} MB"),
            ("seconds", ", ".join(f"{k} {v}" for k, v in summary["seconds"].items()))]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    sections = [("Summary", table), ("Labels of the real images", summary["real_labels"]),
                ("Classes compared", ", ".join(summary["classes"]))]
    if num_grid > 0 and _save_pair_grid(out / "pairs.png", out, synthetic, real, num_grid):
        sections.append(("Examples", "![pairs](pairs.png)"))
    write_markdown(out / "pairs.md", "SP-Feat pairs", sections)


def _save_pair_grid(path: Path, out: Path, synthetic: DatasetInfo, real: DatasetInfo, num_grid: int) -> bool:
    pairs = pads.dataset(str(out / "pairs")).to_table(filter=pc.field("rank") < GRID_NEIGHBOURS)
    real_ids = sorted(set(pairs.column("real_id").to_pylist()))[:num_grid]
    if not real_ids:
        return False
    pairs = pairs.filter(pc.field("real_id").isin(real_ids)).to_pylist()
    neighbours = {r: [] for r in real_ids}
    for p in sorted(pairs, key=lambda p: p["rank"]):
        neighbours[p["real_id"]].append(p["synthetic_id"])
    real_rows = read_rows(real, real_ids, ["image"])
    syn_rows = read_rows(synthetic, sorted({s for v in neighbours.values() for s in v}), ["image"])
    image = lambda row: decode_image_bytes(row["image"]).numpy().transpose(1, 2, 0)  # noqa: E731
    grid = [[image(real_rows[r])] + [image(syn_rows[s]) for s in neighbours[r]] for r in real_ids]
    save_grid(path, grid, titles=["real"] + [f"neighbour {i + 1}" for i in range(GRID_NEIGHBOURS)])
    return True
