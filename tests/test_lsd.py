"""LSD: each loss's classes and weights, the D -> G -> F/C order, the ablation variants, exact state round trip,
2-worker DDP on Ray Train with evaluation."""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from rayda.config import ConfigError, validate
from rayda.methods import StepContext
from rayda.methods.lsd import SRC_FAKE, SRC_REAL, TGT_FAKE, TGT_REAL, aux_ce, domain_ce

CPU = torch.device("cpu")
CTX = StepContext(0, 8, CPU, False)
FULL_LOSSES = {"d_adv", "d_aux", "d_total", "g_adv", "rec", "g_total", "seg", "f_aux", "f_adv", "f_total"}


def _snapshot(m):
    return {k: [p.detach().clone() for p in net.parameters()] for k, net in m.nets.items()}


def _changed(before, m):
    return {k for k, net in m.nets.items() if any(not torch.equal(a, b) for a, b in zip(before[k], net.parameters()))}


def _same_segmenter(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.nets["segmenter"].parameters(), b.nets["segmenter"].parameters()))


def _record_updates(m):
    """Wraps the method's optimizer steps: [(optimizer, nets its loss sent gradients to, nets it changed)]."""
    record, step = [], m._step

    def spy(name, loss):
        for net in m.nets.values():
            net.zero_grad(set_to_none=True)
        before = _snapshot(m)
        step(name, loss)
        got_grad = {k for k, net in m.nets.items() if any(p.grad is not None for p in net.parameters())}
        record.append((name, got_grad, _changed(before, m)))
    m._step = spy
    return record


def test_updates_run_d_then_g_then_fc_and_each_changes_only_its_net(tiny_method, tiny_batch, small_torch):
    m = tiny_method("lsd")
    updates = _record_updates(m)
    losses = m.train_step(tiny_batch(), CTX)
    assert updates == [("d", {"d"}, {"d"}), ("g", {"g"}, {"g"}), ("segmenter", {"segmenter"}, {"segmenter"})]
    assert set(losses) == FULL_LOSSES and all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert float(losses["d_total"]) == pytest.approx(float(losses["d_adv"] + losses["d_aux"]), rel=1e-6)
    assert float(losses["g_total"]) == pytest.approx(float(losses["g_adv"] + losses["rec"]), rel=1e-6)
    assert float(losses["f_total"]) == pytest.approx(
        float(losses["seg"] + 0.1 * losses["f_aux"] + 0.1 * losses["f_adv"]), rel=1e-6)  # paper code's alpha, beta


def test_each_loss_asks_d_for_the_classes_of_table_1(tiny_method, tiny_batch, small_torch):
    m = tiny_method("lsd")
    b = tiny_batch()
    x_s, y_s, x_t = b["image"], b["label"], b["target_image"]
    d, g, seg = m.nets["d"], m.nets["g"], m.nets["segmenter"]

    # 1. D: real source -> src-real, fake source -> src-fake, real target -> tgt-real, fake target -> tgt-fake.
    fake_s, fake_t = tiny_batch(1)["image"], tiny_batch(1)["target_image"]
    with torch.no_grad():
        expected_adv = sum(domain_ce(d(x)[0], c) for x, c in
                           ((x_s, SRC_REAL), (fake_s, SRC_FAKE), (x_t, TGT_REAL), (fake_t, TGT_FAKE)))
        expected_aux = aux_ce(d(x_s)[1], y_s)  # on the real source
    got = m.update_d(x_s, y_s, x_t, fake_s, fake_t, CTX)
    assert float(got["d_adv"]) == pytest.approx(float(expected_adv), rel=1e-5)
    assert float(got["d_aux"]) == pytest.approx(float(expected_aux), rel=1e-5)

    # 2. G: each fake -> its own domain's real class, plus L1 to its input.
    with torch.no_grad():
        emb_s, emb_t = seg(x_s, with_embedding=True)[1], seg(x_t, with_embedding=True)[1]
    g.eval()  # no dropout, so the expected values below see the same reconstructions
    fake_s, fake_t = m.generate(emb_s, emb_t, x_s.shape[-2:], CTX)
    assert fake_s.shape == x_s.shape and fake_t.shape == x_t.shape
    with torch.no_grad():
        expected_adv = domain_ce(d(fake_s)[0], SRC_REAL) + domain_ce(d(fake_t)[0], TGT_REAL)
        expected_rec = (fake_s - x_s).abs().mean() + (fake_t - x_t).abs().mean()
    got = m.update_g(x_s, x_t, fake_s, fake_t, CTX)
    assert float(got["g_adv"]) == pytest.approx(float(expected_adv), rel=1e-5)
    assert float(got["rec"]) == pytest.approx(float(expected_rec), rel=1e-5)

    # 3. F: the cross-domain swap (fake source -> tgt-real, fake target -> src-real); aux on the fake source.
    logits_s, emb_s = seg(x_s, with_embedding=True)
    emb_t = seg(x_t, with_embedding=True)[1]
    with torch.no_grad():
        rec_s, rec_t = g(emb_s), g(emb_t)
        expected_adv = domain_ce(d(rec_s)[0], TGT_REAL) + domain_ce(d(rec_t)[0], SRC_REAL)
        expected_aux = aux_ce(d(rec_s)[1], y_s)
        expected_seg = F.cross_entropy(logits_s, y_s)
    got = m.update_fc(logits_s, y_s, emb_s, emb_t, CTX)
    assert float(got["f_adv"]) == pytest.approx(float(expected_adv), rel=1e-5)
    assert float(got["f_aux"]) == pytest.approx(float(expected_aux), rel=1e-5)
    assert float(got["seg"]) == pytest.approx(float(expected_seg), rel=1e-5)


def test_auxiliary_loss_uses_labels_at_d_grid_and_ignores_void():
    logits = torch.zeros(1, 19, 2, 4)
    logits[:, 5] = 10.0                                   # D says class 5 everywhere
    labels = torch.full((1, 16, 32), 5)
    labels[:, :8] = 255                                   # top half void: those cells do not count
    assert float(aux_ce(logits, labels)) == pytest.approx(float(F.cross_entropy(logits[:, :, 1], labels[:, 8, ::8])))
    assert float(aux_ce(logits, torch.full((1, 16, 32), 255))) == 0.0  # an all-void grid: 0, not NaN


def test_alpha_beta_zero_updates_f_and_c_exactly_as_source_only(tiny_method, tiny_batch, small_torch):
    lsd = tiny_method("lsd", alpha=0.0, beta=0.0)
    base = tiny_method("source_only", optimizer="adam", lr=1e-5, momentum=0.9, weight_decay=0.0, poly_power=0.0)
    assert _same_segmenter(lsd, base)
    torch.manual_seed(1)
    losses = lsd.train_step(tiny_batch(), CTX)
    torch.manual_seed(1)
    base.train_step(tiny_batch(), CTX)
    assert float(losses["f_total"]) == float(losses["seg"])
    assert _same_segmenter(lsd, base)
    # ...and the adversarial terms do reach F, through the fixed G and D, once beta > 0.
    adapted = tiny_method("lsd", alpha=0.0, beta=0.1)
    torch.manual_seed(1)
    adapted.train_step(tiny_batch(), CTX)
    assert not _same_segmenter(adapted, lsd)


def test_image_level_d_gives_one_decision_per_image_and_keeps_pixel_aux(tiny_method, tiny_batch, small_torch):
    m = tiny_method("lsd", d_type="image")
    domain, aux = m.nets["d"](tiny_batch()["image"])
    assert domain.shape == (2, 4, 1, 1) and aux.shape == (2, 19, 4, 8)
    updates = _record_updates(m)
    losses = m.train_step(tiny_batch(), CTX)
    assert updates == [("d", {"d"}, {"d"}), ("g", {"g"}, {"g"}), ("segmenter", {"segmenter"}, {"segmenter"})]
    assert set(losses) == FULL_LOSSES and all(torch.isfinite(v) for v in losses.values())


def test_feature_space_d_has_no_generator_and_swaps_embedding_domains(tiny_method, tiny_batch, small_torch):
    m = tiny_method("lsd", d_type="feature", beta=0.5)
    assert set(m.nets) == {"segmenter", "d"} and set(m.optimizers) == {"segmenter", "d"}
    updates = _record_updates(m)
    losses = m.train_step(tiny_batch(), CTX)
    assert updates == [("d", {"d"}, {"d"}), ("segmenter", {"segmenter"}, {"segmenter"})]
    assert set(losses) == {"d_adv", "d_total", "seg", "f_adv", "f_total"}
    assert float(losses["f_total"]) == pytest.approx(float(losses["seg"] + 0.5 * losses["f_adv"]), rel=1e-6)
    assert m.visuals(tiny_batch()) is None
    # D reads the embedding; F is asked for the other domain's class: source -> 1 (tgt), target -> 0 (src).
    seg, d = m.nets["segmenter"], m.nets["d"]
    b = tiny_batch(1)
    logits_s, emb_s = seg(b["image"], with_embedding=True)
    emb_t = seg(b["target_image"], with_embedding=True)[1]
    with torch.no_grad():
        expected = domain_ce(d(emb_s)[0], 1) + domain_ce(d(emb_t)[0], 0)
    assert float(m.update_fc_feature(logits_s, b["label"], emb_s, emb_t, CTX)["f_adv"]) == pytest.approx(
        float(expected), rel=1e-5)


def test_reconstruction_is_at_the_input_size_when_it_is_not_a_multiple_of_the_stride(tiny_method, small_torch):
    m = tiny_method("lsd")  # embedding stride 16
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(2, 3, 40, 72, generator=g) * 2 - 1,
             "label": torch.randint(0, 19, (2, 40, 72), generator=g),
             "target_image": torch.rand(2, 3, 40, 72, generator=g) * 2 - 1}
    assert torch.isfinite(m.train_step(batch, CTX)["rec"])
    titles, rows = m.visuals(batch)
    assert titles == ["input", "G(F(x))"] and len(rows) == 4 and rows[0][1].shape == (40, 72, 3)


def test_state_round_trip_gives_an_identical_next_step(tiny_method, tiny_batch, small_torch):
    m = tiny_method("lsd")
    for step in range(2):
        m.train_step(tiny_batch(step), StepContext(step, 8, CPU, False))
    state = copy.deepcopy(m.state_dict())
    assert set(state["nets"]) == {"segmenter", "g", "d"} and set(state["optimizers"]) == {"segmenter", "g", "d"}
    torch.manual_seed(7)
    expected = m.train_step(tiny_batch(9), StepContext(2, 8, CPU, False))
    other = tiny_method("lsd")
    other.load_state_dict(state)
    torch.manual_seed(7)
    got = other.train_step(tiny_batch(9), StepContext(2, 8, CPU, False))
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in expected.items()}


def test_bad_method_keys_are_named(tiny_method):
    with pytest.raises(ConfigError, match=r"unknown key 'method\.gamma' for method 'lsd'"):
        tiny_method("lsd", gamma=1.0)
    with pytest.raises(ConfigError, match=r"'method\.d_type'"):
        tiny_method("lsd", d_type="pixel")
    with pytest.raises(ConfigError, match=r"'method\.alpha'.*greater than or equal to 0"):
        tiny_method("lsd", alpha=-0.1)


def test_two_worker_ddp_run_evaluates(simworld, tmp_path, ray_clean):
    # Resume is the loop's (test_train, test_csa, test_cycleplus); LSD's state round trip is tested above.
    from rayda.train.run import train

    raw = {"name": "lsd", "storage_path": str(tmp_path / "runs"),
           "data": {"source": str(simworld["synthetic"].path), "target": str(simworld["real_val"].path),
                    "val": str(simworld["real_val"].path), "crop": [32, 64], "batch_size": 2, "shuffle_buffer": 0},
           "model": {"arch": "fcn8s_vgg16", "size": "cpu"},  # the paper's F and C, narrow
           "method": {"name": "lsd", "fc_lr": 1e-3},
           "train": {"steps": 4, "report_every": 2, "checkpoint_every": 2},
           "scaling": {"num_workers": 2, "cpus_per_worker": 1}, "eval": {"num_grid_images": 1}}
    result = train(validate(raw))
    assert [h["step"] for h in result.history] == [2, 4] and all(h["workers"] == 2 for h in result.history)
    assert {"loss/d_total", "loss/g_total", "loss/f_adv", "lr/segmenter", "lr/g", "lr/d"} <= set(result.history[-1])
    assert result.history[-1]["lr/segmenter"] == 1e-3 and result.history[-1]["lr/g"] == 2e-4
    assert (result.run_dir / "visuals.png").stat().st_size > 0
    metrics = json.loads((result.run_dir / "eval" / "metrics.json").read_text())
    assert metrics["step"] == 4 and 0.0 <= metrics["miou"] <= 1.0
