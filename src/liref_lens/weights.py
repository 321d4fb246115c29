"""Reversible weight edits: LASER rank truncation and a project-out baked into the weights.

`truncate` replaces one weight matrix of one layer (or several) with its rank
``max(1, floor(rho * max_rank))`` SVD approximation (LASER, Sharma et al. 2023) and
`orthogonalize` removes a direction from everything that writes to the residual stream (the
embeddings, ``W_O`` and ``W_out`` with their biases). Both are context managers: the edit is
made in place, under ``torch.no_grad()``, on the tensor the forward pass actually reads, and the
original is copied back bit-exactly on exit, also when the body raises. `search_truncation`
picks the best ``(matrix, layer, rho)`` on a validation split and reports it on a held-out one.

The matrix names follow TransformerLens and are read as ``[d_in, d_out]`` (``x @ W``):

- ``W_Q``/``W_K``/``W_V``: every head stacked, ``[d_model, n_heads * d_head]`` (with
  grouped-query attention ``W_K``/``W_V`` hold the key-value heads only);
  ``W_O``: ``[n_heads * d_head, d_model]``.
- ``W_in``: ``[d_model, d_mlp]``, in a gated MLP (Llama) the *up* projection, which is what
  LASER's "input matrix" means there; ``W_gate`` (gated MLPs only) is the gate projection.
- ``W_out``: ``[d_mlp, d_model]``.

Where the weights live: a legacy ``HookedTransformer`` holds them as parameters of its blocks
(``blocks[l].attn.W_Q`` ``[n_heads, d_model, d_head]``, ``_W_K`` under grouped-query attention,
``blocks[l].mlp.W_in``...). A TransformerLens 4 ``TransformerBridge`` runs the wrapped Hugging
Face modules, reached through the bridge components ``blocks[l].attn.q/k/v/o`` and
``blocks[l].mlp.in/out/gate`` (``.original_component``: a ``Linear`` ``[out, in]`` or a GPT-2
``Conv1D`` ``[in, out]``). GPT-2's fused ``c_attn`` is split at load time into ``q``/``k``/``v``
views of it; the forward reads those, so truncating ``W_Q`` edits exactly the Q slice.

Memory: an edit keeps a clone of every tensor it changes until exit; the SVD runs in float64 on
the matrix's device (about four float64 copies of one matrix at a time). Offloaded (meta)
weights under an Accelerate device map cannot be edited.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .model import LensModel

__all__ = [
    "MATRICES",
    "low_rank",
    "orthogonalize",
    "rank_of",
    "keep_singular_directions",
    "search_truncation",
    "truncate",
    "truncation_rank",
    "weight_matrix",
]

#: The matrices `truncate` can edit (``W_gate`` exists in gated MLPs only).
MATRICES = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_gate")
_BRIDGE_PARTS = dict(zip(MATRICES, ("q", "k", "v", "o", "in", "out", "gate"), strict=True))
_HEADS = {"W_Q": "heads_in", "W_K": "heads_in", "W_V": "heads_in", "W_O": "heads_out"}
_DEFAULT_RHOS = (0.5, 0.25, 0.1, 0.05, 0.01)


def _svd(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin float64 SVD on the matrix's device (NumPy's LAPACK on CPU: it does not stall on
    busy cores the way torch's CPU SVD can)."""
    m = matrix.detach().to(torch.float64)
    if m.device.type != "cpu":
        return torch.linalg.svd(m, full_matrices=False)
    u, s, vh = np.linalg.svd(m.numpy(), full_matrices=False)
    return torch.from_numpy(u), torch.from_numpy(s), torch.from_numpy(vh)


def low_rank(matrix: Float[Tensor, "m n"], k: int) -> Float[Tensor, "m n"]:
    """Best rank-``k`` approximation (truncated SVD, float64), returned in the input's dtype.

    Example:
        >>> m = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
        >>> low_rank(m, 1).tolist()
        [[3.0, 0.0], [0.0, 0.0]]
    """
    if matrix.ndim != 2:
        raise ValueError(f"low_rank needs a 2-D matrix, got shape {tuple(matrix.shape)}")
    if not 0 <= k <= min(matrix.shape):
        raise ValueError(f"k must be in 0..{min(matrix.shape)} for shape {tuple(matrix.shape)}")
    u, s, vh = _svd(matrix)
    return ((u[:, :k] * s[:k]) @ vh[:k]).to(matrix.dtype)


def rank_of(matrix: Float[Tensor, "m n"], rtol: float | None = None) -> int:
    """Numerical rank: singular values (float64) above ``rtol`` times the largest.

    ``rtol`` defaults to ``max(m, n) * eps`` of the matrix's own dtype, so rounding a low-rank
    float64 product to float32 does not count as extra rank.

    Example:
        >>> rank_of(torch.outer(torch.arange(1.0, 4.0), torch.ones(5)))
        1
    """
    if rtol is None:
        rtol = max(matrix.shape) * torch.finfo(matrix.dtype).eps
    s = _svd(matrix)[1]
    return int((s > rtol * s.max()).sum()) if s.numel() and float(s.max()) > 0 else 0


def truncation_rank(shape: Sequence[int], rho: float) -> int:
    """The rank LASER keeps: ``max(1, floor(rho * min(shape)))`` for ``0 < rho <= 1``.

    Example:
        >>> truncation_rank((32, 128), 0.25), truncation_rank((32, 128), 0.01)
        (8, 1)
    """
    if isinstance(rho, bool) or not 0 < float(rho) <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho!r}")
    return max(1, math.floor(float(rho) * min(shape) + 1e-9))


def _lens(model: Any) -> LensModel:
    return model if isinstance(model, LensModel) else LensModel(model)


# A slot is a parameter and its layout, the rule that reads it as a [d_in, d_out] matrix:
# "io" [in, out]; "oi" [out, in] (nn.Linear); "heads_in" [head, d_model, d_head];
# "heads_out" [head, d_head, d_model]; "row" a bias [d_out].
Slot = tuple[Tensor, str]


def _as_matrix(param: Tensor, layout: str) -> Tensor:
    p = param.detach()
    if layout == "oi":
        return p.T
    if layout == "heads_in":
        return p.permute(1, 0, 2).reshape(p.shape[1], -1)
    if layout in ("heads_out", "row"):
        return p.reshape(-1, p.shape[-1])
    return p


def _write(param: Tensor, layout: str, matrix: Tensor) -> None:
    if layout == "oi":
        matrix = matrix.T
    elif layout == "heads_in":
        matrix = matrix.reshape(param.shape[1], param.shape[0], param.shape[2]).permute(1, 0, 2)
    with torch.no_grad():
        param.data.copy_(matrix.reshape(param.shape))


def _owner(lm: LensModel, matrix: str, layer: int) -> Any:
    """The component holding ``matrix``: the bridge's HF module, or the legacy attn/mlp."""
    block = lm.model.blocks[layer]
    owner = block.attn if matrix in _HEADS else block.mlp
    if lm.backend == "hooked_transformer":
        return owner
    module = getattr(getattr(owner, _BRIDGE_PARTS[matrix], None), "original_component", None)
    if module is None:
        raise ValueError(f"this {lm.architecture} bridge has no {matrix} at layer {layer}")
    return module


def _slot(lm: LensModel, matrix: str, layer: int) -> Slot:
    """The parameter the forward pass reads for ``matrix`` in block ``layer``, and its layout."""
    if matrix not in MATRICES:
        raise ValueError(f"unknown matrix {matrix!r}; use one of {', '.join(MATRICES)}")
    layer = lm.resolve_layer(layer)
    owner = _owner(lm, matrix, layer)
    if lm.backend == "bridge":
        from transformers.pytorch_utils import Conv1D

        if not isinstance(owner, (torch.nn.Linear, Conv1D)):
            raise TypeError(f"cannot edit a {type(owner).__name__}; expected Linear or Conv1D")
        return owner.weight, "oi" if isinstance(owner, torch.nn.Linear) else "io"
    params = dict(owner.named_parameters(recurse=False))
    param = params.get(f"_{matrix}", params.get(matrix))  # _W_K/_W_V: grouped-query attention
    if param is None:
        raise ValueError(f"this {lm.architecture} model has no {matrix} at layer {layer}")
    return param, _HEADS.get(matrix, "io")


def weight_matrix(model: Any, matrix: str, layer: int) -> Float[Tensor, "d_in d_out"]:
    """A copy of the ``[d_in, d_out]`` matrix the forward pass uses (see the module docstring).

    Example:
        >>> weight_matrix(lm, "W_out", 0).shape  # [d_mlp, d_model]
        torch.Size([48, 32])
    """
    param, layout = _slot(_lens(model), matrix, layer)
    return _as_matrix(param, layout).clone()


@contextmanager
def _restoring(params: Sequence[Tensor]) -> Iterator[None]:
    saved: dict[int, tuple[Tensor, Tensor]] = {}
    for p in params:
        saved.setdefault(id(p), (p, p.detach().clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for p, original in reversed(list(saved.values())):
                p.data.copy_(original)


Edit = tuple[str, int, float]


@contextmanager
def truncate(
    model: Any,
    matrix: str | Sequence[Edit],
    layer: int | None = None,
    rho: float | None = None,
) -> Iterator[list[tuple[str, int, float, int]]]:
    """Replace weight matrices by low-rank approximations inside the block (LASER).

    Args:
        model: a `LensModel` or a TransformerLens model (bridge or ``HookedTransformer``).
        matrix: one of `MATRICES`, or a list of ``(matrix, layer, rho)`` edits applied in order.
        layer: the block (negative counts from the end); with a single ``matrix`` only.
        rho: the kept fraction of the maximal rank, ``0 < rho <= 1`` (`truncation_rank`).

    Yields:
        ``(matrix, layer, rho, rank)`` of every edit made.

    Everything is checked before anything is edited; on exit every edited tensor is restored
    bit-exactly. Contexts nest: an inner one restores the state it found.

    Example:
        >>> with truncate(lm, "W_out", layer=1, rho=0.1) as edits:
        ...     logits = lm.forward(lm.tokenize(prompts))
        >>> with truncate(lm, [("W_out", 1, 0.1), ("W_in", 0, 0.5)]):
        ...     logits = lm.forward(lm.tokenize(prompts))
    """
    lm = _lens(model)
    if isinstance(matrix, str):
        if layer is None or rho is None:
            raise ValueError("truncate(model, matrix, layer, rho) needs a layer and a rho")
        edits: list[Edit] = [(matrix, layer, rho)]
    else:
        if layer is not None or rho is not None:
            raise ValueError("pass layer and rho inside the (matrix, layer, rho) tuples")
        edits = [tuple(e) for e in matrix]  # type: ignore[misc]
        if not edits:
            raise ValueError("no edits given; pass at least one (matrix, layer, rho)")
    if any(len(e) != 3 for e in edits):
        raise ValueError(f"edits must be (matrix, layer, rho) triples, got {edits}")
    plan = []
    for name, lay, r in edits:
        param, layout = _slot(lm, name, lay)
        k = truncation_rank(_as_matrix(param, layout).shape, r)
        plan.append((name, lm.resolve_layer(lay), float(r), k, param, layout))
    with _restoring([p[4] for p in plan]):
        for *_, k, param, layout in plan:
            _write(param, layout, low_rank(_as_matrix(param, layout), k))
        yield [p[:4] for p in plan]


@contextmanager
def keep_singular_directions(
    model: Any, matrix: str, layer: int, indices: Sequence[int]
) -> Iterator[None]:
    """Replace ``matrix`` of ``layer`` by the sum of its singular directions ``indices``
    (``s_i u_i v_i^T``, descending order of ``s``), restored bit-exactly on exit.

    ``indices = range(k)`` is `truncate` to rank ``k``; no indices give the zero matrix.

    Example:
        >>> from liref_lens.weights import rank_of, weight_matrix
        >>> with keep_singular_directions(lm, "W_out", 1, [0, 5]):
        ...     rank_of(weight_matrix(lm, "W_out", 1))
        2
        >>> rank_of(weight_matrix(lm, "W_out", 1))  # restored
        32
    """
    param, layout = _slot(_lens(model), matrix, layer)
    w = _as_matrix(param, layout)
    u, s, vh = _svd(w)
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    if len(set(idx.tolist())) != idx.numel():
        raise ValueError(f"indices must be distinct, got {list(indices)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= s.numel()):
        raise ValueError(f"indices must be in 0..{s.numel() - 1}, got {list(indices)}")
    with _restoring([param]):
        _write(param, layout, ((u[:, idx] * s[idx]) @ vh[idx]).to(w.dtype).to(w.device))
        yield


def _writer_slots(lm: LensModel, layers: list[int], embed: bool) -> list[Slot]:
    """Everything that writes to the residual stream: embeddings, W_O, W_out and biases."""
    slots: list[Slot] = []
    m = lm.model
    if embed:
        for name in ("embed", "pos_embed"):
            mod = getattr(m, name, None)
            if lm.backend == "bridge":
                mod = getattr(mod, "original_component", None)
            params = dict(mod.named_parameters(recurse=False)) if mod is not None else {}
            slots += [(p, "io") for key, p in params.items() if key in ("weight", "W_E", "W_pos")]
    for layer in layers:
        for matrix in ("W_O", "W_out"):
            slots.append(_slot(lm, matrix, layer))
            name = "bias" if lm.backend == "bridge" else matrix.replace("W_", "b_")
            bias = getattr(_owner(lm, matrix, layer), name, None)
            if isinstance(bias, Tensor):
                slots.append((bias, "row"))
    return slots


@contextmanager
def orthogonalize(
    model: Any,
    direction: Float[Tensor, " d_model"],
    layers: int | Sequence[int] | None = None,
    *,
    embed: bool = True,
) -> Iterator[None]:
    """Bake ``h - (h . r) r`` into the weights that write to the residual stream.

    Every writer ``W`` (``[d_in, d_model]``: token and position embeddings when ``embed``,
    ``W_O`` and ``W_out`` of ``layers``, default all) becomes ``W - (W r) r^T`` and each bias
    ``b - (b . r) r``, with ``r`` the unit direction; with every layer and the embeddings, no
    residual stream carries any component along ``r``. Restored bit-exactly on exit. With tied
    embeddings (GPT-2 under the bridge) the unembedding changes too.

    Example:
        >>> with orthogonalize(lm, directions.at(2)):
        ...     logits = lm.forward(lm.tokenize(prompts))
    """
    lm = _lens(model)
    r = direction.detach().flatten().to(torch.float64)
    if r.shape[0] != lm.d_model or not bool(torch.isfinite(r).all()) or float(r.norm()) == 0:
        raise ValueError(f"direction must be a finite nonzero [{lm.d_model}] vector")
    r = r / r.norm()
    slots = _writer_slots(lm, lm.resolve_layers(layers), embed)
    with _restoring([p for p, _ in slots]):
        for param, layout in slots:
            w = _as_matrix(param, layout).to(torch.float64)
            rr = r.to(w.device)
            _write(param, layout, (w - torch.outer(w @ rr, rr)).to(param.dtype))
        yield


def search_truncation(
    model: Any,
    evaluate: Callable[[LensModel, Any], float],
    validation: Any,
    heldout: Any,
    *,
    matrices: Sequence[str] = ("W_in", "W_out"),
    layers: Sequence[int] | None = None,
    rhos: Sequence[float] = _DEFAULT_RHOS,
    higher_is_better: bool = True,
    heldout_all: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Choose ``(matrix, layer, rho)`` on ``validation``, report it on ``heldout`` (LASER).

    Args:
        evaluate: ``evaluate(lm, split) -> float``, e.g. accuracy on ``split``; it runs under
            ``torch.no_grad()``.
        validation: the split ``evaluate`` picks the best point on.
        heldout: the split the best point is reported on.
        matrices: matrix names of the grid.
        layers: layers of the grid (default: every layer).
        rhos: fractions of rank kept, the grid's third axis.
        higher_is_better: maximise the metric (else minimise, e.g. a loss).
        heldout_all: also score every grid point on ``heldout`` (default: baseline and best).

    Returns:
        One row per grid point plus a ``"none"`` baseline row, with columns ``matrix, layer,
        rho, rank, validation, heldout, best`` (``best`` marks the first best grid point).

    Example:
        >>> df = search_truncation(lm, accuracy, val_items, test_items, rhos=(0.5,))
        >>> int(df["best"].sum())
        1
    """
    lm = _lens(model)

    def score(split: Any) -> float:
        with torch.no_grad():
            return float(evaluate(lm, split))

    grid = [(m, la, r) for m in matrices for la in lm.resolve_layers(layers) for r in rhos]
    if not grid:
        raise ValueError("the grid is empty; give matrices, layers and rhos")
    for m, la, r in grid:  # check the whole grid before running anything
        truncation_rank(_as_matrix(*_slot(lm, m, la)).shape, r)
    rows: list[tuple[Any, ...]] = [("none", None, 1.0, None, score(validation), score(heldout))]
    for m, la, r in tqdm(grid, desc="truncation search", disable=not progress):
        with truncate(lm, m, la, r) as done:
            val, test = score(validation), score(heldout) if heldout_all else float("nan")
            rows.append((m, la, float(r), done[0][3], val, test))
    columns = ["matrix", "layer", "rho", "rank", "validation", "heldout"]
    df = pd.DataFrame(rows, columns=columns).astype({"layer": "Int64", "rank": "Int64"})
    scores = df["validation"].iloc[1:].astype(float)
    best = int(scores.idxmax() if higher_is_better else scores.idxmin())
    df["best"] = df.index == best
    if not heldout_all:
        m, la, r = df.loc[best, ["matrix", "layer", "rho"]]
        with truncate(lm, str(m), int(la), float(r)):
            df.loc[best, "heldout"] = score(heldout)
    return df
