"""SP-Feat semantic pairing of real and synthetic images (seed 004), and the paired loader."""
from rayda.pairing.features import feature_dataset, sp_feat
from rayda.pairing.knn import topk
from rayda.pairing.loader import PairPlan, pair_plan, paired_stream
from rayda.pairing.pair import pair, pair_features

__all__ = ["PairPlan", "feature_dataset", "pair", "pair_features", "pair_plan", "paired_stream", "sp_feat", "topk"]
