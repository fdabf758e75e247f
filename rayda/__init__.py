"""rayda: synthetic-to-real domain adaptation for semantic segmentation on Ray."""
__version__ = "0.1.0"
