import pytest

from rayda.config import ConfigError, load_config, validate
from rayda.methods import method_class

BASE = {"name": "t", "data": {"source": "/data/src"}}


def test_defaults_fill_a_minimal_config():
    cfg = validate(BASE)
    assert cfg.method.name == "source_only" and cfg.train.steps == 1000 and cfg.data.crop == (128, 256)


def test_unknown_key_is_named_with_its_dotted_path():
    with pytest.raises(ConfigError, match=r"unknown key 'data\.batchsize'"):
        validate({**BASE, "data": {"source": "x", "batchsize": 4}})


def test_wrong_type_and_range_are_named():
    with pytest.raises(ConfigError, match=r"'train\.steps'"):
        validate({**BASE, "train": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"'data\.batch_size'.*greater than 0"):
        validate({**BASE, "data": {"source": "x", "batch_size": 0}})
    with pytest.raises(ConfigError, match=r"missing required key 'name'"):
        validate({"data": {"source": "x"}})


def test_method_keys_are_validated_by_the_method():
    cfg = validate({**BASE, "method": {"name": "source_only", "lr": -1.0}})
    with pytest.raises(ConfigError, match=r"'method\.lr'.*greater than 0"):
        method_class("source_only").parse_params(cfg)
    cfg = validate({**BASE, "method": {"name": "source_only", "learning_rate": 0.1}})
    with pytest.raises(ConfigError, match=r"unknown key 'method\.learning_rate'"):
        method_class("source_only").parse_params(cfg)
    with pytest.raises(ConfigError, match=r"unknown method 'cyclegan'"):
        method_class("cyclegan")


def test_yaml_file_with_set_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ndata:\n  source: s\ntrain:\n  steps: 10\n")
    cfg = load_config(path, ["train.steps=20", "data.crop=[32, 64]", "scaling.use_gpu=true"])
    assert cfg.train.steps == 20 and cfg.data.crop == (32, 64) and cfg.scaling.use_gpu is True
    with pytest.raises(ConfigError, match=r"unknown key 'train\.stepz'"):
        load_config(path, ["train.stepz=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["train.steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_shipped_run_config_validates_with_its_method_keys():
    from pathlib import Path

    import yaml

    configs = [p for p in sorted((Path(__file__).parents[1] / "jobs/configs").rglob("*.yaml"))
               if "data" in yaml.safe_load(p.read_text())]  # run configs; class maps have no `data`
    assert len(configs) >= 8, configs
    for path in configs:
        cfg = load_config(path)
        method_class(cfg.method.name).parse_params(cfg)
        header = path.read_text().split("\nname:")[0]
        assert header.startswith("#") and "rayda " in header, f"{path}: the header says how to make its data"
