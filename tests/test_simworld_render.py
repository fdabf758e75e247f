import dataclasses

import numpy as np
import pytest

from rayda.simworld.render import (
    CAMERA_HEIGHT, FOCAL_PER_WIDTH, NO_GAP, SKY_DEPTH, GapConfig, render,
)

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = 0, 1, 2, 5, 7, 8, 9, 10, 11, 13
REQUIRED = {ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR}
SAME_LAYOUT = dataclasses.replace(GapConfig(), horizon_shift=0.0, car_density=1.0, person_density=1.0)


def _scenes(domain, n=20, h=64, w=128, seed=0, gap=GapConfig()):
    return [render(i, seed, domain, h, w, gap) for i in range(n)]


@pytest.mark.parametrize("domain", ["synthetic", "real"])
def test_deterministic_and_index_dependent(domain):
    a, b, c = render(3, 7, domain, 48, 96), render(3, 7, domain, 48, 96), render(4, 7, domain, 48, 96)
    for field in ("image", "label", "depth"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.label, c.label)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.image, render(3, 8, domain, 48, 96).image)


@pytest.mark.parametrize("domain", ["synthetic", "real"])
@pytest.mark.parametrize("size", [(32, 64), (33, 65), (90, 160)])
def test_types_shapes_ranges(domain, size):
    for scene in _scenes(domain, n=3, h=size[0], w=size[1]):
        assert scene.image.dtype == np.uint8 and scene.image.shape == (*size, 3)
        assert scene.label.dtype == np.uint8 and scene.label.shape == size
        assert scene.depth.dtype == np.float32 and scene.depth.shape == size
        assert set(np.unique(scene.label)) <= {ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY,
                                               PERSON, CAR}
        assert np.all(scene.depth > 0) and np.all(scene.depth <= SKY_DEPTH)


@pytest.mark.parametrize("domain", ["synthetic", "real"])
def test_required_classes_appear(domain):
    seen = set().union(*(np.unique(s.label).tolist() for s in _scenes(domain)))
    assert REQUIRED <= seen


def test_depth_geometry():
    h, w = 96, 192
    for scene in _scenes("synthetic", n=8, h=h, w=w):
        assert np.all(scene.depth[scene.label == SKY] == SKY_DEPTH)
        column = w // 2
        rows = np.flatnonzero(scene.label[:, column] == ROAD)
        depth = scene.depth[rows, column]
        assert len(rows) > 5
        assert np.all(np.diff(depth) < 0)  # ground depth shrinks down the image
        # Ground plane: 1 / depth = (row - horizon) / (camera height * focal), linear in the row.
        slope, _ = np.polyfit(rows + 0.5, 1 / depth, 1)
        assert slope == pytest.approx(1 / (CAMERA_HEIGHT * FOCAL_PER_WIDTH * w), rel=1e-3)
        # Objects sit at their finite placement depth.
        objects = np.isin(scene.label, [CAR, PERSON, POLE, SIGN])
        assert np.all(scene.depth[objects] < SKY_DEPTH)


def test_layout_shared_when_layout_knobs_off():
    for i in range(5):
        real, synthetic = render(i, 1, "real", 64, 128, SAME_LAYOUT), render(i, 1, "synthetic", 64, 128)
        np.testing.assert_array_equal(real.label, synthetic.label)
        np.testing.assert_array_equal(real.depth, synthetic.depth)
        assert np.abs(real.image.astype(int) - synthetic.image).mean() > 10


def test_no_gap_real_equals_synthetic():
    for i in range(3):
        np.testing.assert_array_equal(render(i, 2, "real", 64, 128, NO_GAP).image,
                                      render(i, 2, "synthetic", 64, 128).image)


def test_car_density_knob_adds_cars():
    def car_pixels(density):
        gap = dataclasses.replace(SAME_LAYOUT, car_density=density)
        return sum(int((s.label == CAR).sum()) for s in _scenes("real", gap=gap))

    assert car_pixels(2.0) > 1.3 * car_pixels(1.0)


def test_road_colour_gap():
    def road_stats(domain):
        pixels = np.concatenate([s.image[s.label == ROAD] for s in _scenes(domain)]).astype(float)
        saturation = (pixels.max(1) - pixels.min(1)) / np.maximum(pixels.max(1), 1)
        return pixels.mean(0), saturation.mean()

    (syn_rgb, syn_sat), (real_rgb, real_sat) = road_stats("synthetic"), road_stats("real")
    assert np.linalg.norm(syn_rgb - real_rgb) > 40
    assert syn_sat - real_sat > 0.12


def test_bad_domain_raises():
    with pytest.raises(ValueError, match="'cartoon'"):
        render(0, 0, "cartoon", 32, 64)
