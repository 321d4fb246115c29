"""Per-item steerability: each question's effect under steering, not only the average.

From an experiment's per-prompt values (`liref_lens.Results.per_prompt`), `per_item_effects`
gives every (cell, prompt): the metric before (the unsteered baseline) and after, their
difference ``delta``, whether the top candidate changed (``flip``), whether it changed to or
from the correct one, and whether the item moved **the wrong way**: against the intended sign
``expect`` by more than ``tol``. ``expect`` is the sign of the change a positive alpha is
meant to cause (per subset if a mapping; a negative alpha means the opposite sign), e.g.
``{"gsm8k": +1, "nq_open": -1}`` when adding the reasoning direction should help reasoning
questions and hurt recall. Each control is labelled with its kind (``random``, ``shuffled``,
``covariance``; `liref_lens.ExperimentConfig.controls`).

`steerability_summary` turns the items into shares per cell and subset: for the fitted
direction with a bootstrap interval over items, for each control kind the mean over its
controls with their range. The per-item distribution is drawn by
`liref_lens.designs.plots.per_item_plot`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..experiment import Results
from ..metrics import mean_ci

__all__ = ["STATISTICS", "per_item_effects", "steerability_summary"]

STATISTICS = (
    "mean_delta", "median_delta", "share_up", "share_down", "share_wrong_way", "share_flip",
    "share_flip_to_correct", "share_flip_to_wrong",
)  # fmt: skip
_KEYS = ["op", "layer", "alpha", "control", "prompt"]


def _sign(expect: int | Mapping[str, int], subset: str) -> int:
    s = expect.get(subset, 0) if isinstance(expect, Mapping) else expect
    if s not in (-1, 0, 1):
        raise ValueError(f"expect must be +1, -1 (or 0: no intended sign), got {s!r}")
    return int(s)


def per_item_effects(
    results: Results,
    *,
    metric: str = "p_correct",
    expect: int | Mapping[str, int] = 1,
    tol: float = 0.0,
) -> pd.DataFrame:
    """One row per steered cell and prompt: the item's change under steering.

    Returns columns ``op, layer, alpha, control, direction, subset, prompt, before, after,
    delta, flip, flip_to_correct, flip_to_wrong, wrong_way``. ``flip*`` need the ``acc`` and
    ``flip`` metrics (an eval set with candidates); without them they are NaN. Subsets
    ``expect`` does not name have no intended sign (``wrong_way`` False).

    Example:
        >>> from liref_lens import Experiment, ExperimentConfig
        >>> cfg = ExperimentConfig(layers=(1,), n_random=1, n_boot=10)
        >>> res = Experiment(lm, ds, evalset, cfg).run(tmp / "e", progress=False)
        >>> e = per_item_effects(res)
        >>> sorted(set(e["direction"])), len(e) == 2 * len(evalset.prompts)
        (['fitted', 'random'], True)
    """
    pp = results.per_prompt
    if metric not in set(pp["metric"]):
        raise ValueError(
            f"the results have no metric {metric!r}; they hold {sorted(set(pp.metric))}"
        )
    wide = pp.pivot_table(index=[*_KEYS, "subset"], columns="metric", values="value",
                          aggfunc="first").reset_index()  # fmt: skip
    base = wide[wide["op"] == "baseline"].set_index("prompt")
    out = wide[wide["op"] != "baseline"].copy()
    before = base[metric].reindex(out["prompt"]).to_numpy()
    out["before"], out["after"] = before, out[metric].to_numpy()
    out["delta"] = out["after"] - out["before"]
    out["direction"] = [results.config.control_kind(int(c)) for c in out["control"]]
    if {"acc", "flip"} <= set(wide.columns):
        acc0 = base["acc"].reindex(out["prompt"]).to_numpy()
        out["flip_to_correct"] = ((acc0 == 0) & (out["acc"] == 1)).astype(float)
        out["flip_to_wrong"] = ((acc0 == 1) & (out["acc"] == 0)).astype(float)
    else:
        out["flip"] = out["flip_to_correct"] = out["flip_to_wrong"] = np.nan
    signs = np.array([_sign(expect, s) for s in out["subset"]]) * np.sign(out["alpha"])
    out["wrong_way"] = (signs != 0) & (out["delta"] * signs < -tol)
    cols = ["op", "layer", "alpha", "control", "direction", "subset", "prompt", "before",
            "after", "delta", "flip", "flip_to_correct", "flip_to_wrong", "wrong_way"]  # fmt: skip
    return out[cols].sort_values(_KEYS).reset_index(drop=True)


def _stats(g: pd.DataFrame, tol: float) -> dict[str, np.ndarray]:
    d = g["delta"].to_numpy()
    return {
        "mean_delta": d, "median_delta": d, "share_up": (d > tol).astype(float),
        "share_down": (d < -tol).astype(float),
        "share_wrong_way": g["wrong_way"].to_numpy(float), "share_flip": g["flip"].to_numpy(),
        "share_flip_to_correct": g["flip_to_correct"].to_numpy(),
        "share_flip_to_wrong": g["flip_to_wrong"].to_numpy(),
    }  # fmt: skip


def steerability_summary(
    effects: pd.DataFrame,
    *,
    tol: float = 0.0,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Shares of items moved per cell, subset (and ``"all"``) and direction kind.

    Returns ``op, layer, alpha, subset, direction, statistic, value, ci_low, ci_high,
    n_items, n_controls, control_min, control_max``, statistics as in `STATISTICS`. For the
    fitted direction ``value`` is over its items, with a percentile-bootstrap interval of
    the mean (medians have none); for a control kind it is the mean over its controls and
    ``control_min`` / ``control_max`` their range (``ci_*`` NaN).

    Example:
        >>> e = pd.DataFrame({"op": "add", "layer": 1, "alpha": 1.0, "control": -1,
        ...     "direction": "fitted", "subset": "s", "prompt": [0, 1], "delta": [0.2, -0.1],
        ...     "flip": 0.0, "flip_to_correct": 0.0, "flip_to_wrong": 0.0,
        ...     "wrong_way": [False, True]})
        >>> s = steerability_summary(e, n_boot=0).query("subset == 's'").set_index("statistic")
        >>> float(s.loc["share_wrong_way", "value"]), float(s.loc["mean_delta", "value"])
        (0.5, 0.05)
    """
    every = pd.concat([effects[effects["subset"] != "all"].assign(subset="all"), effects])
    every = every.drop_duplicates(["op", "layer", "alpha", "control", "subset", "prompt"])
    rows: list[tuple[Any, ...]] = []
    for (op, layer, alpha, subset, kind), g in every.groupby(
        ["op", "layer", "alpha", "subset", "direction"], sort=True
    ):
        per_control = {c: _stats(gc, tol) for c, gc in g.groupby("control")}
        n_items = int(g["prompt"].nunique())
        for stat in STATISTICS:
            vals = {
                c: float(np.median(v[stat]) if stat == "median_delta" else np.mean(v[stat]))
                for c, v in per_control.items()
            }
            lo = hi = float("nan")
            if kind == "fitted":
                (value,) = vals.values()
                x = next(iter(per_control.values()))[stat]
                if stat != "median_delta" and n_boot and np.isfinite(x).all():
                    key = repr((op, layer, alpha, subset, stat)).encode()
                    s = seed + int(hashlib.sha256(key).hexdigest()[:8], 16)
                    _, lo, hi = mean_ci(x, n_boot=n_boot, level=ci, seed=s)
            else:
                value = float(np.mean(list(vals.values())))
            rng = list(vals.values())
            rows.append((op, layer, alpha, subset, kind, stat, value, lo, hi, n_items,
                         len(vals), min(rng), max(rng)))  # fmt: skip
    cols = ["op", "layer", "alpha", "subset", "direction", "statistic", "value", "ci_low",
            "ci_high", "n_items", "n_controls", "control_min", "control_max"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)
