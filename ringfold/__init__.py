"""ringfold: adapt a frozen CLIP, fold the adapters away, ship a verified classifier to the edge."""

__version__ = "0.1.0"
