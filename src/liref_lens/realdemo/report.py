"""The real-model demo's printed summary and HTML report, read from its tables.

`survival` is the story in one table: per contrast, the best layer's AUROC in sample, held
out, matched on length, residualised and transferred from the first contrast, each next to
the best trivial reader scored the same way, with the paired difference and the layers that
beat every trivial reader. `summary` prints it with the steering results; `write_report`
draws the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go

from ..designs import Contrast, design_plot, per_item_plot, transfer_heatmap
from ..experiment import Results
from ..model import LensModel
from ..plotting import _COLORS, _band, pca_scatter
from ..report import Report

if TYPE_CHECKING:
    from .run import RealDemoResult

__all__ = ["summary", "survival", "write_report"]


def _best(g: pd.DataFrame) -> pd.Series:
    return g.sort_values(["value", "layer"], ascending=[False, True]).iloc[0]


def survival(
    scores: pd.DataFrame, designs: pd.DataFrame, transfer: pd.DataFrame, first: str
) -> pd.DataFrame:
    """Per contrast and design, the best layer next to the best trivial reader.

    Columns: ``contrast, design, n, layer, auroc, ci_low, ci_high, reader_auroc, diff,
    diff_low, diff_high, layers_beating`` (in-sample rows have no reader: the readers are only
    scored held out). Transferred rows read the first contrast's layers on each other one.
    """
    rows = []
    for name in dict.fromkeys(scores["contrast"]):
        ins = scores[(scores["contrast"] == name) & (scores["score"] == "auroc")]
        b = _best(ins)
        rows.append(
            (
                name,
                "in sample",
                "",
                int(b["layer"]),
                b["value"],
                b["ci_low"],
                b["ci_high"],
                None,
                None,
                None,
                None,
                "",
            )
        )
        parts = [
            (d, g) for d, g in designs[designs["contrast"] == name].groupby("design", sort=False)
        ]
        if len(transfer) and name != first:
            t = transfer[(transfer["train"] == first) & (transfer["test"] == name)]
            lay = t[t["reader"] == "layer"].rename(columns={"auroc": "value"})
            parts.append((f"transferred from {first}", lay))
        for design, g in parts:
            b = _best(g)
            beat = sorted(
                int(x) for x in g[g["beats_baseline"].fillna(False).astype(bool)]["layer"]
            )
            n = f"{int(g['n_pos'].iloc[0])}+{int(g['n_neg'].iloc[0])}" if "n_pos" in g else ""
            rows.append(
                (
                    name,
                    design,
                    n,
                    int(b["layer"]),
                    b["value"],
                    b["ci_low"],
                    b["ci_high"],
                    b["baseline_auroc"],
                    b["diff"],
                    b["diff_low"],
                    b["diff_high"],
                    _ranges(beat),
                )
            )
    cols = [
        "contrast",
        "design",
        "n",
        "layer",
        "auroc",
        "ci_low",
        "ci_high",
        "reader_auroc",
        "diff",
        "diff_low",
        "diff_high",
        "layers_beating",
    ]
    return pd.DataFrame(rows, columns=cols)


def _survival_display(table: pd.DataFrame) -> pd.DataFrame:
    """`survival` as the report shows it: each estimate with its interval in one cell, so the
    verdict column fits on the page beside them."""

    def cell(row: tuple[float, float, float], sign: str = "") -> str:
        v, lo, hi = row
        if pd.isna(v):
            return "–"
        # no-break spaces: long labels may wrap in this table, numbers stay on one line
        return f"{v:{sign}.3f}\u00a0[{lo:{sign}.3f},\u00a0{hi:{sign}.3f}]"

    return pd.DataFrame(
        {
            "contrast": table["contrast"],
            "design": table["design"],
            "n": table["n"],
            "layer": table["layer"],
            "AUROC [95% CI]": [
                cell(r) for r in table[["auroc", "ci_low", "ci_high"]].itertuples(index=False)
            ],
            "best reader": [("–" if pd.isna(v) else f"{v:.3f}") for v in table["reader_auroc"]],
            "layer - reader [paired 95% CI]": [
                cell(r, sign="+")
                for r in table[["diff", "diff_low", "diff_high"]].itertuples(index=False)
            ],
            "layers beating every reader": table["layers_beating"],
        }
    )


def _ranges(layers: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``; ``"none"`` when empty.

    Example:
        >>> _ranges([1, 2, 3, 7]), _ranges([])
        ('1-3, 7', 'none')
    """
    groups: list[list[int]] = []
    for x in layers:
        if groups and x == groups[-1][1] + 1:
            groups[-1][1] = x
        else:
            groups.append([x, x])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in groups) or "none"


def verdicts(table: pd.DataFrame) -> list[str]:
    """One sentence per contrast: what separates, and what survives the controls."""
    out = []
    for name, g in table.groupby("contrast", sort=False):
        held = g[g["design"] == "heldout"].iloc[0]
        parts = [
            f"{name}: held out, best layer {held['layer']} AUROC {held['auroc']:.3f} "
            f"[{held['ci_low']:.3f}, {held['ci_high']:.3f}] vs the best trivial reader "
            f"{held['reader_auroc']:.3f} (difference {held['diff']:+.3f} [{held['diff_low']:+.3f},"
            f" {held['diff_high']:+.3f}])"
        ]
        for _, r in g[~g["design"].isin(["in sample"])].iterrows():
            parts.append(
                f"{r['design']}: layers beating every trivial reader {r['layers_beating']}"
            )
        out.append("; ".join(parts) + ".")
    return out


def _steer_lines(steering: pd.DataFrame, steerability: pd.DataFrame, layer: int) -> list[str]:
    kinds = [c.removesuffix("_mean") for c in steering.columns if c.endswith("_mean")]
    out = []
    for (subset, alpha), g in steering.groupby(["subset", "alpha"], sort=True):
        if subset == "all":
            continue
        m = g.set_index("metric")
        p, kl = m.loc["p_correct"], m.loc["kl"]
        ctl = "; ".join(
            f"{k} {p[f'{k}_mean']:.3f} ({p[f'{k}_min']:.3f}-{p[f'{k}_max']:.3f}), KL "
            f"{kl[f'{k}_mean']:.3f}"
            for k in kinds
        )
        w = steerability[
            (steerability["subset"] == subset)
            & (steerability["alpha"] == alpha)
            & (steerability["statistic"] == "share_wrong_way")
        ]
        wf = w[w["direction"] == "fitted"]
        wrong = (
            f"; moved the wrong way: {wf['value'].iloc[0]:.0%} of items "
            f"[{wf['ci_low'].iloc[0]:.0%}, {wf['ci_high'].iloc[0]:.0%}] (controls "
            + ", ".join(
                f"{r.direction} {r.value:.0%}" for r in w[w["direction"] != "fitted"].itertuples()
            )
            + ")"
            if len(wf)
            else ""
        )
        out.append(
            f"Add at layer {layer}, alpha {alpha:+g}, {subset} ({int(p['n'])} questions): "
            f"P(gold vs distractor) {p['baseline']:.3f} -> {p['fitted']:.3f} [{p['ci_low']:.3f}, "
            f"{p['ci_high']:.3f}], KL {kl['fitted']:.3f} nats; controls: {ctl}{wrong}."
        )
    return out


def summary(result: RealDemoResult) -> str:
    """The printed summary of a run."""
    first = str(result.scores["contrast"].iloc[0])
    table = survival(result.scores, result.designs, result.transfer, first)
    lines = [
        "\nWhat survives the controls (best layer per design; readers: prompt length and bag"
        " of tokens scored the same way; diff: layer minus best reader, paired bootstrap):"
    ]
    lines.append(table.to_string(index=False, float_format="%.3f", na_rep=""))
    if result.notes:
        lines.append("\nNotes:")
        lines += ["- " + n for n in result.notes]
    lines.append("\nVerdicts:")
    lines += ["- " + v for v in verdicts(table)]
    lines.append("\nSteering (next-token metrics on held-out questions):")
    lines += [
        "- " + v for v in _steer_lines(result.steering, result.steerability, result.steer_layer)
    ]
    lines.append(f"\nReport: {result.report.resolve()}  ({result.seconds:.0f} s)")
    return "\n".join(lines)


def _kinds_plot(steering: pd.DataFrame, metric: str, subset: str) -> go.Figure:
    """``metric`` against alpha: the fitted direction with its CI next to each control kind's
    mean and range, so controls drawn differently are seen side by side."""
    g = steering[(steering["metric"] == metric) & (steering["subset"] == subset)]
    g = g.sort_values("alpha")
    fig = go.Figure()
    kinds = [c.removesuffix("_mean") for c in g.columns if c.endswith("_mean")]
    for i, kind in enumerate(kinds, start=1):
        color = _COLORS[i % len(_COLORS)]
        fig.add_trace(_band(g["alpha"], g[f"{kind}_min"], g[f"{kind}_max"], color, kind))
        fig.add_trace(
            go.Scatter(
                x=g["alpha"],
                y=g[f"{kind}_mean"],
                name=f"{kind} (mean, range)",
                mode="lines+markers",
                line={"color": color, "dash": "dot"},
            )
        )
    fig.add_trace(_band(g["alpha"], g["ci_low"], g["ci_high"], _COLORS[0], "fitted"))
    fig.add_trace(
        go.Scatter(
            x=g["alpha"],
            y=g["fitted"],
            name="fitted direction",
            mode="lines+markers",
            line={"color": _COLORS[0]},
        )
    )
    fig.update_layout(xaxis_title="alpha", yaxis_title=metric, template="plotly_white")
    return fig


def _design_figure(table: pd.DataFrame, scores: pd.DataFrame, name: str) -> go.Figure:
    """The contrast's designs by layer, with the in-sample AUROC as one more line."""
    ins = scores[(scores["contrast"] == name) & (scores["score"] == "auroc")]
    held = table[(table["contrast"] == name) & (table["design"] == "heldout")]
    rows = ins.merge(held[["layer", "baseline_auroc"]], on="layer", how="left")
    both = pd.concat(
        [
            rows.assign(design="in sample", beats_baseline=False, contrast=name),
            table[table["contrast"] == name],
        ],
        ignore_index=True,
    )
    return design_plot(both, name)


def write_report(
    out: Path,
    lm: LensModel,
    tables: dict[str, pd.DataFrame],
    steered: Results,
    read: dict[str, Contrast],
    layer: int,
    notes: list[str],
    seconds: float,
    seed: int,
) -> Path:
    """``out/report.html`` of a run (see `liref_lens.realdemo.run.run_real_demo`)."""
    names = list(read)
    scores, designs, transfer = tables["scores"], tables["designs"], tables["transfer"]
    table = survival(scores, designs, transfer, names[0])
    report = Report(f"liref_lens: reasoning vs memorization on {lm.name}: {', '.join(names)}")
    steer = _steer_lines(tables["steering"], tables["steerability"], layer)
    report.findings([*verdicts(table), *steer, *notes])
    report.text(
        f"Model: {lm.name} ({lm.n_layers} layers, d_model {lm.d_model}, fingerprint "
        f"{lm.fingerprint}). Last-token resid_pre activations, difference-in-means direction "
        "per layer. Held out: fitted on 4 of 5 folds, scored on the fifth, the trivial readers "
        "(prompt length; a logistic regression on token counts) on the same folds. A layer "
        "beats the readers when the paired bootstrap interval of its AUROC minus the best "
        f"reader's, on the same resampled rows, lies above 0. Run time {seconds:.0f} s."
    )
    report.table(
        "What survives the controls",
        _survival_display(table),
        caption="Best layer of each design; best reader: the better trivial reader (prompt "
        "length, bag of tokens) under the same design; layer - reader: the difference on the "
        "same resampled rows, with its paired 95% interval; a layer beats every reader when "
        "that interval lies above 0.",
        show=len(table),
        wrap=True,
    )
    for name, c in read.items():
        report.figure(
            f"{name}: AUROC by layer under each design",
            _design_figure(designs, scores, name),
            caption="Dashed: the best trivial reader of the same design; filled "
            "markers: layers that beat every reader (paired). Bands: 95% "
            "bootstrap.",
        )
        held = designs[(designs["contrast"] == name) & (designs["design"] == "heldout")]
        best = int(_best(held)["layer"])
        idx = c.pos.layers.index(best)
        scatter = pca_scatter(c.pos.tensor[:, idx], c.neg.tensor[:, idx], layer=best)
        report.figure(f"{name}: the two classes at layer {best}", scatter)
    if len(transfer):
        report.figure(
            f"Transfer at layer {layer}",
            transfer_heatmap(transfer, layer),
            caption="Each row's readers (the layer's direction and the trivial "
            "readers) fitted on one contrast, scored on another; the diagonal is held "
            "out.",
        )
    effects = tables["per_item"]
    for alpha in sorted(set(effects["alpha"])):
        report.figure(
            f"Per-item effect of Add at layer {layer}, alpha {alpha:+g}",
            per_item_plot(effects, layer=layer, alpha=alpha),
            caption="Each point is one question's change in P(gold vs distractor); "
            "the x labels give the share moved against the intended sign.",
        )
    for subset in dict.fromkeys(tables["steering"]["subset"]):
        if subset == "all":
            continue
        for metric in ("p_correct", "kl"):
            report.figure(
                f"Steering on {subset}: {metric} against alpha at layer {layer}",
                _kinds_plot(tables["steering"], metric, subset),
                caption="Fitted direction with its 95% interval, and the mean "
                "and range of each kind of control direction (all norm-matched).",
            )
    report.table("Designs, every layer", designs, sort_by="value")
    if len(transfer):
        report.table("Transfer", transfer, sort_by="auroc")
    report.table("Trivial readers, held out", tables["baselines"])
    report.table("Steering", tables["steering"])
    report.table("Per-item steerability", tables["steerability"])
    report.config.update({"model": lm.name, "seed": seed, "experiment": steered.config.to_json()})
    return report.write(out / "report.html")
