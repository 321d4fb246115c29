"""liref_lens: find and steer the linear features that decide reasoning vs memorization.

Built on TransformerLens (the TransformerLens 4 ``TransformerBridge`` and the legacy
``HookedTransformer``). Importing the package has no side effects.
"""

from . import tasks
from .attention import fusable_layers, fused_attention
from .cache import Activations, RunningStats, cache_activations, stream_activations
from .directions import (
    DirectionSet,
    Fitter,
    contrast_mean,
    diff_in_means,
    fit_directions,
    pca_contrast,
    probe_direction,
    random_like,
    reading_vector,
    shuffled_labels,
)
from .experiment import EvalSet, Experiment, ExperimentConfig, Results
from .generation import Generation, generate
from .interventions import (
    Add,
    Compose,
    InterventionHandle,
    NeuronShift,
    Op,
    ProjectOut,
    Scale,
    attach,
    intervene,
    paper_scale,
)
from .metrics import answer_probability, candidate_choice, entropy, kl_divergence, mean_ci
from .model import SITES, Batch, LensModel, available_backends, load_model
from .neurons import (
    neuron_correlation,
    neuron_mean_difference,
    neuron_shift,
    neuron_table,
    probe_layers,
    random_neuron_shift,
    top_neurons,
)
from .positional import PositionalDirections, fit_by_position, rank_positions, token_spans
from .positions import Position, Selection, at, every, last, mean, parse_position, span
from .scores import (
    auroc,
    cohens_d,
    correlation,
    cosine_matrix,
    cosine_per_layer,
    projection,
    separation,
)
from .tasks import EvalResult, Item, Task, load_task
from .weights import (
    keep_singular_directions,
    low_rank,
    orthogonalize,
    rank_of,
    search_truncation,
    truncate,
    truncation_rank,
    weight_matrix,
)

__version__ = "0.1.0"

__all__ = [
    "SITES",
    "Activations",
    "Add",
    "Batch",
    "Compose",
    "DirectionSet",
    "EvalResult",
    "EvalSet",
    "Experiment",
    "ExperimentConfig",
    "Fitter",
    "Generation",
    "InterventionHandle",
    "Item",
    "LensModel",
    "NeuronShift",
    "Op",
    "Position",
    "PositionalDirections",
    "ProjectOut",
    "Results",
    "RunningStats",
    "Scale",
    "Selection",
    "Task",
    "answer_probability",
    "at",
    "attach",
    "auroc",
    "available_backends",
    "fusable_layers",
    "fused_attention",
    "cache_activations",
    "candidate_choice",
    "cohens_d",
    "contrast_mean",
    "correlation",
    "cosine_matrix",
    "cosine_per_layer",
    "diff_in_means",
    "entropy",
    "every",
    "fit_by_position",
    "fit_directions",
    "generate",
    "intervene",
    "keep_singular_directions",
    "kl_divergence",
    "last",
    "load_model",
    "load_task",
    "low_rank",
    "mean",
    "mean_ci",
    "neuron_correlation",
    "neuron_mean_difference",
    "neuron_shift",
    "neuron_table",
    "orthogonalize",
    "paper_scale",
    "parse_position",
    "pca_contrast",
    "probe_direction",
    "probe_layers",
    "projection",
    "random_like",
    "random_neuron_shift",
    "rank_of",
    "rank_positions",
    "reading_vector",
    "search_truncation",
    "separation",
    "shuffled_labels",
    "span",
    "stream_activations",
    "tasks",
    "token_spans",
    "top_neurons",
    "truncate",
    "truncation_rank",
    "weight_matrix",
]
