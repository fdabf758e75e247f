"""Converters from the public benchmark datasets and users' image folders to rayda shard datasets."""
from __future__ import annotations

import logging
from pathlib import Path

KINDS = ("cityscapes", "gta5", "synthia", "synscapes", "vkitti1", "vkitti2", "kitti", "folder")
ON_ERROR = ("raise", "skip")

log = logging.getLogger(__name__)


def convert(kind: str, root: str | Path, out: str | Path, *, split: str | None = None, protocol: str | None = None,
            on_error: str = "raise", overwrite: bool = False, name: str | None = None, rows_per_shard: int = 64,
            **options):
    """Convert a dataset on disk into a shard dataset at `out`; returns its `DatasetInfo`.

    Labels are remapped once, here, to the ids of `protocol` ("19", "16", "13" or "10" Cityscapes
    classes, renumbered 0..n-1; default "19") with 255 = ignore; the folder kind takes its classes
    from `classes=FILE.yaml` instead. `on_error="raise"` stops at the first bad file with its path and
    the reason; "skip" converts the rest and lists the bad files in `out/skipped.json`. `options` are
    the kind's own (`depth_scale` for synthia and folder, `rgb` for synscapes, `classes` and `domain`
    for folder). Listing runs here on the driver; reading, checking and remapping run in Ray Data tasks.
    """
    from rayda.convert.common import ConvertError
    from rayda.convert.pipeline import get_kind, run
    from rayda.data import DatasetInfo, prepare_output

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    spec = get_kind(kind)
    split = split or spec.splits[0]
    if split not in spec.splits:
        raise ValueError(f"{kind} has splits {', '.join(spec.splits)}; got {split!r}")
    given = {k: v for k, v in options.items() if v is not None}
    if set(given) - set(spec.options):
        raise ValueError(f"option {', '.join(sorted(set(given) - set(spec.options)))} does not apply to {kind}"
                         + (f" (it takes {', '.join(spec.options)})" if spec.options else ""))
    options = {**spec.options, **given}
    if "depth_scale" in options and not options["depth_scale"] > 0:
        raise ValueError(f"depth_scale must be positive, got {options['depth_scale']}")
    protocol = None if protocol is None else str(protocol)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ConvertError(root, "root directory not found")

    classes, mapping = spec.label_space(protocol, options)
    samples = spec.samples(root, split, options)
    ids = {}
    for s in samples:
        if ids.setdefault(s["id"], s["image"]) != s["image"]:
            raise ConvertError(s["image"], f"gives the same sample id {s['id']!r} as {ids[s['id']]}")
    out = prepare_output(out, overwrite)  # only now: a wrong root never empties an existing output
    info = DatasetInfo(
        name=name or (root.name if kind == "folder" else f"{kind}-{split}"),
        domain=options.pop("domain", spec.domain), classes=classes,
        has_labels=samples[0]["label"] is not None, has_depth=samples[0]["depth"] is not None,
        source={"converter": kind, "root": str(root), "split": split,
                "mapping": {_key(raw): i for raw, i in mapping.items()}, "options": options, "on_error": on_error},
    )
    log.info("%s: converting %d samples of %s (split %s) into %s", kind, len(samples), root, split, out)
    return run(kind, samples, out, info, mapping, options, on_error, rows_per_shard)


def _key(raw) -> str:
    # JSON keys: label values and category names as they are, colours as "r,g,b".
    return ",".join(map(str, raw)) if isinstance(raw, tuple) else str(raw)
