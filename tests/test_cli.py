"""The command line: one clear line and a non-zero status for every bad input."""
import subprocess
import sys


def rayda(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rayda.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_bad_config_key_fails_with_dotted_path_before_starting_ray(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\ndata:\n  source: d\ntrain:\n  stepz: 3\n")
    r = rayda("train", "--config", str(cfg))
    assert r.returncode == 1
    assert "rayda train: error:" in r.stderr and "unknown key 'train.stepz'" in r.stderr
    assert "Started a local Ray" not in r.stderr


def test_missing_checkpoint_and_bad_size_are_named(tmp_path):
    r = rayda("eval", "--checkpoint", str(tmp_path / "nope"), "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "checkpoint directory not found" in r.stderr and "nope" in r.stderr
    r = rayda("generate", "simworld", "--domain", "real", "--n", "2", "--size", "big", "--out", str(tmp_path / "g"))
    assert r.returncode == 2 and "expected HxW" in r.stderr
