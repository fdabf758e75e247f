"""Procedural street-scene renderer: RGB, Cityscapes trainId labels and metric depth in two domains.

Domain gap. Both domains draw their layouts from one generator (a pinhole camera over a
straight street with road, sidewalks, grass strips, building blocks, trees, poles with signs,
cars and people; per-scene light and per-object colour variation belong to it too) and render
them with one pipeline; the synthetic domain is that pipeline with every ``GapConfig`` knob off
(``NO_GAP``), so the gap is exactly what ``GapConfig`` says. The real domain differs in: class base colours, from a saturated game palette to
desaturated, hue-shifted real ones (``palette_shift``); stronger multi-octave value-noise
texture (``texture_strength``); directional lighting, i.e. a brightness gradient and
sunlit/shaded facades, plus shadows under cars (``shading_strength``, ``light_angle_jitter``,
``shadow_strength``); atmospheric haze (``haze``); camera effects: vignetting, exposure,
white balance, tone curve, saturation, optics blur, sensor noise and real JPEG artefacts
(``vignetting``, ``exposure_jitter``, ``white_balance``, ``white_balance_jitter``, ``gamma``,
``saturation``, ``blur_sigma``, ``noise_sigma``, ``jpeg_quality``); and mildly shifted layout
statistics (``horizon_shift``, ``car_density``, ``person_density``). With the layout knobs at
0 / 1 / 1 both domains give identical label maps for the same (seed, index).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from PIL import Image, ImageFilter

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = 0, 1, 2, 5, 7, 8, 9, 10, 11, 13
DOMAINS = {"synthetic": 0, "real": 1}
SKY_DEPTH = 1000.0  # metres; the far constant for sky pixels
CAMERA_HEIGHT = 1.5  # metres above the ground plane
FOCAL_PER_WIDTH = 1.1  # focal length in pixels per pixel of image width (~49 deg horizontal FOV)


@dataclass(frozen=True)
class GapConfig:
    """Knobs of the real domain's gap; ``NO_GAP`` turns every one off (= the synthetic domain)."""

    palette_shift: float = 1.0  # 0 = synthetic class base colours, 1 = real (desaturated, hue-shifted) ones
    texture_strength: float = 0.25  # amplitude of extra value-noise texture (times a per-class weight)
    shading_strength: float = 0.25  # relative brightness swing of the directional light (gradient, facade sides)
    light_angle_jitter: float = 0.8  # std (radians) of the per-image light direction around the upper left
    shadow_strength: float = 0.55  # fraction of light removed from the ground under cars
    haze: float = 0.006  # per-metre extinction blending distant surfaces toward the horizon sky colour
    vignetting: float = 0.35  # relative darkening at the image corners
    exposure_jitter: float = 0.15  # std of the per-image log exposure
    white_balance: tuple[float, float, float] = (1.06, 1.0, 0.88)  # RGB gains (warm cast)
    white_balance_jitter: float = 0.04  # std of the per-image relative deviation of each gain
    gamma: float = 1.25  # tone-curve exponent on [0, 1] intensities (> 1 darkens mid-tones)
    saturation: float = 0.7  # chroma scale around luma (1 = unchanged)
    blur_sigma: float = 0.7  # std in pixels of the optics blur (a box filter of that variance)
    noise_sigma: float = 0.02  # std of additive Gaussian sensor noise on [0, 1] intensities
    jpeg_quality: int | None = 40  # PIL JPEG encode/decode quality; None = no compression
    horizon_shift: float = 0.03  # horizon offset as a fraction of image height (+ = lower)
    car_density: float = 1.5  # multiplier on the probability that a car slot is filled
    person_density: float = 1.4  # multiplier on the probability that a person slot is filled


NO_GAP = GapConfig(
    palette_shift=0.0, texture_strength=0.0, shading_strength=0.0, light_angle_jitter=0.0,
    shadow_strength=0.0, haze=0.0, vignetting=0.0, exposure_jitter=0.0, white_balance=(1.0, 1.0, 1.0),
    white_balance_jitter=0.0, gamma=1.0, saturation=1.0, blur_sigma=0.0, noise_sigma=0.0,
    jpeg_quality=None, horizon_shift=0.0, car_density=1.0, person_density=1.0,
)


@dataclass(frozen=True, eq=False)  # eq=False: array fields make generated == / hash meaningless
class Scene:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    label: np.ndarray  # uint8 [H, W] Cityscapes trainIds; no ignore pixels
    depth: np.ndarray  # float32 [H, W] metres, > 0; sky = SKY_DEPTH


# (synthetic, real) base colours in [0, 1]; lists are per-object choices and must pair up.
_COLOURS = {
    "road": ((0.50, 0.30, 0.56), (0.34, 0.34, 0.35)),
    "lane": ((1.00, 1.00, 1.00), (0.78, 0.78, 0.72)),
    "sidewalk": ((0.92, 0.52, 0.86), (0.56, 0.54, 0.51)),
    "curb": ((0.98, 0.80, 0.95), (0.70, 0.69, 0.66)),
    "terrain": ((0.55, 0.88, 0.30), (0.40, 0.42, 0.26)),
    "vegetation": ((0.12, 0.72, 0.15), (0.20, 0.30, 0.13)),
    "trunk": ((0.50, 0.28, 0.10), (0.27, 0.22, 0.18)),
    "pole": ((0.62, 0.62, 0.75), (0.40, 0.40, 0.39)),
    "sky_top": ((0.18, 0.42, 0.95), (0.52, 0.64, 0.80)),
    "sky_horizon": ((0.62, 0.82, 1.00), (0.82, 0.85, 0.88)),
    "window": ((0.25, 0.45, 0.80), (0.17, 0.19, 0.21)),
    "skin": ((0.98, 0.76, 0.60), (0.68, 0.54, 0.45)),
    "glass": ((0.20, 0.35, 0.65), (0.10, 0.11, 0.13)),
    "tyre": ((0.05, 0.05, 0.08), (0.07, 0.07, 0.07)),
    "lamp": ((1.00, 0.15, 0.10), (0.60, 0.14, 0.10)),
    "sign_inner": ((1.00, 1.00, 1.00), (0.82, 0.82, 0.78)),
    "building": (
        ((0.90, 0.66, 0.42), (0.80, 0.42, 0.32), (0.52, 0.60, 0.85), (0.86, 0.84, 0.66), (0.64, 0.42, 0.28)),
        ((0.60, 0.56, 0.50), (0.48, 0.35, 0.30), (0.44, 0.45, 0.47), (0.68, 0.66, 0.60), (0.36, 0.32, 0.29)),
    ),
    "car": (
        ((0.90, 0.08, 0.08), (0.08, 0.30, 0.95), (0.98, 0.82, 0.08), (0.10, 0.75, 0.30),
         (0.95, 0.95, 1.00), (0.15, 0.15, 0.25), (0.95, 0.45, 0.08), (0.55, 0.20, 0.85)),
        ((0.52, 0.17, 0.16), (0.18, 0.24, 0.36), (0.60, 0.57, 0.47), (0.24, 0.30, 0.27),
         (0.76, 0.76, 0.76), (0.08, 0.08, 0.09), (0.48, 0.48, 0.50), (0.33, 0.31, 0.36)),
    ),
    "clothes": (
        ((0.95, 0.20, 0.20), (0.20, 0.40, 1.00), (1.00, 0.85, 0.15), (0.15, 0.85, 0.50),
         (0.80, 0.30, 0.90), (1.00, 0.55, 0.10)),
        ((0.15, 0.15, 0.17), (0.22, 0.26, 0.36), (0.50, 0.45, 0.38), (0.30, 0.32, 0.28),
         (0.45, 0.20, 0.22), (0.62, 0.60, 0.58)),
    ),
    "sign": (
        ((0.95, 0.10, 0.10), (0.10, 0.30, 0.95), (1.00, 0.85, 0.10), (0.10, 0.80, 0.30)),
        ((0.70, 0.16, 0.15), (0.16, 0.28, 0.56), (0.78, 0.68, 0.22), (0.20, 0.42, 0.28)),
    ),
}

_IS_GROUND = np.zeros(256, bool)  # trainIds of the ground plane, where car shadows fall
_IS_GROUND[[ROAD, SIDEWALK, TERRAIN]] = True

# Value-noise texture amplitude per trainId: synthetic base, and real extra (times texture_strength).
_BASE_TEXTURE = np.zeros(256, np.float32)
_BASE_TEXTURE[[ROAD, SIDEWALK, BUILDING, VEGETATION, TERRAIN]] = (0.04, 0.03, 0.03, 0.12, 0.08)
_REAL_TEXTURE = np.zeros(256, np.float32)
_REAL_TEXTURE[[ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR]] = (
    1.0, 0.8, 0.9, 0.4, 0.2, 1.6, 1.3, 0.5, 0.4, 0.3)

# Standard normal quantiles of 256 equal-mass bins: a random byte indexes Gaussian noise, cheaper than sampling it.
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)], np.float32)


def _palette(shift: float) -> dict[str, np.ndarray]:
    return {k: ((1 - shift) * np.asarray(s, np.float32) + shift * np.asarray(r, np.float32))
            for k, (s, r) in _COLOURS.items()}


def _jitter(colour: np.ndarray, u_bright: float, u_tint: float, u_grey: float = 0.0) -> np.ndarray:
    """Per-object variation: brightness +-20 %, warm/cool tint +-6 %, greying (desaturation) up to 50 %."""
    colour = colour + 0.5 * u_grey * (colour.mean() - colour)
    return colour * (0.8 + 0.4 * u_bright) + (u_tint - 0.5) * np.array([0.12, 0.0, -0.12], np.float32)


def _pick(colours: np.ndarray, u: float) -> np.ndarray:
    return colours[min(int(u * len(colours)), len(colours) - 1)]


def _pick_many(colours: np.ndarray, u: np.ndarray) -> np.ndarray:
    return colours[np.minimum((u * len(colours)).astype(int), len(colours) - 1)]


# ----------------------------------------------------------------------------------- layout

@dataclass
class _Obj:
    kind: str  # "car", "person", "pole", "tree" or "bush"
    x: float  # lateral position in metres (camera at 0, + = right)
    z: float  # depth in metres
    look: np.ndarray  # uniforms in [0, 1) that fix shape details and colours


@dataclass
class _Layout:
    horizon: float  # fraction of image height
    road: np.ndarray  # distance from the camera to the (left, right) road edge, metres
    walk: np.ndarray  # (left, right) sidewalk widths
    grass: np.ndarray  # (left, right) grass-strip widths, 0 = none
    street_end: float  # depth where the street (and its side blocks) ends
    illumination: np.ndarray  # RGB gains of the scene's light: brightness and colour temperature
    tints: np.ndarray  # [4, 3] uniforms varying the colours of road, sidewalk, terrain and sky (see _jitter)
    blocks: list[np.ndarray]  # per side, rows (z0, z1, height, colour u, window u, shade u), sorted by z0
    far_wall: np.ndarray | None  # rows (x0, x1, height, colour u, window u, shade u) across the street end
    objects: list[_Obj]


def _sample_blocks(rng: np.random.Generator, street_end: float) -> np.ndarray:
    n = 20
    length, height = rng.uniform(8, 30, n), rng.uniform(6, 30, n)
    look, is_gap = rng.random((n, 3)), rng.random(n) < 0.15  # gaps read as side streets
    z1 = rng.uniform(0, 5) + np.cumsum(length)
    rows = np.column_stack([z1 - length, np.minimum(z1, street_end), height, look])
    return rows[(rows[:, 0] < street_end) & ~is_gap]


def _sample_layout(rng: np.random.Generator, gap: GapConfig) -> _Layout:
    """Every draw has a fixed size, so density knobs change which slots are kept, not the rest."""
    horizon = rng.uniform(0.38, 0.48) + gap.horizon_shift
    road, walk = rng.uniform(3.5, 7.5, 2), rng.uniform(2.0, 4.5, 2)
    grass = np.where(rng.random(2) < 0.35, rng.uniform(1.0, 4.0, 2), 0.0)
    street_end = rng.uniform(50, 160)
    warmth = rng.uniform(-1, 1)
    illumination = rng.uniform(0.75, 1.15) * np.array([1 + 0.06 * warmth, 1, 1 - 0.06 * warmth])
    tints = rng.random((4, 3))
    blocks = [_sample_blocks(rng, street_end) for _ in range(2)]
    wall_weights, wall_rows, has_wall = rng.random(6) + 0.3, rng.random((6, 4)), rng.random() < 0.6
    edges = street_end * (np.concatenate([[0], np.cumsum(wall_weights)]) / wall_weights.sum() - 0.5) * 1.2
    far_wall = np.column_stack([edges[:-1], edges[1:], 8 + 25 * wall_rows[:, 0], wall_rows[:, 1:]])

    objects: list[_Obj] = []
    sides = np.array([-1.0, 1.0])

    # Cars: parked at a kerb or driving anywhere on the road; overlapping ones are dropped.
    place, look = rng.random((14, 5)), rng.random((14, 6))
    for (keep, parked, u_side, u_x, u_z), lk in zip(place, look):
        z = 6 + 80 * u_z
        if keep >= 0.3 * gap.car_density or z > street_end - 3:
            continue
        side = int(u_side < 0.5)
        x = sides[side] * (road[side] - 1.1) if parked < 0.35 else -road[0] + 1.3 + u_x * (road.sum() - 2.6)
        if all(abs(o.x - x) > 2.1 or abs(o.z - z) > 5.5 for o in objects):
            objects.append(_Obj("car", x, z, lk))

    # People: mostly on the sidewalks, some crossing the road.
    place, look = rng.random((12, 5)), rng.random((12, 8))
    for (keep, on_road, u_side, u_x, u_z), lk in zip(place, look):
        side = int(u_side < 0.5)
        x = (-road[0] + 0.5 + u_x * (road.sum() - 1.0) if on_road < 0.15
             else sides[side] * (road[side] + 0.4 + u_x * (walk[side] - 0.8)))
        if keep < 0.35 * gap.person_density:
            objects.append(_Obj("person", x, 4 + 40 * u_z, lk))

    for side in range(2):
        # Poles at the kerb at roughly regular spacing, some carrying a sign or a lamp arm.
        start, spacing = rng.uniform(3, 12), rng.uniform(12, 28)
        keep, look = rng.random(8), rng.random((8, 7))
        for k in range(8):
            z = start + k * spacing
            if keep[k] < 0.75 and z < street_end:
                objects.append(_Obj("pole", sides[side] * (road[side] + 0.35), z, look[k]))
        # Trees on the outer sidewalk edge or in the grass strip; bushes in the grass strip.
        density, start, spacing = rng.uniform(-0.3, 1.0), rng.uniform(2, 10), rng.uniform(6, 14)
        keep, look = rng.random(12), rng.random((12, 6))
        offset = road[side] + (walk[side] + grass[side] / 2 if grass[side] else walk[side] - 0.7)
        for k in range(12):
            z = start + k * spacing
            if keep[k] < density and z < street_end:
                objects.append(_Obj("tree", sides[side] * offset, z, look[k]))
        place, look = rng.random((8, 3)), rng.random((8, 4))
        for (keep_bush, u_x, u_z), lk in zip(place, look):
            z = 3 + u_z * (street_end - 3)
            if grass[side] and keep_bush < 0.5:
                objects.append(_Obj("bush", sides[side] * (road[side] + walk[side] + u_x * grass[side]), z, lk))

    return _Layout(horizon, road, walk, grass, street_end, illumination, tints, blocks,
                   far_wall if has_wall else None, objects)


# ----------------------------------------------------------------------------------- drawing

@dataclass
class _Canvas:
    rgb: np.ndarray  # float32 [H, W, 3] linear-ish radiance in [0, 1]
    label: np.ndarray  # uint8 [H, W]
    depth: np.ndarray  # float32 [H, W]
    focal: float  # pixels
    cx: float  # principal point column
    horizon: float  # horizon row (float, pixel-centre coordinates)
    ys: np.ndarray  # [H, 1] pixel-centre rows
    xs: np.ndarray  # [1, W] pixel-centre columns


def _draw_sky_and_ground(cv: _Canvas, lay: _Layout, pal: dict[str, np.ndarray]) -> None:
    road, sidewalk, terrain, sky = lay.tints
    sky_top, sky_horizon = _jitter(pal["sky_top"], *sky), _jitter(pal["sky_horizon"], *sky)
    t = np.clip(cv.ys / max(cv.horizon, 1.0), 0, 1)[..., None]
    cv.rgb[:] = sky_top + t * (sky_horizon - sky_top)
    cv.label[:] = SKY
    cv.depth[:] = SKY_DEPTH
    first = int(np.searchsorted(cv.ys[:, 0], cv.horizon, side="right"))
    if first >= len(cv.ys):
        return
    z = np.minimum(cv.focal * CAMERA_HEIGHT / (cv.ys[first:] - cv.horizon), SKY_DEPTH)  # [R, 1]
    x = (cv.xs - cv.cx) * z / cv.focal  # [R, W] lateral metres
    left_far, right_far = (TERRAIN if g else SIDEWALK for g in lay.grass)
    road_l, road_r = lay.road
    label = np.full(x.shape, ROAD, np.uint8)
    label[x < -road_l] = SIDEWALK
    label[x < -road_l - lay.walk[0]] = left_far
    label[x > road_r] = SIDEWALK
    label[x > road_r + lay.walk[1]] = right_far

    lut = np.zeros((256, 3), np.float32)
    lut[[ROAD, SIDEWALK, TERRAIN]] = (_jitter(pal["road"], *road), _jitter(pal["sidewalk"], *sidewalk),
                                      _jitter(pal["terrain"], *terrain))
    rgb = lut[label]
    on_road, on_walk = label == ROAD, label == SIDEWALK
    centre_line = (np.abs(x - (road_r - road_l) / 2) < 0.08) & (z % 9 < 3.5)
    edge_lines = (np.abs(x + road_l - 0.3) < 0.08) | (np.abs(x - road_r + 0.3) < 0.08)
    rgb[on_road & (centre_line | edge_lines)] = pal["lane"]
    kerb_distance = np.minimum(np.abs(x + road_l), np.abs(x - road_r))
    rgb[on_walk & (z < 25) & ((x % 1.5 < 0.05) | (z % 1.5 < 0.05))] *= 0.85  # paving joints
    rgb[on_walk & (kerb_distance < 0.2)] = pal["curb"]

    cv.rgb[first:], cv.label[first:], cv.depth[first:] = rgb, label, z


def _draw_facade(cv: _Canvas, z: np.ndarray, valid: np.ndarray, along: np.ndarray, rows: np.ndarray,
                 pal: dict[str, np.ndarray], light: float) -> None:
    """Paint a vertical facade seen at per-column depth ``z`` ([1, W]) in the columns where ``valid``.

    ``rows`` ([1, W, 4]) holds per-column (height, colour u, window u, shade u); ``along`` is the
    horizontal facade coordinate in metres, used to lay out windows.
    """
    cols = np.flatnonzero(valid[0])
    if len(cols) == 0:
        return
    c = slice(cols[0], cols[-1] + 1)  # work inside the facade's bounding box only
    z, valid, along, rows = np.broadcast_to(z, valid.shape)[:, c], valid[:, c], along[:, c], rows[:, c]
    height, u_colour, u_window, u_shade = np.moveaxis(rows, -1, 0)
    top = cv.horizon - cv.focal * (height - CAMERA_HEIGHT) / z
    bottom = cv.horizon + cv.focal * CAMERA_HEIGHT / z
    r = slice(max(0, math.floor(top[valid].min())), min(len(cv.ys), math.ceil(bottom[valid].max())))
    ys = cv.ys[r]
    mask = valid & (ys >= top) & (ys < bottom)
    if not mask.any():
        return
    elevation = CAMERA_HEIGHT - (ys - cv.horizon) * z / cv.focal  # metres above ground
    storey, spacing = 3.0 + 0.6 * u_window, 2.5 + 2.0 * u_window
    storeys, bays = elevation / storey, along / spacing
    in_storey, in_bay = storeys - np.floor(storeys), bays - np.floor(bays)  # fractional parts; np.mod is slow
    window = ((storeys > 1) & (elevation < height - 0.6) & (in_storey > 0.35) & (in_storey < 0.8)
              & (np.abs(in_bay - 0.5) < 0.22))
    colours = _pick_many(pal["building"], u_colour[0]) * (0.85 + 0.3 * u_shade[0, :, None])  # [n, 3]
    rgb = np.where(window[..., None], pal["window"], colours) * light
    np.copyto(cv.rgb[r, c], rgb, where=mask[..., None])
    np.copyto(cv.label[r, c], BUILDING, where=mask)
    np.copyto(cv.depth[r, c], z, where=mask)


def _lookup(rows: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per key, the row whose interval [rows[:, 0], rows[:, 1]) contains it, and whether one does."""
    i = np.clip(np.searchsorted(rows[:, 0], key, side="right") - 1, 0, len(rows) - 1)
    return rows[i], (key >= rows[i, 0]) & (key < rows[i, 1])


def _draw_buildings(cv: _Canvas, lay: _Layout, pal: dict[str, np.ndarray], light: tuple[float, float]) -> None:
    if lay.far_wall is not None:
        x = (cv.xs - cv.cx) * lay.street_end / cv.focal
        rows, valid = _lookup(lay.far_wall, x)
        _draw_facade(cv, np.float32(lay.street_end), valid, x, rows[..., 2:], pal, 1.0)
    offset = cv.xs - cv.cx
    for side, sign in enumerate((-1, 1)):
        if len(lay.blocks[side]) == 0:
            continue
        z = cv.focal * (lay.road[side] + lay.walk[side] + lay.grass[side]) / np.maximum(np.abs(offset), 1e-3)
        rows, valid = _lookup(lay.blocks[side], z)
        _draw_facade(cv, z, valid & (offset * sign > 0), z, rows[..., 2:], pal, light[side])


# Parts functions: from metric coordinates X ([1, n], right of the object's centre) and Y ([m, 1], above
# the ground), with px metres per pixel, return the object's parts as (mask, trainId, colour), painted in order.

def _car_parts(X, Y, obj, pal, px):
    lk = obj.look
    van = lk[0] < 0.25
    body_top, roof = (1.3, 1.95) if van else (0.95, 1.5)
    paint = _jitter(_pick(pal["car"], lk[1]), lk[2], lk[3])
    ax = np.abs(X)
    body = (ax < 0.9) & (Y > 0.2) & (Y < body_top) & ~((ax > 0.8) & (Y > body_top - 0.1))
    cabin_half = 0.8 - 0.2 * (Y - body_top) / (roof - body_top)
    cabin = (Y >= body_top) & (Y < roof) & (ax < cabin_half)
    glass = (Y > body_top + 0.06) & (Y < roof - 0.08) & (ax < cabin_half - 0.09)
    wheels = (ax > 0.5) & (ax < 0.85) & (Y >= 0) & (Y < 0.35)
    lamps = (ax > 0.58) & (ax < 0.84) & (Y > body_top - 0.28) & (Y < body_top - 0.12)
    return [(wheels, CAR, pal["tyre"]), (body | cabin, CAR, paint), (cabin & glass, CAR, pal["glass"]),
            (lamps, CAR, pal["lamp"])]


def _person_parts(X, Y, obj, pal, px):
    lk = obj.look
    h = 1.55 + 0.35 * lk[0]
    k = h / 1.75
    stride = 0.15 * lk[1]  # walking legs spread into a V
    leg_centre = 0.08 * k + stride * np.clip(1 - Y / (0.48 * h), 0, 1)
    legs = (Y >= 0) & (Y < 0.5 * h) & (np.abs(np.abs(X) - leg_centre) < max(0.065 * k, 0.5 * px))
    torso = (Y >= 0.48 * h) & (Y < 0.82 * h) & (np.abs(X) < 0.19 * k)
    arms = (Y >= 0.5 * h) & (Y < 0.8 * h) & (np.abs(X) >= 0.19 * k) & (np.abs(X) < 0.26 * k)
    head_r = 0.11 * k
    head = X ** 2 + (Y - (h - head_r)) ** 2 < head_r ** 2
    neck = (Y >= 0.82 * h) & (Y < h - head_r) & (np.abs(X) < 0.05 * k)
    shirt = _jitter(_pick(pal["clothes"], lk[2]), lk[3], lk[4])
    trousers = _jitter(_pick(pal["clothes"], lk[5]), lk[6], 0.5) * 0.7
    skin = _jitter(pal["skin"], lk[7], 0.5)
    return [(legs, PERSON, trousers), (torso | arms, PERSON, shirt), (head | neck, PERSON, skin)]


def _pole_parts(X, Y, obj, pal, px):
    lk, toward_road = obj.look, -np.sign(obj.x)
    has_sign, has_arm = lk[1] < 0.6, 0.6 <= lk[1] < 0.8
    half = max(0.07, 0.5 * px)  # at least one pixel wide
    sign_y, sign_r = 2.2 + 1.0 * lk[2], 0.35 + 0.2 * lk[3]
    height = sign_y + sign_r if has_sign and lk[4] < 0.5 else 4.5 + 4.5 * lk[4]
    colour = _jitter(pal["pole"], lk[5], 0.5)
    parts = [((np.abs(X) < half) & (Y >= 0) & (Y < height), POLE, colour)]
    if has_arm:
        arm = (X * toward_road > 0) & (X * toward_road < 1.8) & (np.abs(Y - height + 0.08) < max(0.08, 0.5 * px))
        parts.append((arm, POLE, colour))
    if has_sign:
        dx, dy = (X - toward_road * (sign_r + half)) / sign_r, (Y - sign_y) / sign_r
        if lk[6] < 0.4:  # round sign
            dist = np.sqrt(dx ** 2 + dy ** 2)
        elif lk[6] < 0.7:  # square sign
            dist = np.maximum(np.abs(dx), np.abs(dy)) * 1.15
        else:  # diamond sign
            dist = np.abs(dx) + np.abs(dy)
        face = _jitter(_pick(pal["sign"], lk[0]), lk[5], 0.5)
        parts += [(dist < 1, SIGN, face), (dist < 0.55, SIGN, pal["sign_inner"])]
    return parts


def _tree_parts(X, Y, obj, pal, px):
    lk = obj.look
    trunk_h, r = 1.5 + 1.5 * lk[0], 1.2 + 1.8 * lk[1]
    crown = np.zeros(np.broadcast_shapes(X.shape, Y.shape), bool)
    for cx, cy, cr in ((0.0, trunk_h + r, r), (-0.6 * r, trunk_h + 0.7 * r, 0.7 * r),
                       (0.6 * r * (2 * lk[2] - 1), trunk_h + 1.4 * r, 0.65 * r)):
        crown |= (X - cx) ** 2 + (Y - cy) ** 2 < cr ** 2
    trunk = (np.abs(X) < max(0.15, 0.5 * px)) & (Y >= 0) & (Y < trunk_h + 0.5 * r)
    leaves = _jitter(pal["vegetation"], lk[3], lk[4])
    return [(trunk, VEGETATION, pal["trunk"]), (crown, VEGETATION, leaves)]


def _bush_parts(X, Y, obj, pal, px):
    lk = obj.look
    half_w, h = 0.5 + 1.0 * lk[0], 0.5 + 0.7 * lk[1]
    bush = (X / half_w) ** 2 + ((Y - h / 2) / (h / 2)) ** 2 < 1
    return [(bush & (Y >= 0), VEGETATION, _jitter(pal["vegetation"], lk[2], lk[3]) * 0.9)]


# Per kind: parts function, and the half width and height (metres) of a box that holds every variant.
_KINDS = {"car": (_car_parts, 1.0, 2.0), "person": (_person_parts, 0.45, 1.95), "pole": (_pole_parts, 2.0, 9.0),
          "tree": (_tree_parts, 4.0, 9.5), "bush": (_bush_parts, 1.5, 1.3)}


def _draw_object(cv: _Canvas, obj: _Obj, pal: dict[str, np.ndarray], shadow: float) -> None:
    """Paint one object standing on the ground at depth obj.z; parts are drawn in order."""
    parts_of, half_w, top = _KINDS[obj.kind]
    scale = cv.focal / obj.z  # pixels per metre
    ground_row = cv.horizon + CAMERA_HEIGHT * scale
    h, w = cv.label.shape
    c0, c1 = max(0, math.floor(cv.cx + (obj.x - half_w) * scale)), min(w, math.ceil(cv.cx + (obj.x + half_w) * scale))
    r0, r1 = max(0, math.floor(ground_row - top * scale)), min(h, math.ceil(ground_row + 0.15 * scale))
    if c0 >= c1 or r0 >= r1:
        return
    X = (cv.xs[:, c0:c1] - cv.cx) / scale - obj.x  # metres right of the object's centre
    Y = (ground_row - cv.ys[r0:r1]) / scale  # metres above the ground
    rgb, label, depth = cv.rgb[r0:r1, c0:c1], cv.label[r0:r1, c0:c1], cv.depth[r0:r1, c0:c1]
    if obj.kind == "car" and shadow:
        under = (np.abs(X) < 1.0) & (Y > -0.15) & (Y < 0.3) & _IS_GROUND[label]
        rgb[under] *= 1 - shadow
    for mask, lab, colour in parts_of(X, Y, obj, pal, 1.0 / scale):
        np.copyto(rgb, colour, where=mask[..., None])
        np.copyto(label, lab, where=mask)
        np.copyto(depth, obj.z, where=mask)


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...]) -> np.ndarray:
    """Multi-octave bilinear value noise in about [-1, 1]; lattice sizes do not depend on (h, w)."""
    out, total, amp = np.zeros((h, w), np.float32), 0.0, 1.0
    for c in cells:
        lattice = rng.uniform(-1, 1, (max(2, round(c * h / w)) + 1, c + 1)).astype(np.float32)
        out += amp * np.asarray(Image.fromarray(lattice).resize((w, h), Image.BILINEAR))
        total, amp = total + amp, amp * 0.6
    return out / total


def _camera(rgb: np.ndarray, depth: np.ndarray, label: np.ndarray, illumination: np.ndarray, gap: GapConfig,
            rng: np.random.Generator, pal: dict[str, np.ndarray], sun: tuple[float, float]) -> np.ndarray:
    """Scene light, then the real-domain lighting, atmosphere and camera; a step whose knob is off is skipped."""
    h, w, _ = rgb.shape
    if gap.haze:
        fog = (1 - np.exp(-gap.haze * depth)) * (label != SKY)
        rgb += fog[..., None] * (pal["sky_horizon"] - rgb)
    if gap.shading_strength or gap.vignetting:
        ys, xs = np.linspace(-1, 1, h, dtype=np.float32)[:, None], np.linspace(-1, 1, w, dtype=np.float32)
        light = 1 + 0.5 * gap.shading_strength * (sun[0] * xs - sun[1] * ys)  # brighter toward the sun
        light *= 1 - 0.5 * gap.vignetting * (xs ** 2 + ys ** 2)
        rgb *= light[..., None]
    # Scene light, white balance, exposure and saturation as one colour matrix acting on RGB rows.
    gain = illumination * gap.white_balance * (1 + gap.white_balance_jitter * rng.standard_normal(3))
    gain *= math.exp(gap.exposure_jitter * rng.standard_normal())
    luma = np.array([0.299, 0.587, 0.114])
    desaturate = gap.saturation * np.eye(3) + (1 - gap.saturation) * np.outer(luma, np.ones(3))
    rgb = rgb @ (gain[:, None] * desaturate).astype(np.float32)
    image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    if gap.gamma != 1:
        image = ((np.arange(256) / 255) ** gap.gamma * 255 + 0.5).astype(np.uint8)[image]  # tone curve LUT
    if gap.blur_sigma:  # one box-filter pass with the variance of the Gaussian: cheap and close enough
        radius = max(0.0, (math.sqrt(12) * gap.blur_sigma - 1) / 2)
        image = np.asarray(Image.fromarray(image).filter(ImageFilter.BoxBlur(radius)))
    if gap.noise_sigma:
        noise = np.round(_NORMAL_QUANTILES * 255 * gap.noise_sigma).astype(np.int16)
        image = np.clip(image + noise[rng.integers(0, 256, image.shape, dtype=np.uint8)], 0, 255).astype(np.uint8)
    if gap.jpeg_quality is not None:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=gap.jpeg_quality)
        image = np.array(Image.open(buffer).convert("RGB"))
    return image


def render(index: int, seed: int, domain: str, height: int, width: int, gap: GapConfig = GapConfig()) -> Scene:
    """Render scene ``index`` of ``seed`` in ``domain`` ("synthetic" or "real"); deterministic in all args."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(DOMAINS)}")
    if domain == "synthetic":
        gap = NO_GAP
    layout_rng = np.random.default_rng(np.random.SeedSequence([seed, index]))  # shared by both domains
    gap_rng = np.random.default_rng(np.random.SeedSequence([seed, index, DOMAINS[domain]]))
    lay = _sample_layout(layout_rng, gap)
    pal = _palette(gap.palette_shift)
    cv = _Canvas(
        rgb=np.empty((height, width, 3), np.float32), label=np.empty((height, width), np.uint8),
        depth=np.empty((height, width), np.float32), focal=FOCAL_PER_WIDTH * width, cx=width / 2,
        horizon=lay.horizon * height, ys=np.arange(height, dtype=np.float32)[:, None] + 0.5,
        xs=np.arange(width, dtype=np.float32)[None, :] + 0.5,
    )
    angle = 2.4 + gap.light_angle_jitter * gap_rng.standard_normal()  # sun toward the upper left
    sun = (math.cos(angle), math.sin(angle))
    facade_light = (1 + gap.shading_strength * sun[0], 1 - gap.shading_strength * sun[0])  # faces +x, -x

    _draw_sky_and_ground(cv, lay, pal)
    _draw_buildings(cv, lay, pal, facade_light)
    for obj in sorted(lay.objects, key=lambda o: -o.z):  # painter's algorithm, far to near
        _draw_object(cv, obj, pal, gap.shadow_strength)

    texture = _BASE_TEXTURE[cv.label] * _value_noise(layout_rng, height, width, (4, 16, 64))
    if gap.texture_strength:
        texture += gap.texture_strength * _REAL_TEXTURE[cv.label] * _value_noise(gap_rng, height, width, (8, 32, 128))
    cv.rgb *= (1 + texture)[..., None]
    image = _camera(cv.rgb, cv.depth, cv.label, lay.illumination, gap, gap_rng, pal, sun)
    return Scene(image=image, label=cv.label, depth=cv.depth)
