"""The early-exit model: backbone + exits, layer-by-layer execution, batched early exit, save/load.

The classifier (and with it torch and transformers) is imported on first use, so that ``models.config`` stays
quick to import for the command line's ``--help``."""

from models.config import ConfigError, EarlyExitConfig

__all__ = ["ConfigError", "EarlyExitClassifier", "EarlyExitConfig", "Prediction"]


def __getattr__(name: str):
    if name in ("EarlyExitClassifier", "Prediction"):
        from models import classifier
        return getattr(classifier, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
