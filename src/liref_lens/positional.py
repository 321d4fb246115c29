"""Position-aware directions: one direction per (layer, position), and where the decision sits.

In small trained models the last token's difference of means can separate two modes perfectly
yet not change behaviour when added, while a per-position difference of means does (see the
testbed notes in the docs). This module fits, applies and ranks directions indexed by layer
**and** position:

- positions are selectors from `liref_lens.positions`: relative to the end of the prompt
  (``at(-1)`` is the last token, ``at(-2)`` the one before, ...), relative to the start
  (``at(0)``, ...), or a named per-prompt `span` (e.g. the cue words a task marks; convert
  character spans with `token_spans`). Prompts of different lengths are aligned by these
  rules, per row and whatever the padding, never by raw column index;
- `fit_by_position` caches each position and fits one `DirectionSet` per position;
- `PositionalDirections.ops` applies each position's vector at its own position only; prompt
  positions outside the fitted set are left alone unless a ``fallback`` vector is given, and
  generated tokens get nothing unless ``generated=`` names the vector to use there;
- `rank_positions` scores every (layer, position) by separation (AUROC) and, given an
  `EvalSet`, by causal effect against norm-matched random directions, and returns a tidy table
  and the best pair; `liref_lens.plotting.layer_position_heatmap` draws it.

Memory: one `Activations` per position (``n x layers x d_model``) while fitting.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .cache import cache_activations
from .directions import DirectionSet, Fitter, fit_directions
from .experiment import EvalSet, Experiment, ExperimentConfig
from .interventions import Add, Compose, Op
from .model import LensModel
from .positions import Position, Selection
from .scores import separation

__all__ = ["PositionalDirections", "fit_by_position", "rank_positions", "token_spans"]


def token_spans(
    model: LensModel,
    prompts: Sequence[str],
    char_spans: Sequence[tuple[int, int]],
    *,
    prepend_bos: bool | None = None,
) -> list[tuple[int, int]]:
    """Token ``(start, end)`` offsets (as `span` wants) of character spans of each prompt.

    A token belongs to the span when its characters overlap ``[char_start, char_end)``.
    Offsets count from the first real token, BOS included when the model prepends one.
    """
    if len(char_spans) != len(prompts):
        raise ValueError(f"got {len(char_spans)} spans for {len(prompts)} prompts")
    tok = model.tokenizer
    full = model.encode(prompts, prepend_bos=prepend_bos)
    out = []
    for i, (prompt, (c0, c1)) in enumerate(zip(prompts, char_spans, strict=True)):
        enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
        shift = len(full[i]) - len(enc["input_ids"])
        hits = [k for k, (a, b) in enumerate(enc["offset_mapping"]) if a < c1 and b > c0]
        if not hits:
            raise ValueError(f"characters {c0}..{c1} of prompt {i} cover no token: {prompt!r}")
        out.append((hits[0] + shift, hits[-1] + 1 + shift))
    return out


@dataclass(frozen=True)
class _Outside:
    """Prompt tokens that none of ``selectors`` picks (for the fallback vector)."""

    selectors: tuple[Position, ...]

    def select(self, attention_mask: torch.Tensor, row_ids: list[int] | None = None) -> Selection:
        taken = torch.zeros_like(attention_mask, dtype=torch.bool)
        for sel in self.selectors:
            shape = (attention_mask.shape[0], attention_mask.shape[1])
            taken |= sel.select(attention_mask, row_ids).mask(shape)
        free = attention_mask.bool() & ~taken
        row, col = free.nonzero(as_tuple=True)
        k = row.shape[0]
        arange = torch.arange(k, device=row.device)
        return Selection(row, col, arange, torch.ones(k, device=row.device), row, arange)

    def __str__(self) -> str:
        return "outside(" + ",".join(str(s) for s in self.selectors) + ")"


@dataclass(frozen=True)
class PositionalDirections:
    """One `DirectionSet` per named position, with the selector that defines the position."""

    sets: Mapping[str, DirectionSet]
    selectors: Mapping[str, Position]

    def __post_init__(self) -> None:
        if set(self.sets) != set(self.selectors) or not self.sets:
            raise ValueError("sets and selectors must name the same, non-empty positions")

    @property
    def positions(self) -> list[str]:
        return list(self.sets)

    def at(self, layer: int, position: str) -> torch.Tensor:
        if position not in self.sets:
            raise KeyError(f"no position {position!r}; fitted: {self.positions}")
        return self.sets[position].at(layer)

    def ops(
        self,
        layers: Sequence[int],
        alpha: float = 1.0,
        *,
        positions: Sequence[str] | None = None,
        fallback: str | None = None,
        generated: str | None = None,
        site: str = "resid_pre",
    ) -> Compose:
        """`Add` ops putting each position's vector (x ``alpha``) at that position only.

        Args:
            positions: which fitted positions to apply (default all).
            fallback: a fitted position whose vector is added at every other prompt token
                (default: other tokens are left alone).
            generated: a fitted position whose vector is added at generated tokens (default:
                generated tokens are left alone).
        """
        names = list(positions) if positions is not None else self.positions

        def add(name: str, where: Any) -> Op:
            return Add(
                direction=self.sets[name],
                alpha=alpha,
                layers=layers,
                sites=(site,),
                positions=where,
            )

        ops = [add(name, self.selectors[name]) for name in names]
        if fallback is not None:
            ops.append(add(fallback, _Outside(tuple(self.selectors[n] for n in names))))
        if generated is not None:
            ops.append(add(generated, "generated"))
        return Compose(ops=tuple(ops))


def fit_by_position(
    model: LensModel,
    prompts: Sequence[str],
    labels: Sequence[str],
    positions: Mapping[str, Position],
    *,
    classes: tuple[str, str] = ("reasoning", "memory"),
    layers: Sequence[int] | None = None,
    site: str = "resid_pre",
    method: Fitter | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> PositionalDirections:
    """Fit a direction per layer at each named position (``classes[0]`` minus ``classes[1]``).

    Example:
        >>> from liref_lens import at
        >>> where = {"last": at(-1), "cue": at(1)}
        >>> pdirs = fit_by_position(lm, prompts, labels, where, layers=[1, 2])
        >>> pdirs.at(2, "cue").shape
        torch.Size([32])
    """
    if len(labels) != len(prompts):
        raise ValueError(f"got {len(labels)} labels for {len(prompts)} prompts")
    pos_rows = [i for i, lab in enumerate(labels) if lab == classes[0]]
    neg_rows = [i for i, lab in enumerate(labels) if lab == classes[1]]
    if not pos_rows or not neg_rows:
        raise ValueError(f"both classes {classes} need prompts; got labels {sorted(set(labels))}")
    sets = {}
    for name, selector in positions.items():
        acts = cache_activations(
            model,
            prompts,
            layers=layers,
            sites=(site,),
            position=selector,
            batch_size=batch_size,
            progress=progress,
        )
        sets[name] = fit_directions(
            acts.subset(pos_rows), acts.subset(neg_rows), method, classes=classes, model=model
        )
    return PositionalDirections(sets, dict(positions))


def rank_positions(
    model: LensModel,
    prompts: Sequence[str],
    labels: Sequence[str],
    directions: PositionalDirections,
    *,
    classes: tuple[str, str] = ("reasoning", "memory"),
    evalset: EvalSet | None = None,
    metric: str = "acc",
    alpha: float = 1.0,
    n_random: int = 10,
    seed: int = 0,
    n_boot: int = 200,
    batch_size: int = 32,
    out_dir: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score every (layer, position): AUROC and, with ``evalset``, causal effect vs random.

    The causal effect of (layer, position) is the change of ``metric`` on ``evalset`` when
    that position's vector (x ``alpha``) is added at that position of that layer, minus the
    mean change for ``n_random`` norm-matched random directions added the same way.
    ``batch_size`` is the number of prompts per forward pass, for caching and steering.

    Returns:
        A tidy table (layer, position, score, value, ci_low, ci_high) with scores ``auroc``
        and, with ``evalset``, ``effect``, ``effect_random`` and ``effect_vs_random``; and
        the best pair by ``effect_vs_random`` (else by ``auroc``).
    """
    rows = []
    pos_rows = [i for i, lab in enumerate(labels) if lab == classes[0]]
    neg_rows = [i for i, lab in enumerate(labels) if lab == classes[1]]
    for name, ds in directions.sets.items():
        acts = cache_activations(
            model,
            prompts,
            layers=list(ds.layers),
            sites=(ds.site or "resid_pre",),
            position=directions.selectors[name],
            batch_size=batch_size,
            progress=False,
        )
        sep = separation(
            acts.subset(pos_rows),
            acts.subset(neg_rows),
            ds,
            scores=("auroc",),
            n_boot=n_boot,
            seed=seed,
            progress=False,
        )
        rows += [(r.layer, name, "auroc", r.value, r.ci_low, r.ci_high) for r in sep.itertuples()]
        if evalset is None:
            continue
        config = ExperimentConfig(
            layers=tuple(ds.layers),
            alphas=(alpha,),
            ops=("add",),
            n_random=n_random,
            seed=seed,
            n_boot=n_boot,
            batch_size=batch_size,
        )
        exp = Experiment(model, ds, evalset, config, rule=directions.selectors[name])
        with tempfile.TemporaryDirectory() as tmp:
            t = exp.run(Path(out_dir or tmp) / name, progress=False).table
        t = t[(t["metric"] == metric) & (t["subset"] == "all")]
        base = float(t[t["op"] == "baseline"]["value"].iloc[0])
        for layer in ds.layers:
            cell = t[(t["op"] == "add") & (t["layer"] == layer)]
            fitted = cell[cell["control"] < 0].iloc[0]
            rand = cell[cell["control"] >= 0]["value"]
            effect, effect_random = fitted["value"] - base, float(rand.mean()) - base
            rows += [
                (layer, name, "effect", effect, fitted["ci_low"] - base, fitted["ci_high"] - base),
                (
                    layer,
                    name,
                    "effect_random",
                    effect_random,
                    float(rand.min()) - base,
                    float(rand.max()) - base,
                ),
                (
                    layer,
                    name,
                    "effect_vs_random",
                    effect - effect_random,
                    float("nan"),
                    float("nan"),
                ),
            ]
    table = pd.DataFrame(rows, columns=["layer", "position", "score", "value", "ci_low", "ci_high"])
    key = "effect_vs_random" if evalset is not None else "auroc"
    top = table[table["score"] == key].sort_values("value", ascending=False).iloc[0]
    return table, {
        "layer": int(top["layer"]),
        "position": top["position"],
        "score": key,
        "value": float(top["value"]),
    }
