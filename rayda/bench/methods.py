"""`rayda bench methods`: every method and its ablation variants on simworld, with one budget and one segmenter.

Each variant is a `rayda train` of its method's simworld config (`jobs/configs/simworld/<method>.yaml`, for
the CPU-scale learning rates) with the data, segmenter, steps, batch and seed of the chosen scale. Methods
that only translate (csa, unit) are scored the way their papers score them: translate the synthetic
training set, train the source-only segmenter on the translation for the same steps, evaluate; the SWD and
FID of their translation to the real images are recorded beside the synthetic set's own. Runs go in
parallel as far as the cluster's CPUs (or GPUs) allow. Writes bench.json, bench.md (with the gap closed =
(method - source) / (oracle - source)), bench.png (mIoU per variant) and each run's predictions and curves.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import ray
import yaml

from rayda.config import ConfigError, validate
from rayda.data import prepare_output
from rayda.report import write_html, write_markdown

log = logging.getLogger("rayda")

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "simworld"
MODEL = {"arch": "deeplabv3plus_mobilenetv2", "size": "cpu"}
GAP_IMAGES = 200  # images per side for the SWD/FID of a training set to the real images

# Data (images per split, image size), training crop, steps and per-worker batch of every run.
SCALES = {
    "demo": {"n_train": 400, "n_val": 100, "size": (128, 256), "crop": (64, 128), "steps": 500, "batch": 4},
    "full": {"n_train": 2000, "n_val": 500, "size": (256, 512), "crop": (128, 256), "steps": 2000, "batch": 8},
    "smoke": {"n_train": 16, "n_val": 8, "size": (64, 128), "crop": (32, 64), "steps": 2, "batch": 2},  # tests
}


@dataclass(frozen=True)
class Variant:
    name: str                     # row of the table
    method: str                   # the method, and its simworld config file
    params: dict = field(default_factory=dict)  # method.* overrides that make the variant
    source: str = "synthetic_train"
    translate: bool = False       # score: translate the synthetic set, train source-only on it
    init_from_source_only: bool = False  # method.segmenter_init = the source_only run (CyclePlus's M)
    spfeat: bool = False          # SP-Feat pairs of synthetic_train and real_train, labels of real predicted


BASELINES = (
    Variant("source_only", "source_only"),
    Variant("oracle", "source_only", source="real_train"),
)
VARIANTS = BASELINES + (
    Variant("csa", "csa", translate=True),
    Variant("csa/trainable-D", "csa", {"stage2_freeze_d": False}, translate=True),  # the paper's ablation
    Variant("csa/random-colour-augment", "source_only", {"color_augment_p": 0.99}),  # its Table 1 baseline
    Variant("lsd", "lsd"),
    Variant("lsd/alpha=0", "lsd", {"alpha": 0.0}),                # no auxiliary loss
    Variant("lsd/image-D", "lsd", {"d_type": "image"}),           # non-patch D
    Variant("lsd/feature-D", "lsd", {"d_type": "feature"}),       # no G, D on F's embedding
    Variant("gio_ada", "gio_ada"),                                # input + output level, joint output D
    Variant("gio_ada/input-only", "gio_ada", {"output_level": False}),
    Variant("gio_ada/output-only", "gio_ada", {"input_level": False}),
    Variant("gio_ada/none", "gio_ada", {"input_level": False, "output_level": False}),  # depth head only
    Variant("gio_ada/separate-output-D", "gio_ada", {"output_d": "separate"}),
    Variant("gio_ada/seg-output-D", "gio_ada", {"output_d": "seg"}),
    Variant("gio_ada/depth-output-D", "gio_ada", {"output_d": "depth"}),
    Variant("cycleplus", "cycleplus", init_from_source_only=True),
    Variant("cycleplus/cycada", "cycleplus", {"lambda_feat": 0.0}, init_from_source_only=True),
    Variant("cycleplus/cyclegan", "cycleplus", {"lambda_sem": 0.0, "lambda_feat": 0.0}, init_from_source_only=True),
    Variant("unit", "unit", translate=True),                      # random pairs
    Variant("unit/spfeat", "unit", translate=True, spfeat=True),
)
FAMILIES = sorted({v.method for v in VARIANTS} - {"source_only"})


def select(methods: str) -> list[Variant]:
    """'all', or a comma list of methods (every variant) and variant names -> those plus the baselines."""
    if methods == "all":
        return list(VARIANTS)
    wanted = {m.strip() for m in methods.split(",") if m.strip()}
    unknown = wanted - set(FAMILIES) - {v.name for v in VARIANTS}
    if unknown:
        raise ConfigError(f"--methods: unknown {sorted(unknown)}; choose 'all', methods {FAMILIES} "
                          f"or variants {[v.name for v in VARIANTS if v not in BASELINES]}")
    # A method brings every variant named after it, the colour-augmented baseline (CSA's Table 1) included.
    return [v for v in VARIANTS if v in BASELINES or v.name in wanted or v.name.split("/")[0] in wanted]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower())


class Bench:
    """One benchmark directory: data, runs, and the results of every variant."""

    def __init__(self, out: Path, scale: dict, seed: int, use_gpu: bool, measure_gap: bool = True):
        self.out, self.scale, self.seed, self.use_gpu = out, scale, seed, use_gpu
        self.measure_gap = measure_gap  # SWD/FID of the training images (source_only and translations)
        self.data = out / "data"
        self.source_only = threading.Event()  # set once the source_only checkpoint exists
        self.source_only_checkpoint: str | None = None
        self.pairs_lock = threading.Lock()
        self.real_fid_stats = None  # Inception statistics of real_train, computed once
        self.fid_lock = threading.Lock()

    def generate(self) -> None:
        from rayda.simworld import generate

        s = self.scale
        for split, (domain, n, seed) in {"synthetic_train": ("synthetic", s["n_train"], 0),
                                         "real_train": ("real", s["n_train"], 1),
                                         "real_val": ("real", s["n_val"], 2)}.items():
            if not (self.data / split / "dataset.json").is_file():
                log.info(f"[bench] generating {split}: {n} {domain} images at {s['size'][0]}x{s['size'][1]}")
                generate(domain, n, s["size"], seed, self.data / split)

    def config(self, name: str, method: str, params: dict, source: Path, val: bool, pairs: Path | None = None) -> dict:
        path = CONFIGS / f"{method}.yaml"
        if not path.is_file():
            raise ConfigError(f"bench: no simworld config for method '{method}' at {path}")
        method_cfg = {**yaml.safe_load(path.read_text())["method"], **params}
        method_cfg.pop("segmenter_init", None)
        s = self.scale
        return {
            "name": name, "storage_path": str(self.out / "runs"),
            "data": {"source": str(source), "target": str(self.data / "real_train"),
                     "val": str(self.data / "real_val") if val else None,
                     "crop": list(s["crop"]), "batch_size": s["batch"],
                     **({"pairing": "spfeat", "pairs": str(pairs)} if pairs else {})},
            "model": dict(MODEL), "method": method_cfg,
            "train": {"steps": s["steps"], "seed": self.seed, "report_every": max(1, s["steps"] // 10),
                      "checkpoint_every": s["steps"]},
            # Half a CPU per run leaves the rest to Ray Data's decoding; the runs share the machine anyway.
            "scaling": {"num_workers": 1, "use_gpu": self.use_gpu, "cpus_per_worker": 0.5},
            "eval": {"num_grid_images": 4},
        }

    def pairs(self) -> Path:
        """SP-Feat pairs for UNIT, made once; real labels predicted by the source_only segmenter."""
        from rayda.pairing import pair

        with self.pairs_lock:
            out = self.out / "pairs"
            if not (out / "pairs.json").is_file():
                self.source_only.wait()
                pair(self.data / "synthetic_train", self.data / "real_train", out,
                     k=min(15, self.scale["n_train"]), real_labels_from=self.source_only_checkpoint,
                     use_gpu=self.use_gpu, overwrite=True)
            return out

    def domain_gap(self, data: Path) -> dict:
        """SWD, and FID with the rayda[fid] extra, of a training set's images to the real training images."""
        from rayda.data import read_info, sample_ids
        from rayda.eval.fid import dataset_features, feature_stats, frechet_distance
        from rayda.eval.swd import dataset_swd

        n, size, real = min(GAP_IMAGES, self.scale["n_train"]), tuple(self.scale["size"]), self.data / "real_train"
        gap = {"swd": dataset_swd(data, real, max_images=n, size=size, seed=self.seed)["mean"], "fid": None}
        sets = [(info, sample_ids(info, n, self.seed)) for info in (read_info(data), read_info(real))]
        try:
            with self.fid_lock:  # the real set's statistics once, beside the first set measured
                feats = dataset_features(sets if self.real_fid_stats is None else sets[:1], size, self.use_gpu)
                if self.real_fid_stats is None:
                    self.real_fid_stats = feature_stats(feats[1])
            gap["fid"] = frechet_distance(*feature_stats(feats[0]), *self.real_fid_stats)
        except ConfigError as e:  # the optional extra is missing: SWD only
            log.warning(f"[bench] no FID: {e}")
        return gap

    def run(self, v: Variant) -> dict:
        from rayda.train.run import train
        from rayda.translate import translate

        t0 = time.perf_counter()
        name = slug(v.name)
        params = dict(v.params)
        if v.init_from_source_only:
            self.source_only.wait()
            if self.source_only_checkpoint is None:
                raise RuntimeError(f"{v.name}: the source_only run failed, so there is no segmenter to start from")
            params["segmenter_init"] = self.source_only_checkpoint
        pairs = self.pairs() if v.spfeat else None
        log.info(f"[bench] training '{v.name}'")
        cfg = self.config(name, v.method, params, self.data / v.source, val=not v.translate, pairs=pairs)
        result = train(validate(cfg))
        if v.name == "source_only":
            self.source_only_checkpoint = result.checkpoint.path
            self.source_only.set()
        row = {"variant": v.name, "method": v.method, "params": v.params, "run_dir": str(result.run_dir)}
        if v.translate:
            translated = self.data / f"{name}_translated"
            log.info(f"[bench] '{v.name}': translating synthetic_train, then training source-only on it")
            translate(result.checkpoint.path, self.data / "synthetic_train", translated, use_gpu=self.use_gpu,
                      overwrite=True)
            row["domain_gap"] = self.domain_gap(translated)
            result = train(validate(self.config(f"{name}_segmenter", "source_only", {}, translated, val=True)))
            row["segmenter_run_dir"] = str(result.run_dir)
        elif v.name == "source_only" and self.measure_gap:  # the untranslated set the translations improve on
            row["domain_gap"] = self.domain_gap(self.data / "synthetic_train")
        m = result.metrics
        row.update(target_miou=m["miou"], per_class=m["per_class"], steps=self.scale["steps"],
                   wall_time_s=round(time.perf_counter() - t0, 1), predictions=str(result.run_dir / "eval" / "predictions.png"))
        return row


def bench_methods(out: str | Path, *, methods: str = "all", scale: str = "demo", seed: int = 0,
                  parallel: int | None = None, use_gpu: bool = False, overwrite: bool = False) -> dict:
    if scale not in SCALES:
        raise ConfigError(f"--scale: unknown {scale!r}; choose one of {sorted(SCALES)}")
    variants = select(methods)
    out = prepare_output(out, overwrite)
    t0 = time.perf_counter()
    bench = Bench(out, SCALES[scale], seed, use_gpu, measure_gap=any(v.translate for v in variants))
    bench.generate()
    if parallel is None:  # one run per GPU, or per two CPUs: its worker (0.5), data reads, evaluation actor
        res = ray.cluster_resources()
        parallel = int(res.get("GPU", 0)) if use_gpu else int(res.get("CPU", 1) // 2)
    parallel = max(1, min(parallel, len(variants)))
    log.info(f"[bench] {len(variants)} runs, {parallel} at a time, {SCALES[scale]['steps']} steps each")
    rows, failures = [], {}
    with ThreadPoolExecutor(parallel) as pool:
        futures = {v.name: pool.submit(bench.run, v) for v in variants}
        for name, future in futures.items():
            try:
                rows.append(future.result())
            except Exception as e:  # one broken variant must not lose the others' results
                if name == "source_only":
                    bench.source_only.set()  # release the runs waiting on it; they fail with a clear message
                failures[name] = f"{type(e).__name__}: {e}"
                log.error(f"[bench] '{name}' failed: {failures[name]}")
            # Written after every run: an interrupted bench keeps what it measured.
            report = summarize(rows, failures, scale, SCALES[scale], seed, time.perf_counter() - t0)
            (out / "bench.json").write_text(json.dumps(report, indent=2))
            write_reports(out, report)
    print("\n" + (out / "bench.md").read_text())
    return report


def summarize(rows: list[dict], failures: dict, scale: str, scale_cfg: dict, seed: int, wall: float) -> dict:
    by_name = {r["variant"]: r for r in rows}
    src, ora = (by_name.get(k, {}).get("target_miou") for k in ("source_only", "oracle"))
    for r in rows:
        r["gap_closed"] = (r["target_miou"] - src) / (ora - src) if src is not None and ora not in (None, src) else None
    return {"benchmark": "simworld", "scale": scale, **{k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in scale_cfg.items()},
            "seed": seed, "model": MODEL, "runs": rows, "failed": failures, "wall_time_s": round(wall, 1),
            "date": time.strftime("%Y-%m-%d")}


def write_reports(out: Path, report: dict) -> None:
    rows = report["runs"]
    lines = ["| variant | target mIoU | gap closed | SWD to real | FID to real | wall time |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        gap = "–" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.0f}%"
        swd, fid = (r.get("domain_gap", {}).get(k) for k in ("swd", "fid"))
        lines.append(f"| {r['variant']} | {100 * r['target_miou']:.1f} | {gap} | {'–' if swd is None else f'{swd:.1f}'} "
                     f"| {'–' if fid is None else f'{fid:.1f}'} | {r['wall_time_s'] / 60:.1f} min |")
    for name, error in report["failed"].items():
        lines.append(f"| {name} | failed: {error.splitlines()[0][:120]} | | | | |")
    table = "\n".join(lines)
    s = report
    setup = (f"simworld, scale '{s['scale']}': {s['n_train']} synthetic and {s['n_train']} real training images at "
             f"{s['size'][0]}x{s['size'][1]}, {s['n_val']} real validation images; every run {s['steps']} steps of "
             f"batch {s['batch']} on {s['crop'][0]}x{s['crop'][1]} crops, {MODEL['arch']} ({MODEL['size']}), seed "
             f"{s['seed']}. Gap closed = (method - source_only) / (oracle - source_only). SWD (x 1e3) and FID "
             f"to real: the images the segmenter trained on (source_only: the synthetic set; csa, unit: its "
             f"translation) against the real training images, {GAP_IMAGES} or fewer of each. Total wall time "
             f"{s['wall_time_s'] / 60:.0f} min ({s['date']}).")
    images = [("Target mIoU per variant", out / "bench.png")]
    save_bar_chart(out / "bench.png", rows)
    for r in rows:
        png = Path(r["predictions"])
        if png.is_file():
            dest = out / "predictions" / f"{slug(r['variant'])}.png"
            dest.parent.mkdir(exist_ok=True)
            shutil.copy(png, dest)
            images.append((f"{r['variant']}: predictions on the first real validation images", dest))
    sections = [("Setup", setup), ("Target-domain validation", table)]
    write_markdown(out / "bench.md", "rayda bench methods", sections
                   + [("Images", "\n".join(f"![{c}]({p.relative_to(out)})" for c, p in images))])
    write_html(out / "bench.html", "rayda bench methods", sections, images)


def save_bar_chart(path: Path, rows: list[dict]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.35 * len(rows) + 1), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [r["variant"] for r in rows][::-1]
    ax.barh(names, [100 * r["target_miou"] for r in rows][::-1], color="tab:blue")
    ax.set_xlabel("target mIoU (%)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")

