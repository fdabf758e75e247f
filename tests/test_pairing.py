"""SP-Feat features, exact KNN, balancing, the `pair` command and the paired loader."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayda.classes import CITYSCAPES_19, ClassSet
from rayda.data import Augment, DatasetError
from rayda.data.pipeline import dataset_ids
from rayda.pairing import pair_plan, paired_stream, sp_feat, topk
from rayda.pairing.features import shared_classes
from rayda.pairing.pair import pair_features


def slow_sp_feat(label, num_classes, levels, ignore=255):
    """The definition, cell by cell."""
    h, w = label.shape
    out = []
    for l in levels:
        for i in range(l):
            for j in range(l):
                cell = label[(i * h) // l:((i + 1) * h) // l, (j * w) // l:((j + 1) * w) // l]
                cell = cell[cell != ignore]
                hist = np.bincount(cell, minlength=num_classes).astype(np.float64)
                out.append(hist / hist.sum() if hist.sum() else hist)
    return np.concatenate(out)


def test_sp_feat_hand_computed_with_ignore_and_an_empty_cell():
    label = np.full((4, 4), 255, np.uint8)
    label[:2, :2] = 1          # top-left cell: all class 1
    label[0, 2] = 0            # top-right cell: one 0, the rest ignored
    label[3, 3] = 2            # bottom-right: one 2; bottom-left stays empty
    f = sp_feat(label[None], 3, levels=(1, 2))
    assert f.dtype == np.float32 and f.shape == (1, 3 * 5)
    np.testing.assert_allclose(f[0, :3], [1 / 6, 4 / 6, 1 / 6])          # level 1: 6 valid pixels
    np.testing.assert_allclose(f[0, 3:], [0, 1, 0,  1, 0, 0,  0, 0, 0,  0, 0, 1])


def test_sp_feat_matches_the_definition_on_odd_sizes_and_levels():
    rng = np.random.default_rng(0)
    values = [0, 1, 2, 3, 4, 255]
    noisy = [rng.choice(values, size=s).astype(np.uint8) for s in [(7, 11), (7, 11), (5, 13), (12, 12)]]
    # Piecewise-constant maps (as real labels are) take the run-length count, noisy ones the per-pixel one.
    blocky = [np.kron(rng.choice(values, size=s), np.ones(k, int)).astype(np.uint8)
              for s, k in [((3, 4), (3, 5)), ((4, 6), (16, 40)), ((2, 3), (30, 90)), ((1, 1), (1, 1))]]
    labels = noisy + blocky
    f = sp_feat(labels, 5, levels=(1, 2, 3, 4))
    assert f.shape == (8, 5 * (1 + 4 + 9 + 16))
    for label, row in zip(labels, f):
        np.testing.assert_allclose(row, slow_sp_feat(label, 5, (1, 2, 3, 4)), atol=1e-6)


def test_sp_feat_rejects_ids_outside_the_class_set():
    assert sp_feat([], 5).shape == (0, 5 * 21)
    with pytest.raises(ValueError, match=r"label values \[7\] outside 0..4"):
        sp_feat(np.full((1, 4, 4), 7, np.uint8), 5)


def test_topk_equals_brute_force_and_checks_k():
    rng = np.random.default_rng(1)
    base, queries = rng.random((3000, 40), np.float32), rng.random((200, 40), np.float32)
    idx, dist = topk(queries, base, 15)
    ref = np.sqrt(((queries[:, None].astype(np.float64) - base[None]) ** 2).sum(-1))
    ref_idx = np.argsort(ref, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, np.take_along_axis(ref, ref_idx, 1), rtol=1e-6)
    with pytest.raises(ValueError, match="k = 3001"):
        topk(queries, base, 3001)


def test_class_sets_must_overlap():
    other = ClassSet(("cloud", "clear"), ((255, 255, 255), (0, 0, 0)), protocol="custom")
    with pytest.raises(DatasetError, match="share no class"):
        shared_classes(CITYSCAPES_19, other)


def write_features(directory, feats, prefix):
    directory.mkdir(parents=True)
    feats = np.asarray(feats, np.float32)
    pq.write_table(pa.table({"id": [f"{prefix}{i}" for i in range(len(feats))],
                             "feat": pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), feats.shape[1])}),
                   directory / "part.parquet")


def test_balancing_when_two_synthetic_images_are_everyones_nearest(ray_clean, tmp_path):
    # Synthetic s_i on a line at i; real q_j at -(j+1)/10: every query's 2 nearest are s0 and s1.
    syn = [[i, 0, 0] for i in range(10)]
    real = [[-(j + 1) / 10, 0, 0] for j in range(6)]
    write_features(tmp_path / "syn", syn, "s")
    write_features(tmp_path / "real", real, "q")
    s = pair_features(tmp_path / "syn", tmp_path / "real", tmp_path / "out", k=2)
    # cap = ceil(2 * K * R / N) = ceil(2.4) = 3: s0 and s1 stay with q0..q2 and give way for q3..q5.
    assert s["max_uses"] == 3 and s["overused_before"] == 2 and s["max_use_before"] == 6
    assert s["replaced"] == 6 and s["max_use_after"] == 3 and s["short_lists"] == 0
    assert s["coverage_before_balancing"] == pytest.approx(0.2) and s["coverage"] == pytest.approx(0.4)
    rows = pq.read_table(tmp_path / "out" / "pairs").to_pylist()
    lists = {}
    for r in sorted(rows, key=lambda r: r["rank"]):
        lists.setdefault(r["real_id"], []).append(r["synthetic_id"])
    assert lists == {**{f"q{j}": ["s0", "s1"] for j in range(3)}, **{f"q{j}": ["s2", "s3"] for j in range(3, 6)}}
    assert all(r["weight"] == pytest.approx(1 / 3) for r in rows)
    d = {(r["real_id"], r["synthetic_id"]): r["distance"] for r in rows}
    assert d[("q4", "s2")] == pytest.approx(2.5)


def test_sharded_knn_merges_to_the_same_pairs(ray_clean, tmp_path):
    rng = np.random.default_rng(2)
    feats = rng.random((300, 8))
    (tmp_path / "syn").mkdir()
    for i in range(3):  # three feature files -> three KNN shards of 100 rows
        part = feats[100 * i:100 * (i + 1)].astype(np.float32)
        pq.write_table(pa.table({"id": [f"s{100 * i + j:03d}" for j in range(100)],
                                 "feat": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), 8)}),
                       tmp_path / "syn" / f"{i}.parquet")
    write_features(tmp_path / "real", rng.random((20, 8)), "q")
    one = pair_features(tmp_path / "syn", tmp_path / "real", tmp_path / "one", k=4, max_uses=100)
    three = pair_features(tmp_path / "syn", tmp_path / "real", tmp_path / "three", k=4, max_uses=100,
                          max_rows_per_worker=100)
    assert one["shards"] == 1 and three["shards"] == 3
    key = lambda t: sorted((r["real_id"], r["rank"], r["synthetic_id"]) for r in t.to_pylist())  # noqa: E731
    assert key(pq.read_table(tmp_path / "one" / "pairs")) == key(pq.read_table(tmp_path / "three" / "pairs"))


def test_pair_command_on_simworld(ray_clean, simworld, simworld_pairs):
    from rayda.data import read_dataset
    from rayda.data.pipeline import decode_image_bytes

    out = simworld_pairs  # `rayda pair --k 5 --real-labels-from CHECKPOINT`
    syn, real = simworld["synthetic"], simworld["real_val"]
    summary = json.loads((out / "pairs.json").read_text())
    assert summary["real_labels"].startswith("predicted by")
    pairs = pq.read_table(out / "pairs").to_pylist()
    assert set(pairs[0]) >= {"real_id", "synthetic_id", "rank", "distance", "weight"}
    assert summary["num_pairs"] == len(pairs) == 5 * real.num_rows
    for real_id in {p["real_id"] for p in pairs}:
        mine = sorted((p for p in pairs if p["real_id"] == real_id), key=lambda p: p["rank"])
        assert [p["rank"] for p in mine] == list(range(5))
        assert all(a["distance"] <= b["distance"] for a, b in zip(mine, mine[1:]))
    assert summary["coverage"] == pytest.approx(len({p["synthetic_id"] for p in pairs}) / syn.num_rows)
    assert (out / "pairs.md").is_file() and (out / "pairs.png").is_file()
    # The stored features are SP-Feat of the stored labels.
    stored = pq.read_table(out / "features" / "synthetic").to_pylist()
    row = next(iter(read_dataset(syn, columns=["id", "label"]).iter_rows()))
    mine = next(r for r in stored if r["id"] == row["id"])
    label = decode_image_bytes(row["label"], mode=None)[0].numpy()
    np.testing.assert_allclose(mine["feat"], sp_feat(label[None], 19)[0], atol=1e-6)
    # The loader's draws: deterministic for a seed, always one of the real image's neighbours.
    plan = pair_plan(syn, real, out)
    draws = lambda seed, epoch: list(plan.synthetic_ids[plan.draw(plan.real_ids, seed, epoch)])  # noqa: E731
    first = draws(0, 0)
    assert first == draws(0, 0) and first != draws(1, 0) and first != draws(0, 1)
    allowed = {(p["real_id"], p["synthetic_id"]) for p in pairs}
    assert {(r, s) for e in range(3) for r, s in zip(plan.real_ids, draws(0, e))} <= allowed
    # The decoded pair stream: its pairs are the plan's draws (and test_unit trains on it).
    stream = paired_stream(syn, real, plan, Augment(crop=(32, 32)), 0, rows=real.num_rows, keep_id=True)
    got = {(r, s) for b in stream.iter_batches(batch_size=None) for r, s in zip(b["target_id"], b["id"])}
    assert got == set(zip(plan.real_ids, first))
    # Pairs made for other datasets are refused, and so is a real image the pairs do not hold.
    with pytest.raises(DatasetError, match="pairs synthetic dataset"):
        pair_plan(real, real, out)
    with pytest.raises(DatasetError, match="real image nope has no neighbours"):
        plan.draw(["nope"], 0, 0)


def test_paired_stream_is_a_function_of_seed_and_position(ray_session, simworld):
    """What makes resume exact for the adversarial methods: a paired stream opened at pair k equals the full
    stream from k on; workers share the epochs out between them; random pairing
    spreads over the synthetic set."""
    syn, real = simworld["synthetic"], simworld["real_val"]
    plan, real_ids = pair_plan(syn, real), sorted(dataset_ids(real))
    augment = Augment(crop=(24, 24), scale=(0.8, 1.2))

    def rows(**kw):
        stream = paired_stream(syn, real, plan, augment, 5, keep_id=True, **kw)
        return [(r, s, image.tobytes(), target.tobytes()) for b in stream.iter_batches(batch_size=None)
                for r, s, image, target in zip(b["target_id"], b["id"], b["image"], b["target_image"])]

    full = rows(rows=20)
    assert len(full) >= 20 and rows(rows=20) == full  # deterministic, augmentation included
    assert sorted(r for r, *_ in full[:8]) == real_ids  # epoch 0: each real image once
    assert rows(rows=20 - 11, start=11)[:9] == full[11:20]  # seek, mid-epoch
    # One real shard, so one slot per epoch: worker 0 streams epochs 0, 2, ..., worker 1 epochs 1, 3, ...
    split = [rows(rows=8, rank=r, world=2, mix_rows=0) for r in (0, 1)]
    assert split[0][:8] == full[:8] and split[1][:8] == full[8:16]
    partners = plan.synthetic_ids[np.concatenate([plan.draw(real_ids, 0, e) for e in range(8)])]
    assert len(set(partners)) > 16  # 64 draws spread over the 32 synthetic images, not a few


def test_pair_errors_name_the_problem(ray_clean, simworld, tmp_path):
    from rayda.pairing import pair

    with pytest.raises(DatasetError, match=r"--k 33 is larger than the synthetic dataset .* \(32 images\)"):
        pair(simworld["synthetic"].path, simworld["real_val"].path, tmp_path / "o", k=33)
    (tmp_path / "empty").mkdir()
    write_features(tmp_path / "real", [[0.0, 1.0]], "q")
    with pytest.raises(DatasetError, match="no synthetic features"):
        pair_features(tmp_path / "empty", tmp_path / "real", tmp_path / "o2")


def test_the_pair_plan_refuses_an_unlabeled_synthetic_side(simworld):
    import dataclasses

    syn, real = simworld["synthetic"], simworld["real_val"]
    with pytest.raises(DatasetError, match="has no labels; the synthetic side must be labeled"):
        pair_plan(dataclasses.replace(syn, has_labels=False), real)
