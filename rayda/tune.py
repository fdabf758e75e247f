"""`rayda tune`: Ray Tune sweeps over a run config, each trial one TorchTrainer run of the method.

A search-space file names config keys by their dotted path:

    metric: val/miou          # default; any reported key works, e.g. loss/seg with mode: min
    mode: max
    params:
      method.p: {uniform: [0.9, 0.999]}
      method.lambda_cycle: {loguniform: [5, 40]}
      method.d_type: {choice: [patch, image]}
"""
from __future__ import annotations

import copy
import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.tune
import yaml

from rayda.config import ConfigError, RunConfig, set_dotted, to_dict, validate

log = logging.getLogger("rayda")

# Search-space kinds: name -> (Ray Tune domain, check of its arguments)
KINDS = {
    "uniform": ray.tune.uniform,
    "loguniform": ray.tune.loguniform,
    "randint": ray.tune.randint,  # [low, high): high excluded
    "choice": ray.tune.choice,
    "grid": ray.tune.grid_search,  # every value, num_samples times
}
SEARCHERS = {"random": None, "optuna": ("ray.tune.search.optuna", "OptunaSearch", "optuna"),
             "hyperopt": ("ray.tune.search.hyperopt", "HyperOptSearch", "hyperopt")}


@dataclass
class SearchSpace:
    params: dict[str, tuple[str, list]]  # dotted key -> (kind, arguments)
    metric: str
    mode: str

    def domains(self) -> dict[str, Any]:
        return {key: KINDS[kind](args) if kind in ("choice", "grid") else KINDS[kind](*args)
                for key, (kind, args) in self.params.items()}


def load_space(path: str | Path, cfg: RunConfig) -> SearchSpace:
    """Read and check a search-space file against the run config it sweeps; errors name the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search-space file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'params' (and optional 'metric', 'mode')")
    unknown = set(raw) - {"params", "metric", "mode"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}; expected params, metric, mode")
    if not isinstance(raw.get("params"), dict) or not raw["params"]:
        raise ConfigError(f"{path}: 'params' must map dotted config keys to a search kind, e.g. "
                          "method.p: {uniform: [0.9, 0.999]}")
    params = {}
    for key, spec in raw["params"].items():
        where = f"{path}: params.{key}"
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
            raise ConfigError(f"{where}: expected one of {{{', '.join(f'{k}: [...]' for k in KINDS)}}}, got {spec!r}")
        kind, args = next(iter(spec.items()))
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} takes a non-empty list, got {args!r}")
        if kind in ("uniform", "loguniform", "randint"):
            if len(args) != 2 or not all(isinstance(a, (int, float)) for a in args) or not args[0] < args[1]:
                raise ConfigError(f"{where}: {kind} takes [low, high] numbers with low < high, got {args!r}")
            if kind == "loguniform" and args[0] <= 0:
                raise ConfigError(f"{where}: loguniform needs low > 0, got {args!r}")
            values = args if kind != "randint" else [args[0], args[1] - 1]
        else:
            values = args
        for value in values:  # every end of the range must make a valid run config
            apply_params(cfg, {key: value}, where)
        params[key] = (kind, args)
    metric = raw.get("metric", "val/miou")
    mode = raw.get("mode", "max" if metric == "val/miou" else None)
    if mode not in ("min", "max"):
        raise ConfigError(f"{path}: mode must be min or max for metric '{metric}', got {mode!r}")
    if metric == "val/miou" and not cfg.data.val:
        raise ConfigError(f"{path}: metric val/miou needs data.val (labeled target validation data) in the run "
                          "config; without target labels use a proxy the method reports, e.g. metric: loss/seg, "
                          "mode: min")
    return SearchSpace(params, metric, mode)


def apply_params(cfg: RunConfig, params: dict[str, Any], where: str = "params") -> RunConfig:
    """The run config with dotted keys set; the method's own keys are checked too."""
    from rayda.methods import method_class

    raw = copy.deepcopy(to_dict(cfg))
    for key, value in params.items():
        set_dotted(raw, key, value)
    try:
        out = validate(raw, where)
        method_class(out.method.name).parse_params(out)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return out


def trial_config(params: dict, base: dict, storage: str) -> RunConfig:
    """A trial's run: the base config with the trial's values, named by the trial, stored in the sweep."""
    cfg = apply_params(validate(base), params)
    return cfg.model_copy(update={"name": ray.tune.get_context().get_trial_id(), "storage_path": storage})


def run_trial(params: dict, base: dict, storage: str) -> None:
    """Tune's driver function: build and fit the trial's TorchTrainer; its reports reach Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from rayda.methods import method_class
    from rayda.train.run import build_trainer

    cfg = trial_config(params, base, storage)
    if not method_class(cfg.method.name).has_segmenter:
        cfg = segmenter_on_translation(cfg)
    # Same name and storage on a restored sweep: Ray Train resumes the run from its last checkpoint.
    build_trainer(cfg, callbacks=[TuneReportCallback()]).fit()


def segmenter_on_translation(cfg: RunConfig) -> RunConfig:
    """For a method that only translates (csa, unit): train it, translate data.source, and return the config
    of the source-only segmenter on the translation (same data, model, steps), the run Tune scores."""
    from rayda.train.run import build_trainer
    from rayda.translate import translate

    raw = to_dict(cfg)
    raw["name"] = f"{cfg.name}_translator"
    raw["data"]["val"] = raw["train"]["val_every"] = None
    result = build_trainer(validate(raw)).fit()
    translated = Path(cfg.storage_path) / f"{cfg.name}_translated"
    with result.checkpoint.as_directory() as d:
        translate(d, cfg.data.source, translated, use_gpu=cfg.scaling.use_gpu, overwrite=True)
    raw = to_dict(cfg)
    raw["data"].update(source=str(translated), target=None, pairing="random", pairs=None)
    raw["method"] = {"name": "source_only"}
    return validate(raw)


DRIVER_CPU = 0.25


def trial_cpus(cfg: RunConfig) -> float:
    # Driver and workers, plus one CPU for the Ray Data reads and validation beside them.
    return DRIVER_CPU + cfg.scaling.num_workers * cfg.scaling.cpus_per_worker + 1


def max_concurrent(cfg: RunConfig) -> int:
    """Trials that fit at once: a Train run starts only when all its workers fit."""
    res = ray.cluster_resources()
    if cfg.scaling.use_gpu:
        return max(1, int(res.get("GPU", 0) // cfg.scaling.num_workers))
    return max(1, int(res.get("CPU", 1) // trial_cpus(cfg)))


def _searcher(name: str, space: SearchSpace):
    if SEARCHERS.get(name, 0) == 0:
        raise ConfigError(f"--search: unknown {name!r}; choose one of {sorted(SEARCHERS)}")
    if SEARCHERS[name] is None:
        return None
    module, cls, package = SEARCHERS[name]
    if any(kind == "grid" for kind, _ in space.params.values()):
        raise ConfigError(f"--search {name} cannot take 'grid' params; use choice, or --search random")
    try:
        import importlib

        importlib.import_module(package)
        return getattr(importlib.import_module(module), cls)()
    except ImportError:
        raise ConfigError(f"--search {name} needs the '{package}' package: pip install 'rayda[tune]'") from None


def tune(cfg: RunConfig, space_path: str | Path, *, num_samples: int = 4, scheduler: str = "asha",
         search: str = "random", grace_period: int | None = None, max_concurrent_trials: int | None = None,
         restore: bool = False) -> dict:
    """Run (or, with restore, continue) the sweep STORAGE/NAME; write its results table, best config, plot."""
    from ray.tune.schedulers import ASHAScheduler

    if "://" in cfg.storage_path:
        raise ConfigError(f"storage_path: rayda tune writes its trials and translations by local path; give a "
                          f"directory every node reaches (a shared file system), not {cfg.storage_path}")
    space = load_space(space_path, cfg)
    if space.metric == "val/miou" and cfg.train.val_every is None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"val_every": cfg.train.report_every})})
    sweep_dir = cfg.run_dir
    storage = str(sweep_dir / "trials")
    trainable = ray.tune.with_parameters(run_trial, base=to_dict(cfg), storage=storage)
    # The driver function mostly waits on its Train run: a sliver of a CPU (Tune's default is a whole one),
    # on the head node, so a lost spot worker never takes a trial's driver with it.
    trainable = ray.tune.with_resources(trainable, {"CPU": DRIVER_CPU, "node:__internal_head__": 0.001})
    if restore:
        if not ray.tune.Tuner.can_restore(str(sweep_dir)):
            raise ConfigError(f"--restore: no sweep to continue at {sweep_dir}")
        tuner = ray.tune.Tuner.restore(str(sweep_dir), trainable, resume_unfinished=True, resume_errored=True)
    else:
        if ray.tune.Tuner.can_restore(str(sweep_dir)):
            raise ConfigError(f"a sweep already exists at {sweep_dir}: continue it with --restore, or pick another "
                              "name/storage_path")
        if scheduler not in ("asha", "none"):
            raise ConfigError(f"--scheduler: unknown {scheduler!r}; choose asha or none")
        asha = ASHAScheduler(time_attr="step", max_t=cfg.train.steps, reduction_factor=2,
                             grace_period=grace_period or max(cfg.train.report_every, cfg.train.steps // 4))
        limit = max_concurrent_trials or min(num_samples, max_concurrent(cfg))
        log.info(f"[tune] {num_samples} trials of {cfg.train.steps} steps, {limit} at a time, "
                 f"{space.metric} ({space.mode}), scheduler {scheduler}, search {search}")
        tuner = ray.tune.Tuner(
            trainable, param_space=space.domains(),
            tune_config=ray.tune.TuneConfig(metric=space.metric, mode=space.mode, num_samples=num_samples,
                                            scheduler=asha if scheduler == "asha" else None,
                                            search_alg=_searcher(search, space), max_concurrent_trials=limit),
            run_config=ray.tune.RunConfig(name=cfg.name, storage_path=str(sweep_dir.parent),
                                          failure_config=ray.tune.FailureConfig(max_failures=cfg.scaling.max_failures)),
        )
    results = tuner.fit()
    return write_results(results, cfg, space, sweep_dir)


def write_results(results, cfg: RunConfig, space: SearchSpace, sweep_dir: Path) -> dict:
    """results.csv / results.md (every trial), best.yaml (ready to run), params.png (metric vs each param)."""
    from rayda.report import write_markdown

    keys = list(space.params)
    rows = []
    for r in results:
        m = r.metrics or {}
        best = r.metrics_dataframe[space.metric].agg(space.mode) if (
            r.metrics_dataframe is not None and space.metric in r.metrics_dataframe) else None
        rows.append({"trial": m.get("trial_id", Path(r.path).name), **{k: r.config.get(k) for k in keys},
                     "steps": m.get("step"), space.metric: m.get(space.metric), f"best {space.metric}": best,
                     "status": "error" if r.error else ("stopped early" if m.get("step", 0) < cfg.train.steps else "done")})
    scored = [row for row in rows if _finite(row[space.metric])]
    if not scored:
        errors = "; ".join(f"{r.path}: {r.error}" for r in results if r.error)
        raise RuntimeError(f"no trial of the sweep at {sweep_dir} reported {space.metric}" + (f" ({errors})" if errors else ""))
    # Best = best final value among trials that ran the full budget (ASHA's survivors), else among all.
    finished = [row for row in scored if row["status"] == "done"] or scored
    pick = max if space.mode == "max" else min
    best = pick(finished, key=lambda row: row[space.metric])
    best_cfg = apply_params(cfg, {k: best[k] for k in keys})
    best_cfg = best_cfg.model_copy(update={"name": f"{cfg.name}-best", "storage_path": cfg.storage_path})
    best_raw = to_dict(best_cfg)
    if space.metric == "val/miou" and "val_every" in best_raw["train"]:
        best_raw["train"].pop("val_every")  # tune's own setting, not part of the winning config
    (sweep_dir / "best.yaml").write_text(f"# best trial {best['trial']} of sweep {cfg.name}: "
                                         f"{space.metric} {best[space.metric]:.4g}\n"
                                         + yaml.safe_dump(best_raw, sort_keys=False))
    columns = list(rows[0])
    with open(sweep_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    table = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n" + "\n".join(
        "| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows)
    write_markdown(sweep_dir / "results.md", f"rayda sweep {cfg.name}", [
        ("Trials", table),
        ("Best", f"trial `{best['trial']}`: {space.metric} = {_cell(best[space.metric])}; run it with "
                 f"`rayda train --config {sweep_dir / 'best.yaml'}`"),
        ("Metric against each parameter", "![params](params.png)")])
    save_param_plot(sweep_dir / "params.png", rows, keys, space.metric)
    summary = {"best": best, "best_config": str(sweep_dir / "best.yaml"), "trials": rows, "metric": space.metric,
               "mode": space.mode}
    log.info(f"[tune] best trial {best['trial']}: {space.metric} {best[space.metric]:.4g}; "
             f"results in {sweep_dir / 'results.md'}")
    return summary


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _cell(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))


def save_param_plot(path: Path, rows: list[dict], keys: list[str], metric: str) -> None:
    """One scatter per searched parameter: final metric of each trial against its value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(keys), 3.5), dpi=100)
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        points = [(row[key], row[metric]) for row in rows if _finite(row[metric])]
        if points and all(isinstance(x, (int, float)) for x, _ in points):
            ax.scatter(*zip(*points))
        elif points:  # categorical values
            labels = sorted({str(x) for x, _ in points})
            ax.scatter([labels.index(str(x)) for x, _ in points], [y for _, y in points])
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
