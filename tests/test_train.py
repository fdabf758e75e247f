"""Training on Ray Train end to end: DDP on gloo, checkpoints, resume, evaluation, failures."""
import json

import pytest

from rayda.config import validate
from rayda.train.run import train


def _cfg(simworld, tmp_path, name, **over):
    raw = {
        "name": name, "storage_path": str(tmp_path / "runs"),
        "data": {"source": str(simworld["synthetic"].path), "val": str(simworld["real_val"].path),
                 "crop": [64, 128], "batch_size": 4, "shuffle_buffer": 0},
        "model": {"arch": "deeplabv3plus_mobilenetv2", "size": "cpu"},
        "method": {"name": "source_only", "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0},
        "train": {"steps": 6, "report_every": 2, "checkpoint_every": 3},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
        "eval": {"num_grid_images": 2},
    }
    for key, value in over.items():
        section, leaf = key.split("__")
        raw[section][leaf] = value
    return validate(raw)


def test_two_worker_ddp_run_checkpoints_resumes_and_evaluates(simworld, tmp_path, ray_clean):
    first = train(_cfg(simworld, tmp_path, "ddp", train__val_every=2))
    assert [h["step"] for h in first.history] == [2, 3, 4, 6]
    assert [h["step"] for h in first.history if "val/miou" in h] == [2, 4, 6]
    assert all(h["workers"] == 2 for h in first.history)
    run = first.run_dir
    assert sorted(p.name for p in run.glob("checkpoint_0*")) == ["checkpoint_00000003", "checkpoint_00000006"]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["step"] == 6 and set(metrics["per_class"]) >= {"road", "car"}
    # The loop's validation (each worker scores its shard, confusions summed) equals the evaluation after it.
    assert first.history[-1]["val/miou"] == pytest.approx(metrics["miou"], abs=1e-9)
    assert (run / "eval" / "predictions.png").stat().st_size > 0 and (run / "loss_curves.png").exists()
    report = (run / "report.md").read_text()
    assert "method `source_only`, 6 of 6 steps on 2 worker(s)" in report and "| seg |" in report
    assert "](eval/predictions.png)" in report and "lr: 0.002" in report
    assert report.count("data:image/png;base64,") == 0 and "data:image/png;base64," in (run / "report.html").read_text()

    # Same storage path and name, longer budget: continues from step 6 with the earlier history.
    resumed = train(_cfg(simworld, tmp_path, "ddp", train__steps=9, train__val_every=2), evaluate_after=False)
    assert [h["step"] for h in resumed.history] == [2, 3, 4, 6, 8, 9]
    assert resumed.history[:4] == first.history and "val/miou" in resumed.history[-1]


def test_nan_loss_stops_the_run_naming_step_and_loss(simworld, tmp_path, ray_clean):
    from rayda.cli import describe

    cfg = _cfg(simworld, tmp_path, "nan", method__optimizer="sgd", method__lr=1e12, train__steps=20,
               train__checkpoint_every=1000, scaling__num_workers=1)
    with pytest.raises(Exception) as info:
        train(cfg)
    message = describe(info.value)
    assert "loss 'seg' is nan" in message and "step" in message and "last good checkpoint" in message, message


def test_a_checkpoint_is_refused_for_another_method_class_set_or_version(tmp_path, tiny_method):
    """What `ray.train.get_checkpoint()` restores goes through load_state: the checkpoint must be this
    method's, on this class set, in this format version; its tensors load with weights_only=True."""
    import dataclasses

    from rayda.train import checkpoint as ckpt

    source = tiny_method("source_only")
    config = {"model": {"arch": "deeplabv3plus_mobilenetv2", "size": "cpu"}}
    ckpt.save(tmp_path, method=source, step=3, history=[{"step": 3}], config=config)
    assert ckpt.load_state(tmp_path, tiny_method("source_only"))["step"] == 3
    with pytest.raises(ckpt.CheckpointError, match="checkpoint of method 'source_only', this run is 'lsd'"):
        ckpt.load_state(tmp_path, tiny_method("lsd"))
    other = tiny_method("source_only")
    other.classes = dataclasses.replace(other.classes, names=other.classes.names[:18], palette=other.classes.palette[:18])
    with pytest.raises(ckpt.CheckpointError, match="class set .* differs from the data's"):
        ckpt.load_state(tmp_path, other)
    meta = json.loads((tmp_path / ckpt.META_FILE).read_text())
    (tmp_path / ckpt.META_FILE).write_text(json.dumps({**meta, "version": 0}))
    with pytest.raises(ckpt.CheckpointError, match="checkpoint version 0, this rayda reads 1"):
        ckpt.load_state(tmp_path, source)
    with pytest.raises(ckpt.CheckpointError, match="not a rayda checkpoint"):
        ckpt.read_meta(tmp_path.parent)
