"""rayda tune: search-space checks, a 4-trial ASHA sweep interrupted mid-run and restored, results and best config."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import ray.tune
import yaml

from rayda.config import ConfigError, load_config, validate
from rayda.tune import load_space, tune

ROOT = Path(__file__).resolve().parents[1]


def _base(simworld, tmp_path, **method):
    return {
        "name": "sweep", "storage_path": str(tmp_path / "sweeps"),
        "data": {"source": str(simworld["synthetic"].path), "val": str(simworld["real_val"].path),
                 "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0},
        "model": {"size": "cpu"},
        "method": {"name": "source_only", "optimizer": "adam", **method},
        "train": {"steps": 4, "report_every": 2, "checkpoint_every": 2},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
        "eval": {"num_grid_images": 0},
    }


def _space(tmp_path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("params:\n  method.lr: {uniform: [0.1, 0.01]}\n", "params.method.lr: uniform takes [low, high] numbers with low < high"),
    ("params:\n  method.lr: {normal: [0, 1]}\n", "params.method.lr: expected one of {uniform: [...]"),
    ("params:\n  method.lambda_cyclee: {uniform: [1, 2]}\n", "lambda_cyclee"),
    ("params:\n  method.lambda_cycle: {uniform: [-1, 2]}\n", "lambda_cycle"),
    ("params:\n  train.stepz: {choice: [1, 2]}\n", "unknown key 'train.stepz'"),
    ("params:\n  method.lr: {loguniform: [0, 1]}\n", "loguniform needs low > 0"),
    ("parms:\n  method.lr: {uniform: [0.1, 1]}\n", "unknown key(s) ['parms']"),
    ("metric: loss/seg\nparams:\n  method.lr: {uniform: [0.1, 1]}\n", "mode must be min or max for metric 'loss/seg'"),
])
def test_a_bad_search_space_names_the_key(simworld, tmp_path, text, message):
    base = _base(simworld, tmp_path)
    if "lambda_cycle" in text:
        base["method"] = {"name": "cycleplus"}
        base["data"]["target"] = base["data"]["val"]
    with pytest.raises(ConfigError) as info:
        load_space(_space(tmp_path, text), validate(base))
    assert message in str(info.value) and "space.yaml" in str(info.value)


def test_val_miou_needs_target_labels_and_the_shipped_spaces_fit_their_configs(simworld, tmp_path):
    base = _base(simworld, tmp_path)
    base["data"]["val"] = None
    with pytest.raises(ConfigError, match="metric val/miou needs data.val.*loss/seg"):
        load_space(_space(tmp_path, "params:\n  method.lr: {uniform: [0.1, 1]}\n"), validate(base))
    for method in ("csa", "cycleplus", "lsd", "gio_ada", "unit"):
        cfg = load_config(ROOT / f"jobs/configs/simworld/{method}.yaml", ["data.val=data/simworld/real_val"])
        space = load_space(ROOT / f"jobs/configs/simworld/tune_{method}.yaml", cfg)
        assert space.metric == "val/miou" and space.params, method
    assert "method.p" in load_space(ROOT / "jobs/configs/simworld/tune_csa.yaml", cfg.model_copy(
        update={"method": validate({**_base(simworld, tmp_path), "method": {"name": "csa"}}).method})).params


def test_asha_sweep_interrupted_and_restored_writes_results_and_a_runnable_best_config(simworld, tmp_path, ray_clean):
    config = tmp_path / "base.yaml"
    config.write_text(yaml.safe_dump(_base(simworld, tmp_path)))
    space = _space(tmp_path, "params:\n  method.lr: {grid: [1.0e-6, 3.0e-3]}\n")
    sweep = tmp_path / "sweeps" / "sweep"
    # The sweep runs in its own driver on the session's Ray; interrupt it once a trial has checkpointed.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs/tune.py"), "--config", str(config), "--space", str(space),
         "--num-samples", "2", "--grace-period", "2", "--max-concurrent", "2"],
        env={**env, "RAY_ADDRESS": ray_clean.get_runtime_context().gcs_address},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list((sweep / "trials").glob("*/checkpoint_*")):
            assert driver.poll() is None, driver.stdout.read()
            assert time.monotonic() < deadline, "no trial checkpointed in time"
            time.sleep(0.5)
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert ray.tune.Tuner.can_restore(str(sweep)), driver.stdout.read()  # Tune saved its state

    summary = tune(load_config(config), space, restore=True)
    rows = list(csv.DictReader(open(sweep / "results.csv")))
    assert len(rows) == 4 and sorted(r["method.lr"] for r in rows) == ["0.003", "0.003", "1e-06", "1e-06"]
    assert all(r["status"] in ("done", "stopped early") for r in rows) and any(r["status"] == "done" for r in rows)
    done = [r for r in rows if r["status"] == "done"]
    assert summary["best"]["trial"] in {r["trial"] for r in done}
    assert float(summary["best"]["val/miou"]) == max(float(r["val/miou"]) for r in done)
    assert (sweep / "params.png").stat().st_size > 0 and "| trial |" in (sweep / "results.md").read_text()

    # A restored trial resumed its Train run: one history, steps in order, no step trained twice.
    for run in (sweep / "trials").iterdir():
        if run.is_dir() and not run.name.endswith("_translated"):
            steps = [c.name for c in sorted(run.glob("checkpoint_*"))]
            assert steps == sorted(set(steps))
    best = load_config(sweep / "best.yaml")
    assert best.method.lr == float(summary["best"]["method.lr"]) and best.train.val_every is None
    assert best.name == "sweep-best" and best.train.steps == 4
    # Tune hands its trials' placement groups back shortly after the sweep returns.
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < 4 and time.monotonic() < deadline:
        time.sleep(1)


def test_a_cloud_storage_path_is_refused_with_the_reason(simworld, tmp_path):
    base = _base(simworld, tmp_path)
    base["storage_path"] = "s3://bucket/sweeps"
    with pytest.raises(ConfigError, match="storage_path: rayda tune writes .* not s3://bucket/sweeps"):
        tune(validate(base), _space(tmp_path, "params:\n  method.lr: {uniform: [0.1, 1]}\n"))
