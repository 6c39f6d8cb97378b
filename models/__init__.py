"""The early-exit model: backbone + exits, layer-by-layer execution, batched early exit, save/load."""

from models.classifier import EarlyExitClassifier, Prediction
from models.config import ConfigError, EarlyExitConfig

__all__ = ["ConfigError", "EarlyExitClassifier", "EarlyExitConfig", "Prediction"]
