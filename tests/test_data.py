"""The shard format, its validation, and the decode/augment stage."""
import itertools

import numpy as np
import pyarrow.parquet as pq
import pytest

from rayda.classes import CITYSCAPES_19
from rayda.data import Augment, DatasetError, DatasetInfo, eval_dataset, make_row, read_info, rows_to_table, train_stream
from rayda.data.pipeline import decode_batch


def _sample(i, h=16, w=24, label_value=None):
    rng = np.random.default_rng(i)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (h, w)).astype(np.uint8) if label_value is None else np.full((h, w), label_value, np.uint8)
    label[0, 0] = 255
    depth = rng.uniform(1, 50, (h, w)).astype(np.float32)
    return make_row(f"s{i:03d}", image, label, depth, 19)


def write_shards(directory, shards: list[list[dict]], name="toy"):
    """A dataset written with plain pyarrow, for tests that need to craft bad shards."""
    directory.mkdir(parents=True, exist_ok=True)
    info = DatasetInfo(name=name, domain="synthetic", classes=CITYSCAPES_19, has_labels=True, has_depth=True)
    for k, rows in enumerate(shards):
        pq.write_table(rows_to_table(rows), directory / f"shard-{k:03d}.parquet")
        info.shards.append({"file": f"shard-{k:03d}.parquet", "num_rows": len(rows)})
    info.num_rows = sum(len(r) for r in shards)
    info.write(directory)
    return directory


def _batch(rows, path="shard-000.parquet"):
    return {"id": np.array([r["id"] for r in rows], object), "image": np.array([r["image"] for r in rows], object),
            "label": np.array([r["label"] for r in rows], object), "depth": np.array([r["depth"] for r in rows], object),
            "path": np.array([path] * len(rows))}


LIGHT = {"name": "toy", "num_classes": 19}


def test_make_row_counts_class_pixels_and_encodes_depth_in_centimetres():
    row = _sample(0, label_value=3)
    assert row["class_pixels"][3] == 16 * 24 - 1 and sum(row["class_pixels"]) == 16 * 24 - 1
    out = decode_batch(_batch([row]), LIGHT, None, keep_id=True, with_depth=True)
    assert out["image"].shape == (1, 3, 16, 24) and out["image"].dtype == np.uint8
    assert out["depth"].dtype == np.float32 and 1.0 <= out["depth"][0, 0, 1, 1] <= 50.0


def test_make_row_rejects_size_mismatch_and_foreign_labels():
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(DatasetError, match="label is 9x8, image is 8x8"):
        make_row("x", image, np.zeros((8, 9), np.uint8), None, 19)
    with pytest.raises(DatasetError, match=r"label values \[19, 40\]"):
        make_row("x", image, np.array([[19] * 8] * 7 + [[40] * 8], np.uint8), None, 19)


def test_read_info_checks_dataset_json_against_shards(tmp_path):
    good = write_shards(tmp_path / "good", [[_sample(0), _sample(1)], [_sample(2)]])
    info = read_info(good)
    assert info.num_rows == 3 and len(info.shard_paths()) == 2

    with pytest.raises(DatasetError, match="no dataset.json"):
        read_info(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        read_info(tmp_path / "nope")

    bad = write_shards(tmp_path / "truncated", [[_sample(0)]])
    shard = bad / "shard-000.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="shard shard-000.parquet: not a readable Parquet file"):
        read_info(bad)

    inconsistent = write_shards(tmp_path / "inconsistent", [[_sample(0), _sample(1)]])
    info = read_info(inconsistent)
    info.shards[0]["num_rows"] = 5
    info.num_rows = 5
    info.write(inconsistent)
    with pytest.raises(DatasetError, match="has 2 rows, dataset.json says 5"):
        read_info(inconsistent)


def test_wrong_column_type_and_empty_dataset_are_refused(tmp_path):
    import pyarrow as pa

    d = write_shards(tmp_path / "types", [[_sample(0)]])
    table = pq.read_table(d / "shard-000.parquet")
    table = table.set_column(table.schema.get_field_index("height"), "height", pa.array(["16"]))
    pq.write_table(table, d / "shard-000.parquet")
    with pytest.raises(DatasetError, match="column 'height' has type string, expected int32"):
        read_info(d)

    empty = tmp_path / "empty"
    empty.mkdir()
    DatasetInfo(name="empty", domain="real", classes=CITYSCAPES_19, has_labels=False, has_depth=False).write(empty)
    with pytest.raises(DatasetError, match="'empty'.*is empty: 0 rows"):
        read_info(empty)


def test_decode_errors_name_dataset_shard_and_id():
    row = _sample(7)
    row["image"] = row["image"][:40]  # truncated PNG
    with pytest.raises(DatasetError, match=r"dataset 'toy', shard shard-000.parquet, id s007: image bytes do not decode"):
        decode_batch(_batch([row]), LIGHT, None, keep_id=False, with_depth=False)

    small = make_row("s008", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), None, 19)
    mismatched = dict(_sample(8), label=small["label"])
    with pytest.raises(DatasetError, match="id s008: label is 8x8, image is 24x16"):
        decode_batch(_batch([mismatched]), LIGHT, None, keep_id=False, with_depth=False)

    with pytest.raises(DatasetError, match=r"id s009: label values \[3\] outside the class set 0..2"):
        decode_batch(_batch([_sample(9, label_value=3)]), {"name": "toy", "num_classes": 3}, None, False, False)

    no_depth = dict(_sample(10), depth=None)
    with pytest.raises(DatasetError, match="id s010: depth is missing"):
        decode_batch(_batch([no_depth]), LIGHT, None, keep_id=False, with_depth=True)


def test_augment_crops_pads_and_keeps_labels_nearest():
    rows = [_sample(i, h=16, w=24, label_value=5) for i in range(4)]
    out = decode_batch(_batch(rows), LIGHT, Augment(crop=(32, 40), scale=(1.0, 1.0)), keep_id=False, with_depth=True)
    assert out["image"].shape == (4, 3, 32, 40) and out["label"].shape == (4, 32, 40)
    # only original values (5, 255 corner) and the padding's 255: nearest resize, no interpolated ids
    assert set(np.unique(out["label"])) <= {5, 255}
    assert (out["label"][:, 16:, :] == 255).all() and (out["depth"][:, :, 16:, :] == 0).all()

    out = decode_batch(_batch(rows), LIGHT, Augment(crop=(8, 8), scale=(0.5, 2.0)), keep_id=False, with_depth=False)
    assert out["image"].shape == (4, 3, 8, 8) and set(np.unique(out["label"])) <= {5, 255}


def test_ray_pipelines_stream_decoded_batches(ray_session, tmp_path):
    d = write_shards(tmp_path / "ds", [[_sample(i) for i in range(6)], [_sample(i) for i in range(6, 10)]])
    info = read_info(d)
    train = list(train_stream(info, Augment(crop=(16, 16)), seed=0, rows=10, with_depth=True).iter_batches(batch_size=5))
    assert sum(len(b["image"]) for b in train) == 10
    assert train[0]["image"].shape[1:] == (3, 16, 16) and train[0]["depth"].shape[1:] == (1, 16, 16)
    ids = sorted(i for b in eval_dataset(info).iter_batches(batch_size=4) for i in b["id"])
    assert ids == [f"s{i:03d}" for i in range(10)]


def test_epochs_are_cut_into_slots_and_dealt_to_workers():
    from rayda.data.stream import epoch_slots, worker_slots

    info = DatasetInfo(name="toy", domain="synthetic", classes=CITYSCAPES_19, has_labels=True, has_depth=False,
                       shards=[{"file": f"s{k}", "num_rows": n} for k, n in enumerate([6, 4, 5, 3])])
    slots = epoch_slots(info, seed=1, epoch=0, mix_rows=8)
    assert sorted(i for s in slots for i in s.shards) == [0, 1, 2, 3]  # every shard once per epoch
    assert all(s.rows >= 8 for s in slots[:-1]) and sum(s.rows for s in slots) == 18
    assert [len(epoch_slots(info, 1, 0, mix_rows=0))] == [4]  # mix_rows 0: a slot per shard
    shards = lambda epoch: [s.shards for s in epoch_slots(info, 1, epoch, 8)]  # noqa: E731
    assert shards(0) == [s.shards for s in slots] == [(0, 1), (2, 3)]
    assert shards(1) == [(2, 0), (1, 3)]  # another order per epoch, fixed by (seed, epoch)
    first = lambda rank, n: [(s.epoch, s.index) for s in itertools.islice(worker_slots(info, 1, rank, 2, 0), n)]  # noqa: E731
    dealt = [(e, i) for e in range(3) for i in range(4)]
    assert first(0, 6) == dealt[0::2] and first(1, 6) == dealt[1::2]  # round-robin over the epochs' slots


def test_train_stream_is_a_function_of_seed_and_position(ray_session, tmp_path):
    """What makes resume exact: a stream opened at sample k equals the full stream from k on, and
    workers' streams hold every row once per epoch between them."""
    d = write_shards(tmp_path / "ds", [[_sample(i) for i in range(k, k + 5)] for k in range(0, 20, 5)])
    info = read_info(d)
    augment = Augment(crop=(12, 12), scale=(0.8, 1.2))

    def rows(**kw):
        batches = train_stream(info, augment, seed=3, keep_id=True, **kw).iter_batches(batch_size=None)
        return [(i, image.tobytes()) for b in batches for i, image in zip(b["id"], b["image"])]

    full = rows(rows=30)
    assert len(full) >= 30 and rows(rows=30) == full  # deterministic, augmentation included
    assert sorted(i for i, _ in full[:20]) == [f"s{i:03d}" for i in range(20)]  # epoch 0: each row once
    assert full[20:] != full[:len(full) - 20]  # epoch 1: another order and other crops
    assert rows(rows=30 - 13, start=13)[:17] == full[13:30]  # seek: mid-slot, without reading before it
    split = [rows(rows=10, rank=r, world=2, mix_rows=5) for r in (0, 1)]  # a slot per shard
    assert sorted(i for part in split for i, _ in part[:10]) == [f"s{i:03d}" for i in range(20)]
    assert rows(rows=6, start=4, rank=1, world=2, mix_rows=5)[:6] == split[1][4:10]
