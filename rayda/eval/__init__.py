"""Evaluation: confusion matrix, mIoU, distributed inference over datasets."""
from rayda.eval.evaluate import evaluate, predict, protocol_classes
from rayda.eval.metrics import confusion_matrix, format_table, miou, summarize

__all__ = ["confusion_matrix", "evaluate", "format_table", "miou", "predict", "protocol_classes", "summarize"]
