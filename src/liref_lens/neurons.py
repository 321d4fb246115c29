"""Neuron-level analysis: which MLP neurons (``mlp_post``) tell two behaviours apart.

For two groups of activations (`Activations` from `cache_activations(..., sites="mlp_post")`
or raw ``[n, layer, d_mlp]`` tensors), `neuron_table` gives every neuron's group means, their
difference and its point-biserial (Pearson) correlation with the group label, as a tidy
``pandas.DataFrame``; `neuron_mean_difference` and `neuron_correlation` (binary or continuous
label) return the same numbers as ``[layer, neuron]`` float64 tensors. `top_neurons` keeps the
``k`` neurons of largest ``|mean_diff|`` or ``|corr|``, per layer or over all layers;
`neuron_shift` turns them into a `NeuronShift` ``h_i + alpha * mean_diff_i`` (alpha > 0 pushes
towards the first group), `random_neuron_shift` into its control: other neurons of the same
layers, as many per layer, with the same shifts. `probe_layers` cross-validates a linear probe
per layer.

Memory: statistics are computed one layer at a time on a float64 CPU copy of that layer
(``[n, d_mlp]``); a table holds one row per neuron of every layer (``layer * d_mlp`` rows, e.g.
352k for a 7B Llama).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .cache import Activations
from .interventions import NeuronShift
from .model import LensModel
from .scores import _check_cv, _pearson, _probe_accuracy, default_probe

__all__ = [
    "neuron_correlation",
    "neuron_mean_difference",
    "neuron_shift",
    "neuron_table",
    "probe_layers",
    "random_neuron_shift",
    "top_neurons",
]

Acts = Activations | Float[Tensor, "n layer d_mlp"]


def _unpack(acts: Acts, site: str) -> tuple[Tensor, tuple[int, ...] | None, str]:
    """The ``[n, layer, width]`` tensor, its model layers (None for a raw tensor), fingerprint."""
    if isinstance(acts, Activations):
        return acts[site], acts.layers, acts.model_fingerprint
    x = acts[:, None] if acts.ndim == 2 else acts
    if x.ndim != 3:
        raise ValueError(f"activations must be [n, layer, d_mlp], got {tuple(acts.shape)}")
    return x, None, ""


def _pair(pos: Acts, neg: Acts, site: str) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    xp, lp, fp = _unpack(pos, site)
    xn, ln, fn = _unpack(neg, site)
    if xp.shape[1:] != xn.shape[1:] or (lp and ln and lp != ln):
        raise ValueError(
            f"the groups differ in layers or width: {tuple(xp.shape[1:])} at layers {lp} vs "
            f"{tuple(xn.shape[1:])} at layers {ln}; cache both with the same layers and site"
        )
    if fp and fn and fp != fn:
        raise ValueError(f"the groups come from different models ({fp}, {fn})")
    if len(xp) == 0 or len(xn) == 0:
        raise ValueError(f"both groups need rows, got {len(xp)} and {len(xn)}")
    return xp, xn, lp or ln or tuple(range(xp.shape[1]))


def _layer64(x: Tensor, i: int) -> np.ndarray:
    out = x[:, i].detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(out).all():
        raise ValueError("activations contain NaN or inf; recache with dtype=torch.float32")
    return out


def neuron_mean_difference(
    pos: Acts, neg: Acts, *, site: str = "mlp_post"
) -> Float[Tensor, "layer neuron"]:
    """Float64 ``mean(pos) - mean(neg)`` of every neuron at every cached layer.

    Example:
        >>> pos = torch.tensor([[[1.0, 0.0]], [[3.0, 0.0]]])
        >>> neg = torch.tensor([[[0.0, 1.0]]])
        >>> neuron_mean_difference(pos, neg).tolist()
        [[2.0, -1.0]]
    """
    xp, xn, _ = _pair(pos, neg, site)
    diff = [_layer64(xp, i).mean(0) - _layer64(xn, i).mean(0) for i in range(xp.shape[1])]
    return torch.from_numpy(np.stack(diff))


def neuron_correlation(
    acts: Acts, label: Any, *, site: str = "mlp_post"
) -> Float[Tensor, "layer neuron"]:
    """Pearson correlation of every neuron with a per-row label (binary or continuous).

    A neuron that is constant over the rows gets ``nan``.

    Example:
        >>> x = torch.tensor([[[1.0, 5.0]], [[2.0, 5.0]], [[4.0, 5.0]]])
        >>> neuron_correlation(x, [0.0, 1.0, 2.0]).round(decimals=4).tolist()
        [[0.982, nan]]
    """
    x, _, _ = _unpack(acts, site)
    y = np.asarray(label.cpu() if isinstance(label, Tensor) else label, dtype=np.float64)
    if y.shape != (x.shape[0],) or not np.isfinite(y).all() or np.ptp(y) == 0:
        raise ValueError(f"label must be {x.shape[0]} finite values, not all equal")
    return torch.from_numpy(np.stack([_pearson(_layer64(x, i).T, y) for i in range(x.shape[1])]))


def neuron_table(pos: Acts, neg: Acts, *, site: str = "mlp_post") -> pd.DataFrame:
    """One row per neuron: ``layer, neuron, mean_pos, mean_neg, mean_diff, corr``.

    ``corr`` is the Pearson correlation with the label 1 for ``pos`` rows and 0 for ``neg``
    rows; ``layer`` is the model layer (``0..`` for raw tensors).

    Example:
        >>> pos = torch.tensor([[[1.0, 0.0]], [[3.0, 1.0]]])
        >>> neg = torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]])
        >>> neuron_table(pos, neg)[["neuron", "mean_diff", "corr"]].values.round(3).tolist()
        [[0.0, 2.0, 0.816], [1.0, 0.0, 0.0]]
    """
    xp, xn, layers = _pair(pos, neg, site)
    y = np.r_[np.ones(len(xp)), np.zeros(len(xn))]
    frames = []
    for i, layer in enumerate(layers):
        a, b = _layer64(xp, i), _layer64(xn, i)
        mp, mn = a.mean(0), b.mean(0)
        corr = _pearson(np.concatenate([a, b]).T, y)
        frames.append(
            pd.DataFrame(
                dict(
                    layer=layer,
                    neuron=np.arange(len(mp)),
                    mean_pos=mp,
                    mean_neg=mn,
                    mean_diff=mp - mn,
                    corr=corr,
                )
            )
        )
    return pd.concat(frames, ignore_index=True)


def top_neurons(
    scores: pd.DataFrame | Float[Tensor, "layer neuron"],
    k: int,
    *,
    by: str = "mean_diff",
    per_layer: bool = True,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The ``k`` neurons of largest ``|by|``, in each layer (``per_layer``) or over all layers.

    Args:
        scores: a `neuron_table`, or a ``[layer, neuron]`` tensor (its values become column
            ``by``; ``layers`` names its rows, default ``0..``).
        k: neurons to keep (per layer when ``per_layer``).
        by: the column ranked by absolute value, e.g. ``"mean_diff"`` or ``"corr"``.

    Returns:
        The kept rows with a 1-based ``rank`` (within the layer when ``per_layer``), sorted by
        layer then rank (or by rank); ``nan`` ranks last, ties go to the lower neuron index.

    Example:
        >>> top_neurons(torch.tensor([[0.1, -3.0, 2.0]]), 2, by="corr").values.tolist()
        [[0.0, 1.0, -3.0, 1.0], [0.0, 2.0, 2.0, 2.0]]
    """
    if isinstance(scores, Tensor):
        rows = list(layers) if layers is not None else list(range(scores.shape[0]))
        grid = np.array(np.meshgrid(rows, np.arange(scores.shape[1]), indexing="ij"))
        values = scores.detach().cpu().double().numpy().ravel()
        scores = pd.DataFrame(dict(layer=grid[0].ravel(), neuron=grid[1].ravel(), **{by: values}))
    if by not in scores.columns:
        raise KeyError(f"no column {by!r}; the table has {list(scores.columns)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    key = scores[by].abs().fillna(-1.0)  # nan sorts after every real value
    df = scores.assign(_key=-key).sort_values(["_key", "layer", "neuron"], kind="stable")
    group = df.groupby("layer", sort=False) if per_layer else None
    df["rank"] = group.cumcount() + 1 if group is not None else np.arange(1, len(df) + 1)
    df = df[df["rank"] <= k].drop(columns="_key")
    return df.sort_values(["layer", "rank"] if per_layer else ["rank"]).reset_index(drop=True)


def neuron_shift(top: pd.DataFrame, alpha: float = 1.0, *, positions: Any = "all") -> NeuronShift:
    """`NeuronShift` with ``delta_i = alpha * mean_diff_i`` for the rows of ``top``, written at
    ``positions`` (``"all"``, ``"prompt"``, ``"generated"`` or a selector such as `last()`).

    Example:
        >>> top = pd.DataFrame(dict(layer=[2, 2], neuron=[5, 0], mean_diff=[0.5, -1.0]))
        >>> neuron_shift(top, alpha=2.0).shifts
        {2: ((5, 0), (1.0, -2.0))}
    """
    if "mean_diff" not in top.columns:
        raise KeyError("neuron_shift needs a mean_diff column (use a neuron_table's rows)")
    shifts = {
        int(layer): (
            tuple(int(i) for i in g["neuron"]),
            tuple(float(alpha) * float(d) for d in g["mean_diff"]),
        )
        for layer, g in top.groupby("layer", sort=True)
    }
    return NeuronShift(shifts=shifts, positions=positions)


def random_neuron_shift(
    shift: NeuronShift,
    d_mlp: int | LensModel,
    *,
    generator: torch.Generator | None = None,
    exclude_chosen: bool = True,
) -> NeuronShift:
    """The random-neuron control of ``shift``: in each of its layers, as many random neurons
    (other than the chosen ones when ``exclude_chosen``) given the layer's deltas in a random
    order, written where ``shift`` writes (its sites and positions). Seeded by ``generator``
    (default ``torch.Generator().manual_seed(0)``).

    Example:
        >>> op = NeuronShift(shifts={1: ((0, 1), (0.5, -0.5))})
        >>> ctl = random_neuron_shift(op, 6, generator=torch.Generator().manual_seed(0))
        >>> sorted(ctl.shifts[1][1]), set(ctl.shifts[1][0]) & {0, 1}
        ([-0.5, 0.5], set())
    """
    width = d_mlp.d_mlp if isinstance(d_mlp, LensModel) else int(d_mlp)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    shifts = {}
    for layer, (idx, deltas) in shift.shifts.items():
        chosen = [int(i) for i in idx]
        pool = torch.tensor([i for i in range(width) if not exclude_chosen or i not in chosen])
        if len(pool) < len(chosen):
            raise ValueError(f"layer {layer}: {len(pool)} neurons left to draw {len(chosen)}")
        picked = pool[torch.randperm(len(pool), generator=gen)[: len(chosen)]]
        order = torch.randperm(len(chosen), generator=gen)
        shifts[layer] = (
            tuple(int(i) for i in picked),
            tuple(float(deltas[int(j)]) for j in order),
        )
    return replace(shift, shifts=shifts)


def probe_layers(
    pos: Acts,
    neg: Acts,
    *,
    site: str = "mlp_post",
    cv_folds: int = 5,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    probe: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Cross-validated accuracy of a linear probe telling ``pos`` from ``neg``, per layer.

    The probe (default `liref_lens.scores.default_probe`) sees all neurons of one layer; folds
    are seeded ``StratifiedKFold``, or ``GroupKFold`` over ``groups`` (one id per row, ``pos``
    rows first). Returns columns ``layer, probe_acc`` (mean fold accuracy).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> pos, neg = torch.randn(10, 1, 3, generator=g) + 3, torch.randn(10, 1, 3, generator=g)
        >>> probe_layers(pos, neg, cv_folds=2, progress=False).values.tolist()
        [[0.0, 1.0]]
    """
    xp, xn, layers = _pair(pos, neg, site)
    gid = _check_cv(len(xp), len(xn), groups, cv_folds)
    probe = probe if probe is not None else default_probe()
    y = np.r_[np.ones(len(xp), int), np.zeros(len(xn), int)]
    rows = []
    for i, layer in enumerate(tqdm(layers, desc="probing", disable=not progress)):
        x = np.concatenate([_layer64(xp, i), _layer64(xn, i)])
        rows.append((layer, _probe_accuracy(x, y, gid, cv_folds, seed, probe)[0]))
    return pd.DataFrame(rows, columns=["layer", "probe_acc"])
