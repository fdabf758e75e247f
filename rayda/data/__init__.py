"""Shard datasets: the format, and Ray Data pipelines that read, decode, augment and write them."""
from rayda.data.format import SCHEMA, DatasetError, DatasetInfo, make_row, read_info
from rayda.data.pipeline import (Augment, eval_dataset, prepare_output, read_dataset, rows_to_table, sample_ids,
                                 tagged_images, to_network_input, write_dataset)
from rayda.data.stream import train_stream

__all__ = ["SCHEMA", "Augment", "DatasetError", "DatasetInfo", "eval_dataset", "make_row", "prepare_output",
           "read_dataset", "read_info", "rows_to_table", "sample_ids", "tagged_images", "to_network_input",
           "train_stream", "write_dataset"]
