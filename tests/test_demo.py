"""`rayda demo --quick`: the whole path, generate -> train source-only and oracle -> evaluate -> report."""
import json

import pytest

from rayda.demo import run_demo


def test_quick_demo_writes_report_json_markdown_html_and_grids(ray_clean, tmp_path):
    out = tmp_path / "demo"
    report = run_demo(out, quick=True)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["runs"].keys() == {"source_only", "oracle"}
    for name, run in on_disk["runs"].items():
        assert 0.0 <= run["target_miou"] <= 1.0 and "road" in run["per_class"]
        # Training learns on this CPU-sized problem: the segmentation loss falls over the 20 steps.
        losses = [h["loss/seg"] for h in json.loads((out / "runs" / name / "history.json").read_text())]
        assert losses[-1] < 0.7 * losses[0], (name, losses)
    assert on_disk["config"]["scale"] == "quick" and report["gap_points"] == on_disk["gap_points"]
    md = (out / "report.md").read_text()
    assert "| source_only |" in md and "| oracle |" in md and "source_only_predictions.png" in md
    assert "data:image/png;base64," in (out / "report.html").read_text()
    for name in ("source_only_predictions.png", "oracle_loss_curves.png"):
        assert (out / name).stat().st_size > 1000
    with pytest.raises(FileExistsError):
        run_demo(out, quick=True)
