"""rayda.gan: losses against hand-computed values, the history pool, network shapes, UNIT's sharing."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rayda.gan import (GANLoss, ImagePool, MultiScaleDiscriminator, PatchDiscriminator, ResnetGenerator,
                       UNITGenerators, init_weights, latent_kl, set_requires_grad, sized)


pytestmark = pytest.mark.usefixtures("small_torch")


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def images(n: int, h: int = 32, w: int = 48) -> torch.Tensor:
    return torch.rand(n, 3, h, w) * 2 - 1


# -- losses -----------------------------------------------------------------------------------------
def test_lsgan_losses_match_hand_computed_values():
    gan = GANLoss("lsgan")
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([0.5, -1.0])
    # real vs 1: (0 + 1) / 2 = 0.5; fake vs 0: (0.25 + 1) / 2 = 0.625
    assert gan.discriminator(real, fake).item() == pytest.approx(0.5 * (0.5 + 0.625))
    # fake vs 1: (0.25 + 4) / 2
    assert gan.generator(fake).item() == pytest.approx(2.125)


def test_bce_losses_match_hand_computed_values():
    gan = GANLoss("bce")
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    # -log sigmoid(x) = log(1 + e^-x); -log(1 - sigmoid(x)) = log(1 + e^x)
    d_real = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    d_fake = (math.log(2) + math.log(1 + math.exp(-1))) / 2
    assert gan.discriminator(real, fake).item() == pytest.approx(0.5 * (d_real + d_fake))
    assert gan.generator(fake).item() == pytest.approx((math.log(2) + math.log(1 + math.e)) / 2)


def test_multiscale_logits_sum_the_per_scale_losses():
    gan = GANLoss("lsgan")
    fine, coarse = torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0]])
    assert gan.generator([fine, coarse]).item() == pytest.approx(0.5 + 4.0)
    assert gan.discriminator([fine, coarse], [fine, coarse]).item() == pytest.approx(
        0.5 * ((0.5 + 4.0) + (0.5 + 9.0)))


def test_losses_are_float32_and_differentiable_from_bf16_logits():
    logits = torch.tensor([0.5, -0.5], dtype=torch.bfloat16, requires_grad=True)
    loss = GANLoss("bce").generator(logits)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad is not None


def test_unknown_loss_mode_is_rejected():
    with pytest.raises(ValueError, match="wgan"):
        GANLoss("wgan")


def test_latent_kl_is_mean_of_squared_means():
    mu = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    assert latent_kl(mu).item() == pytest.approx((1 + 4 + 0 + 9) / 4)


# -- image pool -------------------------------------------------------------------------------------
def numbered(start: int, n: int) -> torch.Tensor:
    """n 1x1x1 'images' whose single value is their id."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1)


def test_pool_returns_its_input_while_filling():
    pool = ImagePool(4)
    for start in (0, 2):
        x = numbered(start, 2)
        assert torch.equal(pool.query(x), x)
    assert len(pool) == 4


def test_full_pool_swaps_about_half_the_images_for_older_ones():
    pool = ImagePool(4)
    pool.query(numbered(0, 4))
    swapped = 0
    n = 2000
    for i in range(4, 4 + n):
        out = pool.query(numbered(i, 1)).item()
        if out != i:
            swapped += 1
            assert out < i  # an older fake, not a new or made-up one
            assert i in {im.item() for im in pool.images}  # and the new fake took its place
    assert abs(swapped / n - 0.5) < 0.05


def test_size_zero_pool_passes_images_through():
    x = images(3)
    assert torch.equal(ImagePool(0).query(x), x)


def test_pool_is_deterministic_under_manual_seed():
    def run() -> list[torch.Tensor]:
        torch.manual_seed(123)
        pool = ImagePool(3)
        return [pool.query(numbered(i * 2, 2)) for i in range(20)]

    assert all(torch.equal(a, b) for a, b in zip(run(), run()))


def test_pool_state_round_trip_gives_identical_future_outputs():
    pool = ImagePool(5)
    for i in range(6):
        pool.query(images(2))
    future = [images(2) for _ in range(8)]
    state, rng = pool.state_dict(), torch.get_rng_state()
    assert all(im.device.type == "cpu" for im in state["images"])
    expected = [pool.query(x) for x in future]

    restored = ImagePool(5)
    restored.load_state_dict(state)
    torch.set_rng_state(rng)
    assert all(torch.equal(restored.query(x), e) for x, e in zip(future, expected))
    with pytest.raises(ValueError, match="size"):
        ImagePool(4).load_state_dict(state)


# -- networks ---------------------------------------------------------------------------------------
def test_image_discriminator_halves_the_size_at_each_of_its_five_stride2_convs():
    d = sized(PatchDiscriminator, "cpu")
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in d.modules()) == 5
    assert d(images(2, 64, 96)).shape == (2, 1, 2, 3)


def test_feature_discriminator_with_stride1_keeps_the_encoder_map_size():
    d = PatchDiscriminator(in_channels=160, ndf=16, stride=1)
    assert d(torch.randn(2, 160, 8, 12)).shape == (2, 1, 8, 12)


def test_discriminator_without_norm_has_no_instance_norm():
    d = PatchDiscriminator(ndf=8, n_layers=3, norm="none")
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in d.modules())
    assert d(images(1, 32, 32)).shape == (1, 1, 4, 4)


def test_multiscale_discriminator_returns_one_map_per_scale():
    outs = MultiScaleDiscriminator(n_scales=3, ndf=8, n_layers=3)(images(2, 64, 64))
    assert [o.shape[-1] for o in outs] == [8, 4, 2]


@pytest.mark.parametrize("h, w", [(32, 48), (20, 36)])
def test_resnet_generator_preserves_sizes_that_are_multiples_of_4(h, w):
    out = sized(ResnetGenerator, "cpu")(images(2, h, w))
    assert out.shape == (2, 3, h, w)
    assert out.abs().max() <= 1


def test_paper_sized_networks_match_cyclegan_parameter_counts():
    # CycleGAN's printed counts: resnet_9blocks G 11.378 M, 70x70 PatchGAN D 2.765 M.
    assert n_params(sized(ResnetGenerator, "full")) == 11_378_179
    assert n_params(sized(PatchDiscriminator, "full")) == 2_764_737


def test_cpu_presets_are_small():
    assert n_params(sized(ResnetGenerator, "cpu")) == 272_515
    assert n_params(sized(PatchDiscriminator, "cpu")) == 175_089
    assert n_params(sized(UNITGenerators, "cpu")) == 545_030
    with pytest.raises(ValueError, match="huge"):
        sized(ResnetGenerator, "huge")


def test_init_weights_draws_conv_weights_from_n0_002_and_zeroes_biases():
    g = init_weights(ResnetGenerator(ngf=16, n_blocks=2))
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert all((m.bias == 0).all() for m in g.modules() if isinstance(m, torch.nn.Conv2d))


def test_set_requires_grad_toggles_every_net_given():
    nets = [PatchDiscriminator(ndf=8, n_layers=2), ResnetGenerator(ngf=8, n_blocks=1)]
    set_requires_grad(nets, False)
    assert not any(p.requires_grad for net in nets for p in net.parameters())
    set_requires_grad(nets[0], True)
    assert all(p.requires_grad for p in nets[0].parameters())


# -- UNIT -------------------------------------------------------------------------------------------
def test_unit_shares_the_encoders_last_and_decoders_first_blocks():
    g = sized(UNITGenerators, "cpu")
    assert g.E_s.shared is g.E_t.shared and g.G_s.shared is g.G_t.shared
    assert g.E_s.private is not g.E_t.private and g.G_s.private is not g.G_t.private
    shared = {id(p) for p in g.E_s.shared.parameters()}
    assert shared and shared == {id(p) for p in g.E_t.shared.parameters()}
    parts = sum(n_params(m) for m in (g.E_s, g.E_t, g.G_s, g.G_t))
    assert n_params(g) == parts - n_params(g.E_s.shared) - n_params(g.G_s.shared)


def test_unit_step_on_source_path_moves_shared_weights_and_no_target_private_ones():
    g = sized(UNITGenerators, "cpu")
    before = {k: v.clone() for k, v in g.state_dict().items()}
    x = images(2)
    loss = F.l1_loss(g.translate(x, "s", "s"), x)
    loss.backward()
    with torch.no_grad():  # a plain SGD step (torch.optim's first use costs seconds of imports)
        for p in g.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad

    def moved(prefix: str) -> bool:
        return any(not torch.equal(v, before[k]) for k, v in g.state_dict().items() if k.startswith(prefix))

    assert moved("E_s.shared.") and moved("E_t.shared.") and moved("G_t.shared.")  # one tensor, seen by both
    assert moved("E_s.private.") and moved("G_s.private.")
    assert not any(moved(f"{net}.") for net in ("E_t.front", "E_t.private", "G_t.private", "G_t.back"))


def test_unit_shapes_and_latent_noise():
    g = UNITGenerators(dim=8, n_down=2, n_res=1, n_shared=1)
    x = images(2)
    mu, outs = g(x, "t")
    assert mu.shape == (2, 32, 8, 12)
    assert set(outs) == {"s", "t"} and all(o.shape == x.shape for o in outs.values())
    assert 0.9 < (g.sample(mu) - mu).std().item() < 1.1  # unit-variance noise in training
    g.eval()
    assert torch.equal(g.sample(mu), mu)
    assert torch.equal(g.translate(x, "t", "s"), g.decode(g.encode(x, "t"), "s"))
    assert list(g(x, "s", dsts=("t",))[1]) == ["t"]
    with pytest.raises(ValueError, match="domain"):
        g.encode(x, "x")
