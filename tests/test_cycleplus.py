"""CyclePlus: update order and freeze schedule, exact state round trip, 2-worker DDP on Ray Train."""
import copy
import json

import pyarrow.parquet as pq
import pytest
import torch

from rayda.config import ConfigError, validate
from rayda.methods import StepContext


def _snapshot(m):
    return {k: [p.detach().clone() for p in net.parameters()] for k, net in m.nets.items()}


def _changed(before, m):
    return {k for k, net in m.nets.items() if any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters()))}


def test_segmenter_frozen_for_the_first_quarter_then_trained(tiny_method, tiny_batch):
    m = tiny_method("cycleplus", steps=8)  # freeze_segmenter 0.25 -> steps 0 and 1 frozen
    before = _snapshot(m)
    m.train_step(tiny_batch(), StepContext(0, 8, torch.device("cpu"), False))
    assert _changed(before, m) == {"g_st", "g_ts", "d_s", "d_t", "df_s", "df_t"}
    before = _snapshot(m)
    m.train_step(tiny_batch(1), StepContext(2, 8, torch.device("cpu"), False))
    assert "segmenter" in _changed(before, m)


def test_losses_are_named_and_the_weights_are_config_only(tiny_method, tiny_batch):
    losses = tiny_method("cycleplus").train_step(tiny_batch(), StepContext(0, 8, torch.device("cpu"), False))
    assert set(losses) == {"gan_image", "gan_feat", "cycle", "sem", "ce", "d_image", "d_feat", "total"}
    w = tiny_method("cycleplus").params
    expected = (losses["gan_image"] + w.lambda_feat * losses["gan_feat"] + w.lambda_cycle * losses["cycle"]
                + w.lambda_sem * losses["sem"] + w.lambda_ce * losses["ce"])
    assert float(losses["total"]) == pytest.approx(float(expected), rel=1e-5)
    cyclegan = tiny_method("cycleplus", lambda_sem=0, lambda_feat=0).train_step(
        tiny_batch(), StepContext(0, 8, torch.device("cpu"), False))
    assert float(cyclegan["total"]) == pytest.approx(
        float(cyclegan["gan_image"] + 20 * cyclegan["cycle"] + cyclegan["ce"]), rel=1e-5)
    with pytest.raises(ConfigError, match="method.lambda_cyc"):
        tiny_method("cycleplus", lambda_cyc=1)


def test_state_round_trip_gives_an_identical_next_step(tiny_method, tiny_batch):
    m = tiny_method("cycleplus")
    for step in range(3):  # fills the history pools and passes the freeze
        m.train_step(tiny_batch(step), StepContext(step, 8, torch.device("cpu"), False))
    state = copy.deepcopy(m.state_dict())
    torch.manual_seed(7)
    expected = m.train_step(tiny_batch(9), StepContext(3, 8, torch.device("cpu"), False))
    other = tiny_method("cycleplus")
    other.load_state_dict(state)
    torch.manual_seed(7)
    got = other.train_step(tiny_batch(9), StepContext(3, 8, torch.device("cpu"), False))
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in expected.items()}


def test_two_worker_ddp_run_evaluates_and_writes_translations(simworld, tmp_path, ray_clean):
    # Resume is the loop's (test_train, test_csa); CyclePlus's state round trip is tested above.
    from rayda.train.run import train

    raw = {"name": "cp", "storage_path": str(tmp_path / "runs"),
           "data": {"source": str(simworld["synthetic"].path), "target": str(simworld["real_val"].path),
                    "val": str(simworld["real_val"].path), "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0},
           "model": {"arch": "deeplabv3plus_mobilenetv2", "size": "cpu"},
           "method": {"name": "cycleplus", "pool_size": 4},
           "train": {"steps": 4, "report_every": 2, "checkpoint_every": 2},
           "scaling": {"num_workers": 2, "cpus_per_worker": 1}, "eval": {"num_grid_images": 1}}
    result = train(validate(raw))
    assert [h["step"] for h in result.history] == [2, 4] and all(h["workers"] == 2 for h in result.history)
    assert {"loss/cycle", "loss/d_image", "lr/generators", "lr/segmenter"} <= set(result.history[-1])
    assert (result.run_dir / "visuals.png").stat().st_size > 0
    assert json.loads((result.run_dir / "eval" / "metrics.json").read_text())["step"] == 4

    # Export: the synthetic set through G_ST; same ids, labels and depth, new images.
    from rayda.cli import main
    from rayda.data import read_info

    out = tmp_path / "translated"
    assert main(["translate", "--checkpoint", result.checkpoint.path, "--data", str(simworld["synthetic"].path),
                 "--out", str(out)]) == 0
    info = read_info(out)
    assert info.num_rows == simworld["synthetic"].num_rows and info.source["method"] == "cycleplus"
    key = lambda t: {r["id"]: r for r in t.to_pylist()}  # noqa: E731
    before, after = key(pq.read_table(simworld["synthetic"].shard_paths())), key(pq.read_table(info.shard_paths()))
    assert before.keys() == after.keys()
    for i, row in after.items():
        assert row["label"] == before[i]["label"] and row["depth"] == before[i]["depth"]
        assert row["image"] != before[i]["image"] and (row["height"], row["width"]) == (64, 128)
    assert info.class_pixels == simworld["synthetic"].class_pixels and (out / "preview.png").is_file()
