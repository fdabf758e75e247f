"""GIO-Ada: loss composition, G_img trained with the task net, update order, variants, depth masking,
exact state round trip, the missing-depth error, 2-worker DDP on Ray Train with evaluation."""
import copy
import json
import shutil

import pyarrow.parquet as pq
import pytest
import torch

from rayda.config import ConfigError, validate
from rayda.methods import StepContext
from rayda.methods.gio_ada import masked_l1

CPU = torch.device("cpu")


def batch_with_depth(tiny_batch, seed=0):
    """tiny_batch plus depth in metres [2, 1, 32, 64]; a quarter of the pixels 0 = unknown."""
    b = tiny_batch(seed)
    g = torch.Generator().manual_seed(seed + 100)
    depth = torch.rand(2, 1, 32, 64, generator=g) * 200
    depth[torch.rand(2, 1, 32, 64, generator=g) < 0.25] = 0
    return {**b, "depth": depth}


def step(m, batch, i=0):
    return m.train_step(batch, StepContext(i, 8, CPU, False))


def _snapshot(m):
    return {k: [p.detach().clone() for p in net.parameters()] for k, net in m.nets.items()}


def _changed(before, m):
    return {k for k, net in m.nets.items() if any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters()))}


def test_losses_compose_with_the_lambda_weights(tiny_method, tiny_batch, small_torch):
    for weights in ({}, {"lambda_depth": 2.0, "lambda_image": 0.5, "lambda_output": 3.0}):
        m = tiny_method("gio_ada", **weights)
        losses = step(m, batch_with_depth(tiny_batch))
        assert set(losses) == {"seg", "depth", "gan_image", "gan_output", "d_image", "d_output", "total"}
        assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
        p = m.params
        expected = (losses["seg"] + p.lambda_depth * losses["depth"] + p.lambda_image * losses["gan_image"]
                    + p.lambda_output * losses["gan_output"])
        assert float(losses["total"]) == pytest.approx(float(expected), rel=1e-5)
    assert (p.lambda_depth, tiny_method("gio_ada").params.lambda_output) == (2.0, 0.001)


def test_g_img_is_trained_by_the_task_losses(tiny_method, tiny_batch, small_torch):
    # No image GAN term and no output level: whatever moves G_img comes from L_seg and L_depth through x̂_s.
    m = tiny_method("gio_ada", lambda_image=0.0, output_level=False)
    before = _snapshot(m)
    step(m, batch_with_depth(tiny_batch))
    assert _changed(before, m) == {"g_img", "task", "d_img"}
    assert set(m.optimizers) == {"task", "g_img", "discriminators"}


def test_one_adam_lr_for_every_net_unless_task_lr_is_set(tiny_method):
    m = tiny_method("gio_ada")
    assert m.learning_rates() == {"lr/task": 2e-4, "lr/g_img": 2e-4, "lr/discriminators": 2e-4}
    assert {o.param_groups[0]["betas"] for o in m.optimizers.values()} == {(0.5, 0.999)}
    assert tiny_method("gio_ada", task_lr=1e-3).learning_rates()["lr/task"] == 1e-3


def test_generators_step_against_the_discriminators_before_their_update(tiny_method, tiny_batch, small_torch):
    m = tiny_method("gio_ada")
    batch = batch_with_depth(tiny_batch)
    d_img, g_img = copy.deepcopy(m.nets["d_img"]), copy.deepcopy(m.nets["g_img"])
    x_hat = g_img(m.g_img_input(batch["image"], batch["label"].long(), m.normalised_depth(batch["depth"])))
    before = _snapshot(m)
    losses = step(m, batch)
    assert _changed(before, m) == set(m.nets)  # every net moves in one step
    # gan_image is scored by D_img as it was before the step: the generator update comes first.
    assert float(losses["gan_image"]) == pytest.approx(float(m.gan.generator(d_img(x_hat))), rel=1e-5)
    # ... and D_img then learned from that same x̂_s, against its old weights.
    assert float(losses["d_image"]) == pytest.approx(
        float(m.gan.discriminator(d_img(batch["target_image"]), d_img(x_hat))), rel=1e-5)
    assert all(q.requires_grad for k in ("d_img", "d_out") for q in m.nets[k].parameters())


@pytest.mark.parametrize("params, nets, terms", [
    ({}, {"task", "g_img", "d_img", "d_out"}, {"gan_image", "d_image", "gan_output", "d_output"}),
    ({"output_level": False}, {"task", "g_img", "d_img"}, {"gan_image", "d_image"}),
    ({"input_level": False}, {"task", "d_out"}, {"gan_output", "d_output"}),
    ({"input_level": False, "output_level": False}, {"task"}, set()),
    ({"output_d": "separate"}, {"task", "g_img", "d_img", "d_out_seg", "d_out_depth"},
     {"gan_image", "d_image", "gan_output", "d_output"}),
    ({"output_d": "seg"}, {"task", "g_img", "d_img", "d_out_seg"}, {"gan_image", "d_image", "gan_output", "d_output"}),
    ({"output_d": "depth"}, {"task", "g_img", "d_img", "d_out_depth"},
     {"gan_image", "d_image", "gan_output", "d_output"}),
])
def test_each_variant_builds_only_its_nets_and_steps(tiny_method, tiny_batch, small_torch, params, nets, terms):
    m = tiny_method("gio_ada", **params)
    assert set(m.nets) == nets
    has_d = bool(nets - {"task", "g_img"})
    assert set(m.optimizers) == {"task"} | ({"g_img"} & nets) | ({"discriminators"} if has_d else set())
    channels = {"d_img": 3, "d_out": 20, "d_out_seg": 19, "d_out_depth": 1}  # 19 classes (+ depth)
    for k in nets - {"task", "g_img"}:
        assert m.nets[k].model[0].in_channels == channels[k]
    before = _snapshot(m)
    losses = step(m, batch_with_depth(tiny_batch))
    assert set(losses) == {"seg", "depth", "total"} | terms and all(torch.isfinite(v) for v in losses.values())
    assert _changed(before, m) == nets
    assert set(m.state_dict()["nets"]) == nets
    titles, rows = m.visuals(batch_with_depth(tiny_batch))
    assert len(rows) == 2 and all(len(r) == len(titles) and r[0].shape == (32, 64, 3) for r in rows)
    assert m.translator() is None


def test_segmenter_is_the_plain_segmenter_without_the_depth_head(tiny_method):
    from rayda.models import build_segmenter

    m = tiny_method("gio_ada")
    plain = build_segmenter("deeplabv3plus_mobilenetv2", 19, size="cpu")
    plain.load_state_dict(m.segmenter.state_dict())  # strict: exactly the keys evaluation rebuilds
    logits, depth = m.nets["task"](torch.zeros(1, 3, 30, 50))  # any size, padded inside and cropped back
    assert logits.shape == (1, 19, 30, 50) and depth.shape == (1, 1, 30, 50)
    assert 0 <= float(depth.min()) and float(depth.max()) <= 1


def test_unknown_depth_pixels_do_not_count(tiny_method, tiny_batch, small_torch):
    pred = torch.rand(1, 1, 4, 4, requires_grad=True)
    target = torch.rand(1, 1, 4, 4)
    known = torch.ones(1, 1, 4, 4)
    known[..., :2] = 0
    loss = masked_l1(pred, target, known)
    loss.backward()
    assert float(loss) == pytest.approx(float((pred - target)[..., 2:].abs().mean()))
    assert torch.all(pred.grad[..., :2] == 0) and torch.all(pred.grad[..., 2:] != 0)

    # Through the method: the depth loss of a batch is the L1 over its known pixels only.
    m = tiny_method("gio_ada", input_level=False, output_level=False)
    batch = batch_with_depth(tiny_batch)
    torch.manual_seed(3)
    _, pred = m.nets["task"](batch["image"])
    target, known = m.normalised_depth(batch["depth"]), batch["depth"] > 0
    torch.manual_seed(3)
    losses = step(m, batch)
    assert float(losses["depth"]) == pytest.approx(float((pred - target).abs()[known].mean()), rel=1e-5)
    no_depth = step(m, {**batch, "depth": torch.zeros_like(batch["depth"])}, 1)
    assert float(no_depth["depth"]) == 0 and torch.isfinite(no_depth["total"])


def test_bad_values_name_their_key(tiny_method):
    with pytest.raises(ConfigError, match=r"method\.output_d"):
        tiny_method("gio_ada", output_d="both")
    with pytest.raises(ConfigError, match=r"method\.max_depth"):
        tiny_method("gio_ada", max_depth=0)
    from rayda.classes import CITYSCAPES_19
    from rayda.methods.gio_ada import GIOAda

    def build(**params):
        return GIOAda(validate({"name": "t", "data": {"source": "s", "crop": [30, 64]}, "model": {"size": "cpu"},
                                "method": {"name": "gio_ada", **params}}), CITYSCAPES_19)
    with pytest.raises(ConfigError, match=r"data\.crop.*multiples of 4"):
        build()
    assert "g_img" not in build(input_level=False).nets  # without G_img any crop will do


def test_state_round_trip_gives_an_identical_next_step(tiny_method, tiny_batch, small_torch):
    m = tiny_method("gio_ada")
    for i in range(2):
        step(m, batch_with_depth(tiny_batch, i), i)
    state = copy.deepcopy(m.state_dict())
    torch.manual_seed(7)
    expected = step(m, batch_with_depth(tiny_batch, 9), 2)
    other = tiny_method("gio_ada")
    other.load_state_dict(state)
    torch.manual_seed(7)
    got = step(other, batch_with_depth(tiny_batch, 9), 2)
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in expected.items()}
    with pytest.raises(ValueError, match="nets"):  # another variant's checkpoint does not fit
        tiny_method("gio_ada", output_d="separate").load_state_dict(state)


def test_a_source_without_depth_is_a_config_error_naming_it(simworld, tmp_path):
    from rayda.train.run import build_trainer

    no_depth = tmp_path / "synthetic_no_depth"
    shutil.copytree(simworld["synthetic"].path, no_depth)
    info = json.loads((no_depth / "dataset.json").read_text())
    (no_depth / "dataset.json").write_text(json.dumps({**info, "has_depth": False}))
    cfg = validate({"name": "g", "storage_path": str(tmp_path / "runs"),
                    "data": {"source": str(no_depth), "target": str(simworld["real_val"].path), "crop": [32, 64]},
                    "model": {"size": "cpu"}, "method": {"name": "gio_ada"}})
    with pytest.raises(ConfigError, match=rf"'gio_ada' needs depth.*{no_depth}.*has none"):
        build_trainer(cfg)


def test_a_row_with_null_depth_is_a_dataset_error_naming_the_row(simworld):
    from rayda.data import DatasetError
    from rayda.data.pipeline import decode_batch

    info = simworld["synthetic"]
    row = pq.read_table(info.shard_paths()[0]).slice(0, 1).to_pylist()[0]
    batch = {"id": [row["id"]], "path": [info.shard_paths()[0]], "image": [row["image"]], "label": [row["label"]],
             "depth": [None]}
    with pytest.raises(DatasetError, match=rf"id {row['id']}: depth is missing"):
        decode_batch(batch, {"name": info.name, "num_classes": info.classes.num_classes}, None, False, True)


def test_two_worker_ddp_run_evaluates(simworld, tmp_path, ray_clean):
    # Resume is the loop's (test_train, test_csa, test_cycleplus); GIO-Ada's state round trip is tested above.
    from rayda.train.run import train

    raw = {"name": "gio", "storage_path": str(tmp_path / "runs"),
           "data": {"source": str(simworld["synthetic"].path), "target": str(simworld["real_val"].path),
                    "val": str(simworld["real_val"].path), "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0},
           "model": {"arch": "deeplabv3plus_mobilenetv2", "size": "cpu"},
           "method": {"name": "gio_ada"},
           "train": {"steps": 4, "report_every": 2, "checkpoint_every": 2},
           "scaling": {"num_workers": 2, "cpus_per_worker": 1}, "eval": {"num_grid_images": 1}}
    result = train(validate(raw))
    assert [h["step"] for h in result.history] == [2, 4] and all(h["workers"] == 2 for h in result.history)
    assert {"loss/seg", "loss/depth", "loss/gan_image", "loss/d_output", "lr/task", "lr/g_img",
            "lr/discriminators"} <= set(result.history[-1])
    assert (result.run_dir / "visuals.png").stat().st_size > 0
    metrics = json.loads((result.run_dir / "eval" / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["method"] == "gio_ada"
