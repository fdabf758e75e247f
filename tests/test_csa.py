"""CSA: colour operators against the card's formulas, gradients at the singular points, the two stages,
exact state round trip, the colour-augmented baseline, and a 2-worker DDP run through both stages."""
import copy

import pyarrow.parquet as pq
import pytest
import torch

from rayda.color import adjust, brightness, contrast, random_alphas, saturation, sigma_for
from rayda.config import ConfigError, validate
from rayda.methods import StepContext

CPU = torch.device("cpu")


def _img(*pixels, dtype=torch.float64):
    """One image [1, 3, 1, len(pixels)] from RGB triples."""
    return torch.tensor(pixels, dtype=dtype).T.reshape(1, 3, 1, len(pixels))


def _pixels(x):
    return x[0].reshape(3, -1).T.tolist()


def _close(got, expected):
    assert torch.allclose(got, _img(*expected), atol=1e-9), (_pixels(got), expected)


# -- operators: hand-computed values, every branch ---------------------------------------------------

def test_brightness_follows_both_branches_and_clips_alpha():
    x = _img((0.4, 0.0, 1.0))
    _close(brightness(x, 0.5), [(0.4 * 0.5 + 0.5, 0.5, 1.0)])   # a >= 0: x(1-a) + a
    _close(brightness(x, -0.5), [(0.2, 0.0, 0.5)])              # a < 0:  x + x*a
    _close(brightness(x, 3.0), [(1.0, 1.0, 1.0)])               # a clipped to 1
    _close(brightness(x, -3.0), [(0.0, 0.0, 0.0)])


def test_contrast_scales_around_the_image_mean_in_both_branches():
    x = _img((0.2, 0.4, 0.2), (0.6, 0.4, 0.6))                   # mean of all six values: 0.4
    _close(contrast(x, 0.5), [(0.0, 0.4, 0.0), (0.8, 0.4, 0.8)])  # a >= 0: m + (x-m)/(1-a)
    _close(contrast(x, -0.5), [(0.3, 0.4, 0.3), (0.5, 0.4, 0.5)])  # a < 0: m + (x-m)(1+a)
    _close(contrast(x, 0.8), [(0.0, 0.4, 0.0), (1.0, 0.4, 1.0)])  # 0.4 -+ 5 * 0.2, clipped
    _close(contrast(x, -1.0), [(0.4, 0.4, 0.4)] * 2)              # a = -1: flat at the mean


def test_saturation_follows_every_branch_of_s_and_S():
    # P1: L = 0.4 < 0.5, delta 0.4, S = 0.4 / 0.8 = 0.5.  P2: L = 0.7 >= 0.5, S = 0.4 / 0.6 = 2/3.
    # P3: fully saturated, L = 0.5, S = 1 / 1 = 1.
    x = _img((0.2, 0.4, 0.6), (0.5, 0.7, 0.9), (0.0, 0.5, 1.0))
    # a = 0.6: a + S >= 1 for all, s = 1/S - 1: P1 s = 1 (x + (x-L)), P2 s = 0.5, P3 s = 0 (the s <= 0 branch).
    _close(saturation(x, 0.6), [(0.0, 0.4, 0.8), (0.4, 0.7, 1.0), (0.0, 0.5, 1.0)])
    # a = 0.2: a + S < 1 for P1 and P2, s = 1/(1-0.2) - 1 = 0.25 > 0; P3 again s = 1/1 - 1 = 0.
    _close(saturation(x, 0.2), [(0.15, 0.4, 0.65), (0.45, 0.7, 0.95), (0.0, 0.5, 1.0)])
    # a = -0.5: s = 1/1.5 - 1 = -1/3 <= 0, L + (x-L)(1+s) = L + (x-L) * 2/3.
    _close(saturation(x, -0.5), [(0.4 - 0.2 * 2 / 3, 0.4, 0.4 + 0.2 * 2 / 3),
                                 (0.7 - 0.2 * 2 / 3, 0.7, 0.7 + 0.2 * 2 / 3),
                                 (0.5 - 0.5 * 2 / 3, 0.5, 0.5 + 0.5 * 2 / 3)])


def test_adjust_applies_contrast_then_saturation_then_brightness():
    x = _img((0.2, 0.4, 0.6))
    # contrast 0.8 (m = 0.4): (0, 0.4, 1) clipped; saturation -0.5 (L = 0.5, S = 1, s = -1/3):
    # 0.5 + (x - 0.5) * 2/3; brightness -0.5: x * 0.5. The reverse order gives (0, 0.2, 0.533).
    sat = [0.5 - 0.5 * 2 / 3, 0.5 - 0.1 * 2 / 3, 0.5 + 0.5 * 2 / 3]
    _close(adjust(x, torch.tensor([-0.5]), torch.tensor([-0.5]), torch.tensor([0.8])), [tuple(v * 0.5 for v in sat)])


def test_alpha_is_one_per_image():
    x = torch.rand(2, 3, 4, 4)
    y = brightness(x, torch.tensor([0.0, 1.0]))
    assert torch.equal(y[0], x[0]) and torch.equal(y[1], torch.ones_like(x[1]))
    with pytest.raises(ValueError, match="one alpha per image"):
        brightness(x, torch.zeros(3))


@pytest.mark.parametrize("op", [brightness, saturation, contrast])
def test_operators_pass_gradcheck_in_x_and_alpha(op):
    g = torch.Generator().manual_seed(0)
    x = (0.3 + 0.4 * torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)).requires_grad_()
    for a in ([0.3, -0.4], [-0.2, 0.15]):
        a = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(op, (x, a))


def test_adjust_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = (0.3 + 0.4 * torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)).requires_grad_()
    a = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in ([0.2, -0.3], [0.1, -0.25], [0.3, -0.2])]
    assert torch.autograd.gradcheck(adjust, (x, *a))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_nan_or_inf_at_black_white_grey_and_extreme_alphas(dtype):
    pixels = [(0, 0, 0), (1, 1, 1), (0.5, 0.5, 0.5), (0.3, 0.3, 0.3), (0.8, 0.8, 0.8), (0, 0, 1), (1, 1, 0),
              (0.5, 0.5, 0.5 + 1e-7), (1e-8, 0, 0)]
    x0 = _img(*pixels, dtype=dtype)
    flat = [torch.zeros(1, 3, 2, 2, dtype=dtype), torch.ones(1, 3, 2, 2, dtype=dtype)]  # contrast of a flat image
    for a in (-3.0, -1.0, -1 + 1e-7, 0.0, 1 - 1e-7, 1.0, 3.0):
        for x0_ in (x0, *flat):
            for op in (brightness, saturation, contrast):
                x = x0_.clone().requires_grad_()
                alpha = torch.tensor([a], dtype=dtype, requires_grad=True)
                y = op(x, alpha)
                (y * torch.linspace(0.5, 1.5, y.numel(), dtype=dtype).view_as(y)).sum().backward()
                assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1, (op.__name__, a)
                assert torch.isfinite(x.grad).all() and torch.isfinite(alpha.grad).all(), (op.__name__, a)
    # Beyond +-1 an alpha acts as +-1.
    for op in (brightness, saturation, contrast):
        assert torch.equal(op(x0, 3.0), op(x0, 1.0)) and torch.equal(op(x0, -3.0), op(x0, -1.0))


def test_sigma_puts_probability_p_inside_minus_one_one():
    assert sigma_for(0.99) == pytest.approx(0.388, abs=1e-3)
    for p in (0.9, 0.99):
        a = random_alphas(20000, p, torch.Generator().manual_seed(0))
        assert a.shape == (20000, 3) and a.abs().max() <= 1
        assert (a.abs() < 1).float().mean().item() == pytest.approx(p, abs=0.005)  # clipped ones sat outside
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            sigma_for(bad)


# -- the method ----------------------------------------------------------------------------------------

def _snapshot(m):
    return {k: [p.detach().clone() for p in net.parameters()] for k, net in m.nets.items()}


def _changed(before, m):
    return {k for k, net in m.nets.items() if any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters()))}


def test_stage_one_trains_d_on_target_only_then_g_against_frozen_d(tiny_method, tiny_batch, small_torch):
    m = tiny_method("csa", steps=8)  # stage1 0.5: steps 0-3 train D, 4-7 train G
    before = _snapshot(m)
    batch = tiny_batch()
    batch["image"] = torch.full_like(batch["image"], float("nan"))  # D never looks at source images
    losses = m.train_step(batch, StepContext(3, 8, CPU, False))
    assert set(losses) == {"d"} and torch.isfinite(losses["d"])
    assert _changed(before, m) == {"d"}
    before = _snapshot(m)
    losses = m.train_step(tiny_batch(1), StepContext(4, 8, CPU, False))
    assert set(losses) == {"g", "alpha_b", "alpha_s", "alpha_c"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert _changed(before, m) == {"g_b", "g_s", "g_c"}


def test_unfrozen_d_ablation_keeps_training_d_in_stage_two(tiny_method, tiny_batch, small_torch):
    m = tiny_method("csa", steps=8, stage2_freeze_d=False)
    before = _snapshot(m)
    losses = m.train_step(tiny_batch(), StepContext(4, 8, CPU, False))
    assert set(losses) == {"g", "alpha_b", "alpha_s", "alpha_c", "d"}
    assert _changed(before, m) == {"d", "g_b", "g_s", "g_c"}


def test_bad_params_are_named(tiny_method):
    for key, value in (("p", 1.0), ("stage1", 1.0), ("lr", 0), ("width", 0)):
        with pytest.raises(ConfigError, match=f"method.{key}"):
            tiny_method("csa", **{key: value})


def test_state_round_trip_gives_identical_steps_across_the_stage_boundary(tiny_method, tiny_batch, small_torch):
    m = tiny_method("csa", steps=6)  # stage 1: steps 0-2
    for step in range(2):
        m.train_step(tiny_batch(step), StepContext(step, 6, CPU, False))
    state = copy.deepcopy(m.state_dict())

    def next_two(method):
        torch.manual_seed(7)  # the random alphas of stage 1 come from the global RNG, as the loop seeds it
        return [{k: float(v) for k, v in method.train_step(tiny_batch(9 + s), StepContext(s, 6, CPU, False)).items()}
                for s in (2, 3)]

    expected = next_two(m)
    other = tiny_method("csa", steps=6)
    other.load_state_dict(state)
    assert next_two(other) == expected


def test_translator_changes_colours_only_and_keeps_shape_and_range(tiny_method, small_torch):
    m = tiny_method("csa")
    x = torch.rand(2, 3, 48, 80) * 2 - 1
    x[:, :, 10:20, 10:30] = torch.tensor([0.2, -0.5, 0.7]).view(1, 3, 1, 1)  # one flat colour patch
    with torch.inference_mode():
        y = m.translator().eval()(x)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1 and not torch.allclose(y, x)
    patch = y[:, :, 10:20, 10:30]  # same input colour -> same output colour: labels stay valid
    assert torch.equal(patch, patch[:, :, :1, :1].expand_as(patch))


def test_visuals_show_both_rows_and_leave_the_global_rng_alone(tiny_method, tiny_batch, small_torch):
    m = tiny_method("csa")
    rng = torch.get_rng_state()
    titles, rows = m.visuals(tiny_batch())
    assert torch.equal(rng, torch.get_rng_state())
    assert len(titles) == 2 and len(rows) == 4
    assert all(img.shape == (32, 64, 3) and img.dtype.name == "uint8" for row in rows for img in row)


def test_color_augment_p_adjusts_the_source_images_the_segmenter_sees(tiny_method, tiny_batch, small_torch):
    seen = []
    for p in (None, 0.99):
        m = tiny_method("source_only", color_augment_p=p)
        m.nets["segmenter"].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
        batch = tiny_batch()
        losses = m.train_step(batch, StepContext(0, 8, CPU, False))
        assert torch.isfinite(losses["seg"])
    plain, augmented = seen
    x = tiny_batch()["image"]
    assert torch.equal(plain, x)
    assert augmented.shape == x.shape and augmented.min() >= -1 and augmented.max() <= 1
    assert all(not torch.allclose(augmented[i], x[i]) for i in range(len(x)))  # each image its own variant
    with pytest.raises(ConfigError, match="method.color_augment_p"):
        tiny_method("source_only", color_augment_p=1.0)


# -- Ray Train: two workers through both stages, then `rayda translate` -------------------------------------

def test_two_worker_ddp_run_switches_stages_and_translates(simworld, tmp_path, ray_clean):
    # Resume is the loop's (test_train); CSA's state round trip across the stage boundary is tested above.
    from rayda.cli import main
    from rayda.data import read_info
    from rayda.data.pipeline import decode_image_bytes
    from rayda.train.checkpoint import STATE_FILE
    from rayda.train.run import train

    raw = {"name": "csa", "storage_path": str(tmp_path / "runs"),
           "data": {"source": str(simworld["synthetic"].path), "target": str(simworld["real_val"].path),
                    "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0},
           "model": {"size": "cpu"}, "method": {"name": "csa"},
           "train": {"steps": 4, "report_every": 2, "checkpoint_every": 2},
           "scaling": {"num_workers": 2, "cpus_per_worker": 1}}
    first = train(validate(raw))  # stage 1: steps 0-1, stage 2: steps 2-3
    assert [h["step"] for h in first.history] == [2, 4] and all(h["workers"] == 2 for h in first.history)
    assert {k for k in first.history[0] if k.startswith("loss/")} == {"loss/d"}
    assert {"loss/g", "loss/alpha_b", "loss/alpha_s", "loss/alpha_c", "lr/d", "lr/g"} <= set(first.history[1])
    assert "loss/d" not in first.history[1] and (first.run_dir / "visuals.png").stat().st_size > 0
    nets = lambda step: torch.load(first.run_dir / f"checkpoint_{step:08d}" / STATE_FILE,  # noqa: E731
                                   weights_only=True)["method_state"]["nets"]
    at2, at4 = nets(2), nets(4)
    assert all(torch.equal(v, at4["d"][k]) for k, v in at2["d"].items())  # D frozen in stage 2
    assert any(not torch.equal(v, at4["g_b"][k]) for k, v in at2["g_b"].items())

    out = tmp_path / "adapted"
    assert main(["translate", "--checkpoint", first.checkpoint.path, "--data", str(simworld["synthetic"].path),
                 "--out", str(out)]) == 0
    info = read_info(out)
    assert info.num_rows == simworld["synthetic"].num_rows and info.source["method"] == "csa"
    key = lambda t: {r["id"]: r for r in t.to_pylist()}  # noqa: E731
    before, after = key(pq.read_table(simworld["synthetic"].shard_paths())), key(pq.read_table(info.shard_paths()))
    assert before.keys() == after.keys()
    for i, row in after.items():
        assert row["label"] == before[i]["label"] and row["image"] != before[i]["image"]
    assert info.class_pixels == simworld["synthetic"].class_pixels
    # A global colour map per image: every input colour goes to exactly one output colour.
    i = next(iter(after))
    src, dst = (decode_image_bytes(r[i]["image"]).reshape(3, -1).T for r in (before, after))
    pairs = torch.unique(torch.cat([src, dst], 1), dim=0)
    assert len(pairs) == len(torch.unique(src, dim=0))
