"""The cloud cluster configs (cluster.yaml, jobs/cluster-gcp.yaml) pass Ray's own autoscaler validation.

Ray's `ray up` runs `prepare_config` (merge with the provider's defaults.yaml, setup-command
merging, docker checks, per-type worker limits) and then `validate_config` (ray-schema.json plus
the head-type and min/max checks) before it touches the cloud. Both are called here directly: no
bootstrap_aws/bootstrap_gcp, no cloud call, no Ray cluster. The project's own choices are asserted
explicitly on top, so a regression fails even where Ray's schema would accept it.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"aws": ROOT / "cluster.yaml", "gcp": ROOT / "jobs" / "cluster-gcp.yaml"}
STORAGE = {"aws": "s3://BUCKET/rayda-runs", "gcp": "gs://BUCKET/rayda-runs"}


def load(cloud: str) -> dict:
    return yaml.safe_load(CONFIGS[cloud].read_text())


def ray_validate(config: dict) -> dict:
    """What `ray up` does before any cloud call: fill in defaults, then check against Ray's schema."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def is_spot(cloud: str, node_config: dict) -> bool:
    if cloud == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", {})
    assert isinstance(scheduling, dict), "GCE's Instance.scheduling is an object, not a list"
    return scheduling.get("provisioningModel") == "SPOT" or bool(scheduling.get("preemptible"))


def gpu_types(config: dict) -> dict:
    return {name: t for name, t in config["available_node_types"].items() if t["resources"].get("GPU", 0) > 0}


@pytest.fixture(params=sorted(CONFIGS))
def cloud(request) -> str:
    return request.param


def test_ray_validator_accepts(cloud):
    config = load(cloud)
    assert config["provider"]["type"] == cloud
    prepared = ray_validate(config)
    # prepare_config kept our lists (it fills only what is missing).
    assert prepared["setup_commands"] == config["setup_commands"]
    assert prepared["head_start_ray_commands"] == config["head_start_ray_commands"]


@pytest.mark.parametrize("where, typo", [
    ("top", "max_worker"),                # max_workers
    ("node_type", "min_worker"),          # min_workers on a worker type
    ("docker", "run_option"),             # run_options
])
def test_ray_validator_rejects_a_typo(cloud, where, typo):
    config = load(cloud)
    right = typo + "s"
    if where == "top":
        section = config
    elif where == "node_type":
        section = next(iter(gpu_types(config).values()))
    else:
        section = config["docker"]
    section[typo] = section.pop(right)
    with pytest.raises(jsonschema.ValidationError, match=typo):
        ray_validate(config)


def test_image_is_ray_gpu_at_the_installed_ray_version(cloud):
    docker = load(cloud)["docker"]
    m = re.fullmatch(r"rayproject/ray:(?P<ver>[0-9][^-]*)(-py(?P<py>\d+))?-gpu", docker["image"])
    assert m, f"expected a rayproject/ray:<version>[-pyXY]-gpu image (not ray-ml, frozen at 2.30), got {docker['image']}"
    assert m["ver"] == ray.__version__, f"bump the cluster image to Ray {ray.__version__} (it says {m['ver']})"
    assert not {"head_image", "worker_image"} & docker.keys()
    assert docker["container_name"] and docker["pull_before_run"] is True
    opts = " ".join(docker["run_options"])
    assert "--ulimit nofile=65536:65536" in opts and "--shm-size=" in opts


def test_head_has_no_gpu_and_is_not_spot(cloud):
    config = load(cloud)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU", 0) <= 2, "training must not land on the head"
    assert not is_spot(cloud, head["node_config"])
    assert "guestAccelerators" not in head["node_config"]
    assert "min_workers" not in head and "max_workers" not in head


def test_gpu_workers_scale_from_zero_and_one_type_is_spot(cloud):
    config = load(cloud)
    gpus = gpu_types(config)
    assert len(gpus) >= 2
    assert all(t.get("min_workers", 0) == 0 for t in gpus.values()), "idle clusters must not keep GPUs"
    spot = [name for name, t in gpus.items() if is_spot(cloud, t["node_config"])]
    assert spot, "at least one GPU worker type should be spot"
    assert len(spot) < len(gpus), "keep an on-demand GPU type for runs that must not be interrupted"
    assert sum(t["max_workers"] for t in gpus.values()) >= config["max_workers"] >= max(
        t["max_workers"] for t in gpus.values())
    for t in gpus.values():
        node = t["node_config"]
        if cloud == "gcp":
            assert node["guestAccelerators"][0]["acceleratorCount"] == t["resources"]["GPU"]
            assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"
            assert node["serviceAccounts"], "workers need a service account to write gs:// checkpoints"
        else:
            assert "IamInstanceProfile" in node, "workers need an instance profile to write s3:// checkpoints"
            assert re.fullmatch(r"ami-[0-9a-f]{8,17}", node["ImageId"])


def test_commands(cloud):
    config = load(cloud)
    head_start = " ".join(config["head_start_ray_commands"])
    assert config["head_start_ray_commands"][0] == "ray stop"
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in CONFIGS[cloud].read_text()
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "ulimit -n 65536;" in head_start
    assert config["worker_start_ray_commands"][0] == "ray stop"
    assert "ulimit -n 65536; ray start --address=$RAY_HEAD_IP:6379" in config["worker_start_ray_commands"][1]
    setup = config["setup_commands"]
    assert "pip install -q -e ~/rayda" in setup
    torch_line = next(i for i, c in enumerate(setup) if "torch" in c)
    assert torch_line < setup.index("pip install -q -e ~/rayda"), "the ray images ship no torch"
    assert config["file_mounts"] == {"~/rayda": "."}
    assert ".gitignore" in config["rsync_filter"], "do not upload .venv/ and data/"


def test_aws_specifics():
    config = load("aws")
    assert config["provider"]["region"] == "us-west-2"
    assert config["provider"]["cache_stopped_nodes"] is False
    assert config["auth"]["ssh_user"] == "ubuntu"


def test_both_clouds_run_the_same_software():
    aws, gcp = load("aws"), load("gcp")
    for key in ("docker", "setup_commands", "head_start_ray_commands", "worker_start_ray_commands",
                "file_mounts", "rsync_filter", "rsync_exclude", "idle_timeout_minutes", "cluster_name"):
        assert aws[key] == gcp[key], key
    assert gcp["provider"]["project_id"] == "my-project" and gcp["provider"]["availability_zone"]


def test_comments_name_the_checkpoint_storage(cloud):
    assert STORAGE[cloud] in CONFIGS[cloud].read_text()
