"""`rayda generate simworld`: a shard dataset written in parallel by Ray Data, deterministic per seed."""
import pyarrow.parquet as pq
import pytest

from rayda.data import read_info
from rayda.simworld import generate


def _rows(info):
    rows = {}
    for path in info.shard_paths():
        for row in pq.read_table(path).to_pylist():
            rows[row.pop("id")] = row
    return rows


def test_generation_is_deterministic_per_seed_and_index(ray_session, tmp_path):
    a = generate("real", 6, (48, 96), 3, tmp_path / "a", rows_per_shard=4)
    b = generate("real", 6, (48, 96), 3, tmp_path / "b", rows_per_shard=2)
    c = generate("real", 6, (48, 96), 4, tmp_path / "c")
    rows_a, rows_b = _rows(a), _rows(b)
    assert rows_a == rows_b and len(rows_a) == 6
    assert _rows(c).keys().isdisjoint(rows_a) and next(iter(_rows(c).values()))["image"] != next(iter(rows_a.values()))["image"]


def test_dataset_json_records_counts_classes_and_provenance(simworld):
    info = read_info(simworld["synthetic"].path)
    assert info.num_rows == 32 and sum(s["num_rows"] for s in info.shards) == 32 and len(info.shards) == 2
    assert info.domain == "synthetic" and info.has_labels and info.has_depth and info.depth_unit == "cm"
    assert info.classes.num_classes == 19 and info.classes.names[0] == "road"
    total = 32 * 64 * 128
    assert 0.95 * total <= sum(info.class_pixels) <= total
    for name in ("road", "sidewalk", "building", "pole", "traffic sign", "vegetation", "sky", "person", "car"):
        assert info.class_pixels[info.classes.names.index(name)] > 0, name
    assert info.source["generator"] == "simworld" and info.source["seed"] == 0


def test_output_directory_is_never_silently_overwritten(ray_session, tmp_path):
    generate("synthetic", 2, (32, 64), 0, tmp_path / "d")
    with pytest.raises(FileExistsError, match="not empty; pass --overwrite"):
        generate("synthetic", 2, (32, 64), 0, tmp_path / "d")
    assert generate("synthetic", 3, (32, 64), 0, tmp_path / "d", overwrite=True).num_rows == 3
    with pytest.raises(ValueError, match="--domain must be one of"):
        generate("photo", 2, (32, 64), 0, tmp_path / "e")
