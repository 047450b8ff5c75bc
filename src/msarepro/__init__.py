"""msarepro: a data-versioned reproducibility pipeline for multimodal sentiment analysis."""
__version__ = "0.1.0"
