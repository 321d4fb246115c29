"""Plotly figures of layer-wise scores, activations and steering results.

Every function takes results (tidy DataFrames from `liref_lens.scores` / `Results.table`, or
tensors) and returns a ``plotly.graph_objects.Figure``; none calls ``.show()``. Figures render
in Jupyter, VS Code and, embedded by `liref_lens.report`, in a self-contained HTML file.
Memory: `pca_scatter` copies one layer of activations to NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

__all__ = [
    "cosine_heatmap",
    "dose_response",
    "layer_position_heatmap",
    "layer_scores",
    "pca_scatter",
    "projection_vs_label",
    "sweep_heatmap",
]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_TITLES = {
    "auroc": "AUROC",
    "probe_acc": "probe accuracy (CV)",
    "cohens_d": "Cohen's d",
    "pearson": "Pearson r",
    "spearman": "Spearman rho",
}


def _band(x: Sequence[Any], lo: Sequence[float], hi: Sequence[float], color: str, name: str) -> Any:
    return go.Scatter(
        x=[*x, *reversed(list(x))],
        y=[*hi, *reversed(list(lo))],
        mode="lines",  # no markers at the band's corners
        fill="toself",
        fillcolor=color,
        opacity=0.2,
        line={"width": 0},
        hoverinfo="skip",
        name=name,
        showlegend=False,
    )


def layer_scores(
    scores: pd.DataFrame, which: Sequence[str] = ("auroc", "probe_acc", "cohens_d")
) -> go.Figure:
    """One panel per score: value by layer with its confidence band.

    Args:
        scores: tidy table with columns layer, score, value, ci_low, ci_high
            (`liref_lens.separation`).

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"layer": [0, 1], "score": "auroc", "value": [0.5, 0.9],
        ...                    "ci_low": [0.4, 0.8], "ci_high": [0.6, 1.0]})
        >>> len(layer_scores(df, ["auroc"]).data)
        2
    """
    which = [s for s in which if s in set(scores["score"])]
    if not which:
        raise ValueError(f"none of the scores {list(which)} is in the table")
    fig = make_subplots(rows=len(which), cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for i, name in enumerate(which, start=1):
        df = scores[scores["score"] == name].sort_values("layer")
        color = _COLORS[(i - 1) % len(_COLORS)]
        fig.add_trace(_band(df["layer"], df["ci_low"], df["ci_high"], color, name), i, 1)
        fig.add_trace(
            go.Scatter(
                x=df["layer"],
                y=df["value"],
                mode="lines+markers",
                name=_TITLES.get(name, name),
                line={"color": color},
            ),
            i,
            1,
        )
        fig.update_yaxes(title_text=_TITLES.get(name, name), row=i, col=1)
    fig.update_xaxes(title_text="layer", row=len(which), col=1)
    fig.update_xaxes(dtick=1)  # layers are integers
    fig.update_layout(title="Layer-wise separation of the two groups", height=250 * len(which) + 80)
    return fig


def pca_scatter(
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    names: tuple[str, str] = ("reasoning", "memory"),
    layer: int | None = None,
) -> go.Figure:
    """The two groups in the plane of their first two principal components, with the logistic
    decision boundary (fitted in that plane) and the arrow from the negative to the positive
    class mean (the difference-in-means direction, projected on the plane). Both axes have
    the same scale, so angles and distances in the plane are drawn true.

    Args:
        pos: ``[n, d]`` activations of one layer, first group.
        neg: ``[m, d]`` activations of the same layer, second group.
        names: legend names of the two groups.
        layer: the layer, for the title.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> fig = pca_scatter(torch.randn(20, 5, generator=g) + 2, torch.randn(20, 5, generator=g))
        >>> [t.name for t in fig.data][:2]
        ['reasoning', 'memory']
    """
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([pos, neg]).double().numpy()
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    center = x.mean(0)
    _, _, vt = np.linalg.svd(x - center, full_matrices=False)
    comps = vt[:2]
    z = (x - center) @ comps.T
    fig = go.Figure()
    for label, name, color in ((1, names[0], _COLORS[0]), (0, names[1], _COLORS[1])):
        pts = z[y == label]
        fig.add_trace(
            go.Scatter(
                x=pts[:, 0],
                y=pts[:, 1],
                mode="markers",
                name=name,
                marker={"color": color, "size": 6, "opacity": 0.7},
            )
        )
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(z, y)
    (w0, w1), b = clf.coef_[0], clf.intercept_[0]
    xs = np.linspace(z[:, 0].min(), z[:, 0].max(), 200)
    if abs(w1) > 1e-12:
        ys = -(w0 * xs + b) / w1
        # inside the points' box (plus 10% of its height): a steep boundary would otherwise
        # stretch the y axis far beyond the data
        pad = 0.1 * (z[:, 1].max() - z[:, 1].min())
        keep = (ys >= z[:, 1].min() - pad) & (ys <= z[:, 1].max() + pad)
        fig.add_trace(
            go.Scatter(
                x=xs[keep],
                y=ys[keep],
                mode="lines",
                name="logistic boundary",
                line={"color": "black", "dash": "dash"},
            )
        )
    m_pos, m_neg = z[y == 1].mean(0), z[y == 0].mean(0)
    # the arrow is a trace, so its name sits in the legend instead of on top of the points
    fig.add_trace(
        go.Scatter(
            x=[m_neg[0], m_pos[0]],
            y=[m_neg[1], m_pos[1]],
            mode="lines+markers",
            name=f"mean difference ({names[1]} to {names[0]})",
            line={"color": "black", "width": 3},
            marker={
                "color": "black",
                "symbol": ["circle", "arrow"],
                "size": [7, 16],
                "angleref": "previous",
            },
            hovertemplate="class mean<extra></extra>",
        )
    )
    where = f" at layer {layer}" if layer is not None else ""
    fig.update_layout(title=f"PCA of activations{where}", xaxis_title="PC 1", yaxis_title="PC 2")
    # one unit is as long on both axes, so angles and distances in the plane read true
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def projection_vs_label(
    projection: Sequence[float] | torch.Tensor,
    label: Sequence[float],
    *,
    layer: int | None = None,
    label_name: str = "reasoning score",
) -> go.Figure:
    """Projection on the direction against a continuous label, with Pearson and Spearman.

    Example:
        >>> fig = projection_vs_label([0.1, 0.5, 0.9], [0.0, 0.4, 1.0])
        >>> fig.layout.xaxis.title.text
        'reasoning score'
    """
    from scipy.stats import pearsonr, spearmanr

    p = np.asarray(projection, dtype=np.float64)
    lab = np.asarray(label, dtype=np.float64)
    r = pearsonr(lab, p).statistic
    rho = spearmanr(lab, p).statistic
    fig = go.Figure(go.Scatter(x=lab, y=p, mode="markers", name="prompts"))
    where = f", layer {layer}" if layer is not None else ""
    fig.update_layout(
        title=f"Projection vs {label_name}{where}: Pearson r = {r:.3f}, Spearman rho = {rho:.3f}",
        xaxis_title=label_name,
        yaxis_title="projection on the unit direction",
    )
    return fig


def _cells(table: pd.DataFrame, metric: str, op: str, subset: str) -> pd.DataFrame:
    df = table[(table["metric"] == metric) & (table["op"] == op) & (table["subset"] == subset)]
    if df.empty:
        raise ValueError(f"no rows for metric={metric!r}, op={op!r}, subset={subset!r}")
    return df


def sweep_heatmap(
    table: pd.DataFrame, metric: str, *, op: str = "add", subset: str = "all"
) -> go.Figure:
    """Layer x alpha heatmap of an experiment metric for the fitted direction.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"op": "add", "layer": [0, 0, 1, 1], "alpha": [-1.0, 1.0] * 2,
        ...     "control": -1, "subset": "all", "metric": "acc", "value": [0.1, 0.2, 0.3, 0.4]})
        >>> sweep_heatmap(t, "acc").data[0].z.tolist()
        [[0.1, 0.2], [0.3, 0.4]]
    """
    df = _cells(table, metric, op, subset)
    df = df[df["control"] < 0]
    grid = df.pivot_table(index="layer", columns="alpha", values="value")
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=[str(a) for a in grid.columns],
            y=[str(v) for v in grid.index],
            colorbar={"title": metric},
            texttemplate="%{z:.2f}",
        )
    )
    fig.update_layout(
        title=f"{metric} ({op}, {subset}) by layer and alpha",
        xaxis_title="alpha",
        yaxis_title="layer",
    )
    return fig


def dose_response(
    table: pd.DataFrame, metric: str, *, layer: int, op: str = "add", subset: str = "all"
) -> go.Figure:
    """A metric against alpha at one layer: the fitted direction with its CI, and the band
    (min to max) and mean of the norm-matched random directions.

    For `Add` and `Scale`, alpha = 0 is no intervention: where ``table`` has the experiment's
    ``baseline`` row, it is drawn at alpha 0 for the fitted and the random directions alike,
    so the curves do not interpolate across a point that was measured.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"op": "add", "layer": 1, "alpha": [1.0, 1.0, 1.0],
        ...     "control": [-1, 0, 1], "subset": "all", "metric": "acc", "value": [0.9, 0.1, 0.2],
        ...     "ci_low": [0.8, 0.0, 0.1], "ci_high": [1.0, 0.2, 0.3]})
        >>> [t.name for t in dose_response(t, "acc", layer=1).data][-1]
        'fitted direction'
    """
    df = _cells(table, metric, op, subset)
    df = df[df["layer"] == layer]
    fitted, random = df[df["control"] < 0], df[df["control"] >= 0]
    base = table[
        (table["op"] == "baseline") & (table["metric"] == metric) & (table["subset"] == subset)
    ]
    if op in ("add", "scale") and len(base) and not (df["alpha"] == 0).any():
        zero = base.iloc[[0]].assign(alpha=0.0, layer=layer)
        fitted = pd.concat([fitted, zero.assign(control=-1)])
        controls = random["control"].unique()
        random = pd.concat([random, *(zero.assign(control=c) for c in controls)])
    fitted, random = fitted.sort_values("alpha"), random.sort_values("alpha")
    fig = go.Figure()
    if not random.empty:
        agg = random.groupby("alpha")["value"].agg(["min", "max", "mean"]).reset_index()
        n = random["control"].nunique()
        fig.add_trace(_band(agg["alpha"], agg["min"], agg["max"], "#7f7f7f", "random band"))
        fig.add_trace(
            go.Scatter(
                x=agg["alpha"],
                y=agg["mean"],
                mode="lines",
                name=f"random directions (mean of {n}; band: min-max)",
                line={"color": "#7f7f7f", "dash": "dot"},
            )
        )
    fig.add_trace(_band(fitted["alpha"], fitted["ci_low"], fitted["ci_high"], _COLORS[0], "CI"))
    fig.add_trace(
        go.Scatter(
            x=fitted["alpha"],
            y=fitted["value"],
            mode="lines+markers",
            name="fitted direction",
            line={"color": _COLORS[0]},
        )
    )
    fig.update_layout(
        title=f"{metric} vs alpha at layer {layer} ({op}, {subset})",
        xaxis_title="alpha",
        yaxis_title=metric,
    )
    return fig


def cosine_heatmap(
    matrix: torch.Tensor | np.ndarray,
    rows: Sequence[Any] | None = None,
    cols: Sequence[Any] | None = None,
    *,
    title: str = "Cosine similarity between layers' directions",
) -> go.Figure:
    """Heatmap of a cosine-similarity matrix (e.g. `liref_lens.cosine_matrix`).

    Example:
        >>> import torch
        >>> cosine_heatmap(torch.eye(2)).data[0].zmin
        -1
    """
    m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    rows = list(range(m.shape[0])) if rows is None else list(rows)
    cols = list(range(m.shape[1])) if cols is None else list(cols)
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=[str(c) for c in cols],
            y=[str(r) for r in rows],
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            colorbar={"title": "cosine"},
            texttemplate="%{z:.2f}",
        )
    )
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="layer")
    return fig


def layer_position_heatmap(table: pd.DataFrame, score: str = "effect_vs_random") -> go.Figure:
    """Layer x position heatmap of a score from `liref_lens.positional.rank_positions`.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame({"layer": [0, 0, 1, 1], "position": ["a", "b", "a", "b"],
        ...                   "score": "auroc", "value": [0.5, 0.6, 0.7, 0.8]})
        >>> layer_position_heatmap(t, "auroc").data[0].z.tolist()
        [[0.5, 0.6], [0.7, 0.8]]
    """
    df = table[table["score"] == score]
    if df.empty:
        raise ValueError(f"no rows for score {score!r}; scores here: {sorted(set(table['score']))}")
    order = list(dict.fromkeys(df["position"]))
    grid = df.pivot_table(index="layer", columns="position", values="value")[order]
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=order,
            y=[str(v) for v in grid.index],
            colorbar={"title": score},
            texttemplate="%{z:.2f}",
        )
    )
    fig.update_layout(
        title=f"{score} by layer and position", xaxis_title="position", yaxis_title="layer"
    )
    return fig
