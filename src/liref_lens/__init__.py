"""liref_lens: find and steer the linear features that decide reasoning vs memorization.

Built on TransformerLens (the TransformerLens 4 ``TransformerBridge`` and the legacy
``HookedTransformer``). Importing the package has no side effects.
"""

from .cache import Activations, RunningStats, cache_activations, stream_activations
from .model import SITES, Batch, LensModel, available_backends, load_model
from .positions import Position, Selection, at, every, last, mean, parse_position

__version__ = "0.1.0"

__all__ = [
    "SITES",
    "Activations",
    "Batch",
    "LensModel",
    "Position",
    "RunningStats",
    "Selection",
    "at",
    "available_backends",
    "cache_activations",
    "every",
    "last",
    "load_model",
    "mean",
    "parse_position",
    "stream_activations",
]
