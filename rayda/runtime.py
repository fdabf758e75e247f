"""Connecting to Ray: an existing cluster when there is one, else an embedded local instance."""
from __future__ import annotations

import os

import ray

# Ray Train's controller polls workers every 2 s by default, which makes each
# `ray.train.report` cost ~1.4 s; polling faster brings that to ~0.1 s.
_DEFAULT_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


_started_local = False


def started_local_ray() -> bool:
    """True when init_ray started an embedded local Ray (no cluster that could scale up)."""
    return _started_local


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """`ray.init` that joins RAY_ADDRESS / a running cluster, or starts a local one (dashboard on 127.0.0.1)."""
    if ray.is_initialized():
        return
    for k, v in _DEFAULT_ENV.items():
        os.environ.setdefault(k, v)
    kwargs = {"dashboard_host": "127.0.0.1", "log_to_driver": True}
    global _started_local
    if address is None and "RAY_ADDRESS" not in os.environ:
        kwargs["num_cpus"] = num_cpus
    try:
        ctx = ray.init(address=address, **{k: v for k, v in kwargs.items() if v is not None})
    except ConnectionError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: {e}") from None
    # Joined a cluster when its GCS was already there; started one when this process owns the node.
    _started_local = bool(ctx) and ray._private.worker.global_worker.node.is_head()
