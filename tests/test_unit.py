"""UNIT: losses and update order, exact state round trip, 2-worker DDP on SP-Feat pairs, export."""
import copy

import pyarrow.parquet as pq
import pytest
import torch

from rayda.config import ConfigError, validate
from rayda.methods import StepContext

CPU = torch.device("cpu")


def test_losses_compose_with_the_unit_weights_and_every_net_is_updated(tiny_method, tiny_batch):
    m = tiny_method("unit")
    before = {k: [p.detach().clone() for p in v.parameters()] for k, v in m.nets.items()}
    losses = m.train_step(tiny_batch(), StepContext(0, 8, CPU, False))
    assert set(losses) == {"gan", "recon", "kl", "cycle_kl", "cycle", "d", "total"}
    expected = (10 * losses["gan"] + 100 * losses["recon"] + 0.1 * losses["kl"] + 0.1 * losses["cycle_kl"]
                + 100 * losses["cycle"])
    assert float(losses["total"]) == pytest.approx(float(expected), rel=1e-5)
    for k, net in m.nets.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters())), k
    assert m.segmenter is None


def test_state_round_trip_gives_an_identical_next_step(tiny_method, tiny_batch):
    m = tiny_method("unit")
    for step in range(2):
        m.train_step(tiny_batch(step), StepContext(step, 8, CPU, False))
    state = copy.deepcopy(m.state_dict())
    torch.manual_seed(3)
    expected = m.train_step(tiny_batch(5), StepContext(2, 8, CPU, False))
    other = tiny_method("unit")
    other.load_state_dict(state)
    torch.manual_seed(3)
    got = other.train_step(tiny_batch(5), StepContext(2, 8, CPU, False))
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in expected.items()}


def test_spfeat_pairing_needs_pairs_and_unit_has_nothing_to_evaluate():
    with pytest.raises(Exception, match="pairing: spfeat needs pairs"):
        validate({"name": "t", "data": {"source": "s", "pairing": "spfeat"}, "method": {"name": "unit"}})
    from rayda.train.run import build_trainer

    cfg = validate({"name": "t", "data": {"source": "s", "target": "t", "val": "v"}, "method": {"name": "unit"}})
    with pytest.raises(ConfigError, match="trains no segmenter"):
        build_trainer(cfg)


def test_two_worker_ddp_run_on_spfeat_pairs_then_export(simworld, simworld_pairs, tmp_path, ray_clean):
    from rayda.cli import main
    from rayda.data import read_info
    from rayda.train.run import train

    syn, real = simworld["synthetic"], simworld["real_val"]
    raw = {"name": "unit", "storage_path": str(tmp_path / "runs"),
           "data": {"source": str(syn.path), "target": str(real.path), "pairing": "spfeat",
                    "pairs": str(simworld_pairs), "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0},
           "model": {"size": "cpu"}, "method": {"name": "unit"},
           "train": {"steps": 4, "report_every": 2, "checkpoint_every": 2},
           "scaling": {"num_workers": 2, "cpus_per_worker": 1}}
    result = train(validate(raw))
    assert [h["step"] for h in result.history] == [2, 4] and result.metrics is None
    assert {"loss/recon", "loss/cycle", "loss/d", "lr/generators"} <= set(result.history[-1])
    assert (result.run_dir / "visuals.png").stat().st_size > 0
    out = tmp_path / "translated"
    assert main(["translate", "--checkpoint", result.checkpoint.path, "--data", str(syn.path), "--out", str(out)]) == 0
    info = read_info(out)
    labels = lambda i: {r["id"]: r["label"] for r in pq.read_table(i.shard_paths(), columns=["id", "label"]).to_pylist()}  # noqa: E731
    assert info.num_rows == syn.num_rows and labels(info) == labels(syn) and info.source["method"] == "unit"
