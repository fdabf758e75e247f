"""Shared fixtures: one real local Ray for the whole session, small simworld datasets on disk."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # cheap ray.train.report in tests


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # address="local": never join a stale or foreign cluster. 4 logical CPUs on 2 cores leave Ray Data
    # room beside two training workers (it starves silently otherwise).
    # The dashboard serves the state API that Ray Train's placement-group cleaner needs when Tune stops a trial.
    ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_clean(ray_session):
    """Fails a test that leaves CPUs reserved (e.g. a leaked placement group), before it hangs the next one."""
    yield ray_session
    import time

    for _ in range(50):
        if ray_session.available_resources().get("CPU", 0) >= 4:
            return
        time.sleep(0.2)
    pytest.fail(f"Ray resources not released after the test: {ray_session.available_resources()}")


@pytest.fixture(scope="session")
def simworld(ray_session, tmp_path_factory):
    """{"synthetic": info, "real_val": info}: small labeled datasets, 64x128."""
    from rayda.simworld import generate

    root = tmp_path_factory.mktemp("simworld")
    return {
        "synthetic": generate("synthetic", 32, (64, 128), 0, root / "synthetic", rows_per_shard=16),
        "real_val": generate("real", 8, (64, 128), 2, root / "real_val"),
    }


@pytest.fixture(scope="session")
def simworld_pairs(simworld, tmp_path_factory):
    """`rayda pair` (K = 5) of the synthetic and real_val sets, real labels predicted by a random segmenter:
    the pairs directory."""
    import json

    import torch

    from rayda.classes import CITYSCAPES_19
    from rayda.cli import main
    from rayda.models import build_segmenter

    root = tmp_path_factory.mktemp("pairs")
    ckpt = root / "ckpt"
    ckpt.mkdir()
    torch.manual_seed(0)
    torch.save(build_segmenter("deeplabv3plus_mobilenetv2", 19, size="cpu").state_dict(), ckpt / "segmenter.pt")
    (ckpt / "meta.json").write_text(json.dumps({"version": 1, "method": "source_only", "step": 0,
                                                "arch": "deeplabv3plus_mobilenetv2", "size": "cpu",
                                                "classes": CITYSCAPES_19.to_json(), "config": {}}))
    out = root / "pairs"
    assert main(["pair", "--synthetic", str(simworld["synthetic"].path), "--real", str(simworld["real_val"].path),
                 "--out", str(out), "--k", "5", "--real-labels-from", str(ckpt)]) == 0
    return out


@pytest.fixture
def small_torch():
    """Seeded, single-threaded torch: tiny tensors gain nothing from threads, and idle threads
    spin-wait, which gets very slow when the CPU is shared with other work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_method():
    """make(name, steps=8, **params): a method in-process with CPU-sized nets on 32x64 crops, seeded init."""
    import torch

    from rayda.classes import CITYSCAPES_19
    from rayda.config import validate
    from rayda.methods import method_class

    def make(name, steps=8, **params):
        cfg = validate({"name": "t", "data": {"source": "s", "target": "t", "crop": [32, 64]}, "model": {"size": "cpu"},
                        "method": {"name": name, **params}, "train": {"steps": steps}})
        torch.manual_seed(0)
        method = method_class(name)(cfg, CITYSCAPES_19)
        method.configure_optimizers()
        return method
    return make


def tiny_batch(seed=0):
    """A paired batch of 2 (image, label, target_image) at 32x64, fixed by the seed."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(2, 3, 32, 64, generator=g) * 2 - 1, "label": torch.randint(0, 19, (2, 32, 64), generator=g),
            "target_image": torch.rand(2, 3, 32, 64, generator=g) * 2 - 1}


@pytest.fixture(name="tiny_batch")
def tiny_batch_fixture():
    return tiny_batch
