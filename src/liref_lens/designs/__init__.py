"""Designs that remove the trivial explanations of a separating direction.

Each design is a function over a `Contrast` (activations + token ids + per-item metadata of
two classes) that returns a `DesignResult` of DataFrames: every layer's AUROC next to the
trivial readers (prompt length, bag of tokens) treated the same way, with paired verdicts
(`liref_lens.verdicts`):

- `heldout`: out-of-fold AUROC, the same folds for layers and readers;
- `matched`: the same on items drawn so a nuisance variable (token length by default) has
  the same distribution in both classes (`match_classes` reports the overlap);
- `residualized`: the same after removing nuisance features from every reader's features,
  fold by fold (least squares, or LEACE with the ``concept-erasure`` package);
- `transfer` / `transfer_matrix`: readers fitted on one contrast, scored on another, with
  threshold-transfer accuracy.

`per_item_effects` and `steerability_summary` read an experiment's per-prompt results: each
question's change under steering next to the control directions. `design_table` stacks
designs into one tidy table; `liref_lens.designs.plots` draws them.
"""

from .contrast import Contrast, DesignResult, design_table, heldout
from .matching import MatchedSample, match_classes, matched
from .plots import design_plot, overlap_plot, per_item_plot, transfer_heatmap
from .residualize import nuisance_matrix, residualized, residualizer
from .steerability import per_item_effects, steerability_summary
from .transfers import transfer, transfer_matrix

__all__ = [
    "Contrast",
    "DesignResult",
    "MatchedSample",
    "design_plot",
    "design_table",
    "heldout",
    "match_classes",
    "matched",
    "nuisance_matrix",
    "overlap_plot",
    "per_item_effects",
    "per_item_plot",
    "residualized",
    "residualizer",
    "steerability_summary",
    "transfer",
    "transfer_heatmap",
    "transfer_matrix",
]
