"""SP-Feat semantic pairing of real and synthetic images (seed 004), and the paired loader."""
from rayda.pairing.features import feature_dataset, sp_feat
from rayda.pairing.knn import topk
from rayda.pairing.loader import paired_dataset
from rayda.pairing.pair import pair, pair_features

__all__ = ["feature_dataset", "pair", "pair_features", "paired_dataset", "sp_feat", "topk"]
