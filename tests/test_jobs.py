"""Ray Jobs: `ray job submit --working-dir <repo> -- python jobs/train.py ...` against a real local head.

The head is a `ray start --head --block` subprocess owned by this module, on its own ports and temp
dir: the test session's in-process Ray (conftest `ray_session`) keeps running beside it, so the head is
ended by PID (never `ray stop`, which would end every Ray on the machine) and the module checks that
no process of it is left.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path)
import yaml

import psutil  # noqa: E402  (from ray/thirdparty_files)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent          # the venv's bin: `ray`, and the `python` jobs run with
ENTRY_POINTS = ["generate", "convert", "pair", "train", "translate", "eval", "measure", "bench", "demo", "tune"]
SUBMIT_TIMEOUT_S = 400  # a loaded 2-core machine has needed 150 s for the train job


def _env() -> dict:
    """Environment of the head and of the `ray job ...` CLI: none of this process's Ray settings
    (ray.init sets RAY_AUTH_MODE=token here), no token auth (a local test head), the venv first on
    PATH (the job's `python` is whatever PATH gives the head)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="disabled", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM ends the head at once, no 30 s drain
               RAY_USAGE_STATS_ENABLED="0", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def _free_ports(n: int) -> list[int]:
    """n distinct ports free now (held open together so they differ, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes_of(temp_dir: str, seen: dict[int, psutil.Process]) -> list[psutil.Process]:
    """Live processes started for the head: those seen as its descendants (psutil.Process checks that a
    PID was not reused since), and any whose command line names its temp dir (a daemon reparented to init)."""
    found = {}
    for pid, p in seen.items():
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                found[pid] = p
        except psutil.Error:  # gone meanwhile
            pass
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and temp_dir in " ".join(p.info["cmdline"] or ()):
                found[p.pid] = p
        except psutil.Error:
            pass
    found.pop(os.getpid(), None)
    return list(found.values())


class Head:
    def __init__(self, proc: subprocess.Popen, temp_dir: str, dashboard_port: int, log: Path):
        self.proc, self.temp_dir, self.log = proc, temp_dir, log
        self.address = f"http://127.0.0.1:{dashboard_port}"
        self.seen: dict[int, psutil.Process] = {proc.pid: psutil.Process(proc.pid)}
        self._ready = False

    def remember_children(self) -> None:
        """Record the PIDs of everything the head has spawned so far (workers retitle themselves
        `ray::...`, so their command lines no longer name the temp dir)."""
        try:
            children = self.seen[self.proc.pid].children(recursive=True)
        except psutil.Error:
            return
        self.seen.update((c.pid, c) for c in children if c.pid not in self.seen)

    def submit(self, submission_id: str, *entrypoint: str, log: Path) -> "Submission":
        """`ray job submit ... -- ENTRYPOINT`, started now; it blocks (streaming the job's logs) until the
        job ends, so its exit status is the job's."""
        return Submission(self, submission_id, [
            str(BIN / "ray"), "job", "submit", "--address", self.address, "--submission-id", submission_id,
            "--working-dir", str(REPO), "--", *entrypoint], log)

    def ready(self, timeout_s: float = 90) -> "Head":
        """Wait until the dashboard (the Jobs API) answers."""
        if self._ready:
            return self
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"`ray start --head` exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=2) as r:
                    if r.status == 200:
                        self._ready = True
                        self.remember_children()
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"the dashboard at {self.address} did not answer in {timeout_s} s:\n{self.log.read_text()[-4000:]}")

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address)


class Submission:
    def __init__(self, head: Head, job_id: str, cmd: list[str], log: Path):
        self.head, self.job_id, self.log, self.started = head, job_id, log, time.monotonic()
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def wait(self) -> tuple[int, str]:
        """(exit status of `ray job submit`, its output)."""
        try:
            self.proc.wait(timeout=max(1.0, SUBMIT_TIMEOUT_S - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"`ray job submit` of {self.job_id} still running after {SUBMIT_TIMEOUT_S} s:\n"
                        f"{self.log.read_text()[-4000:]}")
        finally:
            self.head.remember_children()
        return self.proc.returncode, self.log.read_text()

    def seconds(self) -> float:
        """How long the job ran on the cluster (its entrypoint, from the head's record)."""
        info = self.head.client().get_job_info(self.job_id)
        return (info.end_time - info.start_time) / 1000

    def registered(self) -> bool:
        """Whether the head knows the job (its working dir is uploaded), or the CLI gave up."""
        if self.proc.poll() is not None:
            return True
        try:
            self.head.client().get_job_info(self.job_id)
            return True
        except RuntimeError:  # "Job ... does not exist" until the CLI has uploaded and submitted
            return False


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.pid} {' '.join(p.cmdline())[:90]}"
    except psutil.Error:  # ended meanwhile
        return f"{p.pid} (ended)"


def _stop(head: Head) -> tuple[float, list[str]]:
    """SIGTERM the `ray start --block` process, which ends Ray's own processes, then end what is left
    (Ray 2.60 leaves the dashboard's forkserver, its module processes and a multiprocessing
    resource_tracker, which ignores SIGTERM): SIGTERM, then SIGKILL after a grace period.
    Returns the seconds `ray start` took to exit and what was left after it."""
    head.remember_children()
    t0 = time.monotonic()
    if head.proc.poll() is None:
        head.proc.send_signal(signal.SIGTERM)
        try:
            head.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.proc.kill()
            head.proc.wait(timeout=10)
    seconds = time.monotonic() - t0
    leftovers = _processes_of(head.temp_dir, head.seen)
    described = [_describe(p) for p in leftovers]
    for p in leftovers:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(leftovers, timeout=3)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)
    return seconds, described


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head (`ray start --head --block`) with a dashboard on 127.0.0.1, 4 logical CPUs, its own
    ports and a short temp dir (unix socket paths are limited to ~107 bytes). Started, not waited
    for: `Head.ready()` waits for its dashboard."""
    if not (BIN / "ray").is_file():
        pytest.skip(f"no `ray` executable beside {sys.executable}")
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    gcs, dash, client, agent_http, agent_grpc, runtime_env, metrics, node_mgr, obj_mgr = _free_ports(9)
    log = Path(temp_dir) / "head.log"
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
           f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
           "--num-cpus=4", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT, cwd=temp_dir,
                                start_new_session=True)  # a Ctrl-C in pytest reaches only pytest
    head = Head(proc, temp_dir, dash, log)
    try:
        yield head
    finally:
        seconds, leftovers = _stop(head)
        _, left = psutil.wait_procs(_processes_of(temp_dir, head.seen), timeout=5)
        if not left:
            shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"processes of the test head still running: {[_describe(p) for p in left]}"
        print(f"`ray start` exited {seconds:.1f} s after SIGTERM; then ended {len(leftovers)} left over: "
              + "; ".join(leftovers))


def _write_config(path: Path, simworld, storage: Path, **data) -> Path:
    raw = {
        "name": "job", "storage_path": str(storage),
        "data": {"source": str(simworld["synthetic"].path), "val": str(simworld["real_val"].path),
                 "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0, **data},
        "model": {"size": "cpu"},
        "method": {"name": "source_only"},
        "train": {"steps": 4, "report_every": 2, "checkpoint_every": 2},
        "scaling": {"num_workers": 1, "cpus_per_worker": 0.5},
        "eval": {"batch_size": 4, "num_grid_images": 1},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def test_working_dir_upload_leaves_out_the_venv_and_ignored_outputs():
    """The files `ray job submit --working-dir <repo>` packs, found the way Ray finds them: its default
    excludes (.git, .venv, ...), then .gitignore and .rayignore (not .git/info/exclude)."""
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    files = []
    _dir_travel(REPO, [_get_excludes(REPO, ray_constants.get_runtime_env_default_excludes())],
                lambda p: files.append(p) if p.is_file() else None, include_gitignore=True)
    rel = [p.relative_to(REPO).as_posix() for p in files]
    assert "jobs/train.py" in rel and "rayda/cli.py" in rel and "pyproject.toml" in rel
    assert not [r for r in rel if r.startswith((".venv/", ".git/", "runs/", "out/", "data/", "demo_out/", "bench_out/",
                                                "bench_methods_out/")) or "__pycache__/" in r or ".egg-info/" in r]
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    project_mb = sum(p.stat().st_size for p, r in zip(files, rel) if not r.startswith(".")) / 2**20
    print(f"working-dir upload: {len(files)} files, {size_mb:.1f} MiB ({project_mb:.2f} MiB outside dot-folders)")
    assert project_mb < 5, project_mb


@pytest.fixture(scope="module")
def jobs(ray_head, tmp_path_factory, request):
    """Two `ray job submit`s running side by side: a tiny training run, and one whose dataset is missing.
    The second starts once the first is registered, so it finds the working dir already uploaded."""
    simworld = request.getfixturevalue("simworld")  # made while the head starts (a session fixture
    # named in the signature would be set up before the head)
    ray_head.ready()
    tmp = tmp_path_factory.mktemp("jobs")
    suffix = uuid.uuid4().hex[:8]
    good = _write_config(tmp / "tiny.yaml", simworld, tmp / "runs")
    bad = _write_config(tmp / "bad.yaml", simworld, tmp / "bad_runs", source=str(tmp / "no_such_dataset"))
    train = ray_head.submit(f"rayda-test-train-{suffix}", "python", "jobs/train.py", "--config", str(good),
                            log=tmp / "train.log")
    submissions = {"train": train, "storage": tmp / "runs", "bad_storage": tmp / "bad_runs"}
    try:
        deadline = time.monotonic() + 60
        while not train.registered() and time.monotonic() < deadline:
            time.sleep(0.5)
        submissions["fail"] = ray_head.submit(f"rayda-test-fail-{suffix}", "python", "jobs/train.py", "--config",
                                              str(bad), log=tmp / "fail.log")
        yield submissions
    finally:
        for sub in (submissions.get("train"), submissions.get("fail")):
            if sub is not None and sub.proc.poll() is None:  # a test failed before waiting on it
                sub.proc.kill()
                sub.proc.wait()


@pytest.mark.integration
def test_train_job_runs_to_success_and_writes_the_run(jobs):
    train = jobs["train"]
    code, output = train.wait()
    assert code == 0, output[-6000:]
    client = train.head.client()
    assert client.get_job_status(train.job_id) == "SUCCEEDED"
    logs = client.get_job_logs(train.job_id)
    run = jobs["storage"] / "job"
    assert f"run directory: {run}" in logs and "target mIoU:" in logs, logs[-4000:]

    history = json.loads((run / "history.json").read_text())
    assert [h["step"] for h in history] == [2, 4]
    assert "method `source_only`, 4 of 4 steps on 1 worker(s)" in (run / "report.md").read_text()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["step"] == 4 and 0.0 <= metrics["miou"] <= 1.0
    assert sorted(p.name for p in run.glob("checkpoint_*") if p.is_dir()) == ["checkpoint_00000002",
                                                                              "checkpoint_00000004"]
    print(f"train job: ran {train.seconds():.1f} s")


@pytest.mark.integration
def test_failing_job_ends_failed_with_raydas_one_line_error(jobs):
    fail = jobs["fail"]
    code, output = fail.wait()
    assert code != 0, output[-4000:]
    client = fail.head.client()
    assert client.get_job_status(fail.job_id) == "FAILED"
    logs = client.get_job_logs(fail.job_id)
    errors = [line for line in logs.splitlines() if line.startswith("rayda train: error: ")]
    assert len(errors) == 1 and "no_such_dataset" in errors[0], logs[-4000:]
    assert "Traceback" not in logs, logs[-4000:]
    assert not jobs["bad_storage"].exists()
    print(f"failing job: ran {fail.seconds():.1f} s")


_HELP_ALL = """
import contextlib, io, json, runpy, sys
tasks, failed = sys.argv[1:], {}
for task in tasks:
    sys.argv, out, code = [f"jobs/{task}.py", "--help"], io.StringIO(), "no exit"
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(f"jobs/{task}.py", run_name="__main__")
    except SystemExit as e:
        code = e.code
    if code != 0 or f"usage: rayda {task}" not in out.getvalue():
        failed[task] = f"exit {code}: {out.getvalue()[-300:]}"
print(json.dumps(failed))
"""


def test_every_job_entry_point_exists_and_answers_help():
    missing = [t for t in ENTRY_POINTS if not (REPO / "jobs" / f"{t}.py").is_file()]
    assert not missing, f"jobs/<task>.py missing for: {missing}"
    # `python jobs/TASK.py --help` for every task, run as __main__ in one interpreter (one rayda import).
    done = subprocess.run([sys.executable, "-c", _HELP_ALL, *ENTRY_POINTS], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}, done.stdout[-4000:]
