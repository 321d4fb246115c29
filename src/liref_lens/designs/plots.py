"""Plotly figures of the designs; every function reads a design's DataFrame and returns a
``go.Figure`` (never shown).

- `design_plot`: AUROC by layer for several designs (`design_table`), each with its band and
  its best trivial reader as a dashed line; filled markers where the paired verdict says the
  layer beats every trivial reader.
- `overlap_plot`: items per class in each bin of the nuisance variable, before and after
  matching (`MatchedSample`).
- `transfer_heatmap`: a layer's transfer AUROC (or accuracy) between contrasts next to the
  best trivial reader's (`transfer_matrix`).
- `per_item_plot`: each item's change under steering, per direction kind (fitted, random,
  shuffled, covariance), one panel per subset (`per_item_effects`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..plotting import _COLORS, _band
from .matching import MatchedSample

__all__ = ["design_plot", "overlap_plot", "per_item_plot", "transfer_heatmap"]


def design_plot(table: pd.DataFrame, contrast: str | None = None) -> go.Figure:
    """Held-out AUROC by layer for each design of one contrast, with the baselines.

    Example:
        >>> t = pd.DataFrame({"design": "heldout", "contrast": "c", "layer": [1, 2],
        ...     "value": [0.7, 0.9], "ci_low": [0.6, 0.8], "ci_high": [0.8, 1.0],
        ...     "baseline_auroc": 0.75, "beats_baseline": [False, True]})
        >>> len(design_plot(t).data)
        3
    """
    if contrast is not None:
        table = table[table["contrast"] == contrast]
    if table.empty:
        raise ValueError(f"no rows for contrast {contrast!r}; the table has {set(table)}")
    fig = go.Figure()
    for i, (design, g) in enumerate(table.groupby("design", sort=False)):
        g = g.sort_values("layer")
        color = _COLORS[i % len(_COLORS)]
        fig.add_trace(_band(g["layer"], g["ci_low"], g["ci_high"], color, str(design)))
        beats = g["beats_baseline"].fillna(False).astype(bool)
        fig.add_trace(
            go.Scatter(
                x=g["layer"], y=g["value"], mode="lines+markers", name=str(design),
                line={"color": color},
                marker={"symbol": ["circle" if b else "circle-open" for b in beats], "size": 8},
            )
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=g["layer"], y=g["baseline_auroc"], mode="lines", showlegend=False,
                line={"color": color, "dash": "dash", "width": 1},
                name=f"{design}: best trivial reader",
            )
        )  # fmt: skip
    title = "held-out AUROC by layer" + (f" ({contrast})" if contrast else "")
    fig.update_layout(
        title=title + "<br><sup>dashed: best trivial reader; filled: beats it (paired)</sup>",
        xaxis_title="layer", yaxis_title="AUROC", template="plotly_white",
    )  # fmt: skip
    return fig


def overlap_plot(sample: MatchedSample) -> go.Figure:
    """Items per class in each bin before matching, and kept per class after.

    Example:
        >>> from liref_lens.designs import match_classes
        >>> len(overlap_plot(match_classes([1, 2, 2], [2, 3], min_items=1)).data)
        3
    """
    b = sample.bins
    x = [str(v) for v in b["bin"]]
    fig = go.Figure([
        go.Bar(x=x, y=b["n_pos"], name="positive, before", marker_color=_COLORS[0], opacity=0.5),
        go.Bar(x=x, y=b["n_neg"], name="negative, before", marker_color=_COLORS[1], opacity=0.5),
        go.Bar(x=x, y=b["kept"], name="kept per class", marker_color=_COLORS[2]),
    ])  # fmt: skip
    after = sample.overlap.set_index("stage")
    fig.update_layout(
        barmode="group", template="plotly_white", xaxis_title=sample.on, yaxis_title="items",
        title=f"matching on {sample.on}: {int(after.loc['after', 'n_pos'])} items per class "
        f"kept ({after.loc['after', 'share_kept']:.0%} of the smaller class)",
    )  # fmt: skip
    return fig


def transfer_heatmap(matrix: pd.DataFrame, layer: int, value: str = "auroc") -> go.Figure:
    """The layer's ``value`` (``auroc`` or ``acc``) for each train -> test pair, next to the
    best trivial reader's; a star marks cells where the layer beats every trivial reader.

    Example:
        >>> m = pd.DataFrame({"train": ["a", "a"], "test": ["a", "a"],
        ...     "reader": ["layer", "length"], "layer": [3, None], "auroc": [0.9, 0.6],
        ...     "acc": [0.8, 0.5], "beats_baseline": [True, None]})
        >>> len(transfer_heatmap(m, layer=3).data)
        2
    """
    names = list(dict.fromkeys([*matrix["train"], *matrix["test"]]))
    lay = matrix[(matrix["reader"] == "layer") & (matrix["layer"] == layer)]
    if lay.empty:
        raise ValueError(f"no layer {layer} in the matrix; it holds {sorted(set(matrix.layer))}")
    base = matrix[matrix["reader"] != "layer"].groupby(["train", "test"])[value].max()
    lay = lay.set_index(["train", "test"])

    def grid(get: Any) -> list[list[float]]:
        return [[get(a, b) for b in names] for a in names]

    z_lay = grid(lambda a, b: float(lay[value].get((a, b), float("nan"))))
    z_base = grid(lambda a, b: float(base.get((a, b), float("nan"))))
    star = grid(lambda a, b: bool(lay["beats_baseline"].get((a, b), False) is True))
    text = [[f"{v:.2f}{'*' if s else ''}" for v, s in zip(r, t, strict=True)]
            for r, t in zip(z_lay, star, strict=True)]  # fmt: skip
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"layer {layer}", "best trivial reader"))
    for col, z, txt in ((1, z_lay, text), (2, z_base, [[f"{v:.2f}" for v in r] for r in z_base])):
        fig.add_trace(
            go.Heatmap(z=z, x=names, y=names, zmin=0.5 if value == "auroc" else 0.0, zmax=1.0,
                       colorscale="Viridis", text=txt, texttemplate="%{text}",
                       showscale=col == 2),
            row=1, col=col,
        )  # fmt: skip
    fig.update_yaxes(title_text="fitted on", autorange="reversed")
    fig.update_xaxes(title_text="scored on")
    fig.update_layout(title=f"transfer {value} (diagonal: held out; *: beats every trivial "
                      "reader, paired)", template="plotly_white")  # fmt: skip
    return fig


def per_item_plot(
    effects: pd.DataFrame,
    *,
    op: str = "add",
    layer: int | None = None,
    alpha: float | None = None,
    label: str = "change in p(correct)",
) -> go.Figure:
    """Each item's change under steering: one box with every item per direction kind,
    one panel per subset; the x labels give the share moved the wrong way.

    Example:
        >>> e = pd.DataFrame({"op": "add", "layer": 1, "alpha": 1.0, "subset": "s",
        ...     "direction": ["fitted", "random"], "delta": [0.1, -0.2],
        ...     "wrong_way": [False, True]})
        >>> len(per_item_plot(e).data)
        2
    """
    e = effects[effects["op"] == op]
    chosen: dict[str, Any] = {"layer": layer, "alpha": alpha}
    for name, v in chosen.items():
        if v is None:
            choices = sorted(set(e[name]))
            if len(choices) != 1:
                raise ValueError(f"the effects hold {name}s {choices}; pass {name}=one of them")
            chosen[name] = v = choices[0]
        e = e[e[name] == v]
    subsets = sorted(set(e["subset"]))
    fig = make_subplots(rows=1, cols=len(subsets), subplot_titles=subsets, shared_yaxes=True)
    kinds = list(dict.fromkeys(["fitted", *e["direction"]]))
    for col, subset in enumerate(subsets, start=1):
        g = e[e["subset"] == subset]
        for i, kind in enumerate(kinds):
            k = g[g["direction"] == kind]
            if k.empty:
                continue
            wrong = float(k["wrong_way"].mean())
            fig.add_trace(
                go.Box(y=k["delta"], x=[f"{kind}<br>wrong way {wrong:.0%}"] * len(k),
                       name=kind, boxpoints="all", jitter=0.4, pointpos=0,
                       marker_color=_COLORS[i % len(_COLORS)], showlegend=col == 1),
                row=1, col=col,
            )  # fmt: skip
    fig.update_yaxes(title_text=label, row=1, col=1)
    fig.update_layout(
        title=f"per-item effect of {op} at layer {chosen['layer']}, alpha {chosen['alpha']:+g} "
        "(controls pooled "
        "over their draws)", template="plotly_white",
    )  # fmt: skip
    return fig
