"""Sliced Wasserstein distance between two image sets, over Laplacian-pyramid patches (Karras et al. 2018,
the SWD seed 000 reports): per pyramid level, random 7x7 neighbourhoods of every image are the samples,
and SWD is the mean over random unit directions of the 1-D Wasserstein distance of their projections.

One deviation, for colour adaptation: both sets' descriptors are normalised with the statistics of the two
sets together (ProGAN normalises each set by its own), so a colour or contrast shift between the sets
still counts.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7                 # neighbourhood side
PATCHES_PER_IMAGE = 128
MIN_SIZE = 16             # the coarsest level's shorter side
SIZE = (256, 512)         # images are resized to this first, so sets of any sizes compare level by level

_KERNEL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
_KERNEL = (_KERNEL[:, None] * _KERNEL[None, :] / 256.0).expand(3, 1, 5, 5).contiguous()


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _KERNEL.to(x), groups=3)


def _down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[..., ::2, ::2]


def _up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    up = x.new_zeros(*x.shape[:2], size[0], size[1])
    up[..., ::2, ::2] = x
    return _blur(up) * 4


def num_levels(size: tuple[int, int]) -> int:
    """Pyramid levels from size down to a shorter side of MIN_SIZE."""
    n, side = 1, min(size)
    while side // 2 >= MIN_SIZE:
        side //= 2
        n += 1
    return n


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """float [N,3,H,W] -> levels band-pass images, finest first; the last is the low-pass residual."""
    out, current = [], images
    for _ in range(levels - 1):
        smaller = _down(current)
        out.append(current - _up(smaller, current.shape[-2:]))
        current = smaller
    out.append(current)
    return out


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 or float [N,3,H,W] -> float [N,3,*size] in [0, 255]."""
    x = images.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x


def patch_descriptors(images: torch.Tensor, ids: list[str], seed: int, size: tuple[int, int] = SIZE,
                      patches_per_image: int = PATCHES_PER_IMAGE) -> list[np.ndarray]:
    """uint8 [N,3,H,W] -> per pyramid level, float32 [N * patches_per_image, 3 * 7 * 7] raw neighbourhoods.
    Positions are drawn from (seed, image id), so a descriptor set does not depend on batching."""
    pyramid = laplacian_pyramid(resize(images, size), num_levels(size))
    out = []
    for level, band in enumerate(pyramid):
        h, w = band.shape[-2:]
        unfold = []
        for i, image_id in enumerate(ids):
            rng = np.random.default_rng([seed, level, zlib.crc32(str(image_id).encode())])
            ys = rng.integers(0, h - PATCH + 1, patches_per_image)
            xs = rng.integers(0, w - PATCH + 1, patches_per_image)
            offsets = torch.arange(PATCH)
            rows = torch.as_tensor(ys)[:, None] + offsets  # [P, 7]
            cols = torch.as_tensor(xs)[:, None] + offsets
            patches = band[i][:, rows[:, :, None], cols[:, None, :]]  # [3, P, 7, 7]
            unfold.append(patches.permute(1, 0, 2, 3).reshape(patches_per_image, -1))
        out.append(torch.cat(unfold).numpy().astype(np.float32))
    return out


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, seed: int, repeats: int = 4, dirs_per_repeat: int = 128) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between the projections of the
    rows of a and b (same number of rows: the sorted projections pair up)."""
    if len(a) != len(b):
        raise ValueError(f"sliced_wasserstein needs equal sample counts, got {len(a)} and {len(b)}")
    g = torch.Generator().manual_seed(seed)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    dists = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=g)
        dirs /= dirs.norm(dim=0, keepdim=True)
        pa, pb = (ta @ dirs).sort(dim=0).values, (tb @ dirs).sort(dim=0).values
        dists.append((pa - pb).abs().mean())
    return float(torch.stack(dists).mean())


def swd_from_descriptors(a: list[np.ndarray], b: list[np.ndarray], size: tuple[int, int], seed: int) -> dict:
    """Per level (named by its resolution) and mean SWD, x 1e3 as ProGAN reports it."""
    levels = {}
    h, w = size
    for level, (da, db) in enumerate(zip(a, b)):
        n = min(len(da), len(db))
        da, db = da[:n], db[:n]
        both = np.concatenate([da, db]).reshape(2 * n, 3, -1)
        mean = both.mean(axis=(0, 2)).repeat(PATCH * PATCH)[None]
        std = both.std(axis=(0, 2)).repeat(PATCH * PATCH)[None] + 1e-8
        levels[f"{h >> level}x{w >> level}"] = 1e3 * sliced_wasserstein((da - mean) / std, (db - mean) / std,
                                                                        seed + level)
    return {"levels": levels, "mean": float(np.mean(list(levels.values()))), "size": list(size)}


def swd(images_a: torch.Tensor, images_b: torch.Tensor, seed: int = 0, size: tuple[int, int] | None = None,
        patches_per_image: int = PATCHES_PER_IMAGE) -> dict:
    """SWD between two in-memory sets of uint8 [N,3,H,W] images (resized to `size`, default the first set's)."""
    size = tuple(size or images_a.shape[-2:])
    desc = [patch_descriptors(x, [str(i) for i in range(len(x))], seed, size, patches_per_image)
            for x in (images_a, images_b)]
    return swd_from_descriptors(*desc, size=size, seed=seed)


def dataset_swd(a, b, *, max_images: int = 512, size: tuple[int, int] = SIZE, seed: int = 0) -> dict:
    """SWD between two shard datasets: the same number of images drawn from each (at most max_images),
    descriptors extracted in parallel with Ray Data."""
    from rayda.data import read_info

    infos = [read_info(a), read_info(b)]
    n = min(max_images, *(info.num_rows for info in infos))
    desc = [dataset_descriptors(info, n, size, seed) for info in infos]
    out = swd_from_descriptors(*desc, size=size, seed=seed)
    out.update(a=infos[0].name, b=infos[1].name, num_images=n, patches_per_image=PATCHES_PER_IMAGE, seed=seed)
    return out


def dataset_descriptors(info, n: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    from rayda.data import eval_dataset, sample_ids

    ds = eval_dataset(info, with_labels=False, ids=sample_ids(info, n, seed)).map_batches(
        _descriptor_batch, batch_format="numpy", batch_size=16, fn_kwargs={"size": size, "seed": seed})
    parts = sorted((str(i), row) for batch in ds.iter_batches(batch_format="numpy", batch_size=None)
                   for i, row in zip(batch["id"], zip(*(batch[f"level{k}"] for k in range(num_levels(size))))))
    return [np.concatenate([row[k] for _, row in parts]) for k in range(num_levels(size))]


def _descriptor_batch(batch: dict, size: tuple[int, int], seed: int) -> dict:
    # Images of one dataset may differ in size: resize each before stacking.
    images = torch.cat([resize(torch.from_numpy(np.asarray(x))[None], size) for x in batch["image"]])
    levels = patch_descriptors(images, list(batch["id"]), seed, size)
    n = len(batch["id"])
    return {"id": batch["id"], **{f"level{k}": d.reshape(n, PATCHES_PER_IMAGE, -1) for k, d in enumerate(levels)}}
