"""`rayda bench methods`: variant selection, the gap-closed arithmetic, and a real tiny-scale run."""
import json

import pytest

from rayda.bench.methods import FAMILIES, Variant, select, summarize
from rayda.config import ConfigError


def test_selection_always_brings_the_baselines_and_a_method_brings_all_its_variants():
    names = [v.name for v in select("csa")]
    assert names == ["source_only", "oracle", "csa", "csa/trainable-D", "csa/random-colour-augment"]
    assert [v.name for v in select("lsd/alpha=0,unit")] == ["source_only", "oracle", "lsd/alpha=0", "unit", "unit/spfeat"]
    assert {v.method for v in select("all")} - {"source_only"} == set(FAMILIES)
    with pytest.raises(ConfigError, match="unknown \\['dann'\\]"):
        select("lsd,dann")


def test_gap_closed_is_measured_between_source_only_and_oracle():
    rows = [{"variant": n, "target_miou": m} for n, m in (("source_only", 0.2), ("oracle", 0.6), ("lsd", 0.3))]
    report = summarize(rows, {}, "demo", {"steps": 5, "size": (8, 8)}, seed=0, wall=1.0)
    assert [r["gap_closed"] for r in report["runs"]] == pytest.approx([0.0, 1.0, 0.25])
    assert report["size"] == [8, 8] and report["steps"] == 5


def test_every_shipped_variant_names_a_method_with_a_simworld_config():
    from rayda.bench.methods import CONFIGS, VARIANTS
    from rayda.methods import method_class

    for v in VARIANTS:
        assert isinstance(v, Variant) and (CONFIGS / f"{v.method}.yaml").is_file(), v.name
        method_class(v.method).Params.model_validate(v.params)  # the variant's keys exist


@pytest.mark.integration
def test_tiny_bench_of_one_method_family_writes_table_json_and_plots(tmp_path, ray_clean):
    from rayda.bench.methods import bench_methods

    report = bench_methods(tmp_path / "bench", methods="lsd/feature-D", scale="smoke", parallel=2)
    out = tmp_path / "bench"
    saved = json.loads((out / "bench.json").read_text())
    assert saved == json.loads(json.dumps(report)) and not saved["failed"]
    assert [r["variant"] for r in saved["runs"]] == ["source_only", "oracle", "lsd/feature-D"]
    for r in saved["runs"]:
        assert 0 <= r["target_miou"] <= 1 and r["steps"] == 2 and r["wall_time_s"] > 0
    assert {r["variant"]: r["gap_closed"] for r in saved["runs"]}["oracle"] in (1.0, None)
    assert "domain_gap" not in saved["runs"][0]  # measured when a variant translates (test_measures)
    table = (out / "bench.md").read_text()
    assert "| lsd/feature-D |" in table and "gap closed" in table and "FID to real" in table
    assert (out / "bench.png").stat().st_size > 0 and (out / "bench.html").is_file()
    assert len(list((out / "predictions").glob("*.png"))) == len(saved["runs"])
