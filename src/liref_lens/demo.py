"""`liref-lens demo`: the whole method on the offline testbed, with its controls, in one report.

Steps (all seeded): load the shipped testbed model (or retrain it); cache last-token residual
activations of reasoning-mode and memory-mode prompts at every layer; fit the
difference-in-means direction per layer and score the layers (AUROC, probe accuracy, Cohen's
d with bootstrap CIs); steer **borderline** prompts (one cue from the other mode) that the
model answers by their mode, with `Add`, `Scale` and `ProjectOut` at each layer and alpha,
next to norm-matched random directions; scan (layer, position) pairs for where the mode can
be switched; write ``report.html`` (with ``scores.csv``, ``switches.csv`` and
``positions.csv`` beside it) and print a summary.

The switch rates are the causal test: the share of memory-mode borderline prompts whose
answer moves from the memorized answer to the rule answer (positive alpha), and the share of
reasoning-mode borderline prompts that move to the memorized answer (negative alpha). Alpha is
in the direction's natural unit: ``Add`` with alpha = 1 moves the memory-mode mean onto the
reasoning-mode mean.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ._io import atomic_write_text
from ._threads import ThreadSpec, choose_threads, n_parameters, torch_threads
from .cache import cache_activations
from .directions import diff_in_means, fit_directions
from .experiment import EvalSet, Experiment, ExperimentConfig, Results
from .model import LensModel, load_model
from .plotting import (
    cosine_heatmap,
    dose_response,
    layer_position_heatmap,
    layer_scores,
    pca_scatter,
    projection_vs_label,
    sweep_heatmap,
)
from .positional import fit_by_position, rank_positions
from .positions import at
from .report import Report
from .scores import cosine_matrix, projection, separation

__all__ = ["DemoResult", "run_demo"]

ALPHAS = (-1.5, -1.25, -1.0, 1.0, 1.25, 1.5)


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured: layer scores, the steering table, the position scan."""

    out_dir: Path
    report: Path
    scores: pd.DataFrame
    switches: pd.DataFrame
    positions: pd.DataFrame
    seconds: float


def _borderline_evalset(lm: LensModel, testbed: Any) -> EvalSet:
    """Borderline prompts the unsteered model answers by their mode (candidates: rule,
    memorized answer); only those can switch."""
    items = [*testbed.borderline("memory"), *testbed.borderline("reasoning")]
    full = EvalSet(
        name="borderline",
        prompts=tuple(it.prompt for it in items),
        candidates=tuple((str(it.rule_answer), str(it.memorized_answer)) for it in items),
        correct=tuple(0 if it.mode == "reasoning" else 1 for it in items),
        subsets=tuple(f"{it.mode}-mode" for it in items),
        candidate_names=("rule", "memorized"),
    )
    cand = full.candidate_ids(lm)
    with torch.no_grad():
        logits = lm.forward(lm.tokenize(list(full.prompts)))[:, -1]
    choice = logits.gather(1, cand).argmax(-1).tolist()
    keep = [i for i, c in enumerate(choice) if c == full.correct[i]]
    return EvalSet(
        name="borderline-answered-by-mode",
        prompts=tuple(full.prompts[i] for i in keep),
        candidates=tuple(full.candidates[i] for i in keep),
        correct=tuple(full.correct[i] for i in keep),
        subsets=tuple(full.subsets[i] for i in keep),
        candidate_names=("rule", "memorized"),
    )


def _switch_table(table: pd.DataFrame) -> pd.DataFrame:
    """Switch shares per (op, layer, alpha): fitted (with CI) and random (mean, max)."""
    want = [("memory-mode", "choose_rule"), ("reasoning-mode", "choose_memorized")]
    rows = []
    for subset, metric in want:
        t = table[
            (table["subset"] == subset) & (table["metric"] == metric) & (table["op"] != "baseline")
        ]
        for (op, layer, alpha), g in t.groupby(["op", "layer", "alpha"]):
            fitted = g[g["control"] < 0].iloc[0]
            rand = g[g["control"] >= 0]
            rows.append({
                "switch": "memorized -> rule" if metric == "choose_rule" else "rule -> memorized",
                "op": op, "layer": int(layer), "alpha": float(alpha),
                "fitted": fitted["value"], "ci_low": fitted["ci_low"],
                "ci_high": fitted["ci_high"], "random_mean": rand["value"].mean(),
                "random_max": rand["value"].max(), "random_max_ci_high": rand["ci_high"].max(),
                "n": int(fitted["n"]), "n_random": len(rand),
            })  # fmt: skip
    return pd.DataFrame(rows)


RANDOM_LIMIT = 0.10  # the most any single random direction may switch in a headline cell


def _best(switches: pd.DataFrame, direction: str) -> pd.Series:
    """The headline cell for one switch direction: the largest fitted switch share among
    cells where every random direction switches at most `RANDOM_LIMIT`; if no cell qualifies,
    the largest margin of the fitted direction over the most effective random one."""
    s = switches[switches["switch"] == direction]
    ok = s[s["random_max"] <= RANDOM_LIMIT]
    if len(ok):
        return ok.sort_values(["fitted", "random_max"], ascending=[False, True]).iloc[0]
    margin = s["fitted"] - s["random_max"]
    return s.loc[margin.sort_values(ascending=False).index[0]]


def run_demo(
    out_dir: str | Path = "liref-demo",
    *,
    seed: int = 0,
    device: str = "cpu",
    retrain: bool = False,
    checkpoint: str | Path | None = None,
    n_random: int = 10,
    alphas: tuple[float, ...] = ALPHAS,
    progress: bool = True,
    threads: ThreadSpec | None = None,
) -> DemoResult:
    """Run the demo end to end; returns what it measured and writes ``report.html``.

    ``checkpoint``: a testbed checkpoint folder to use instead of the shipped one (e.g. one
    written by ``liref-lens train-testbed``). ``n_random`` norm-matched random directions are
    the control of every steering cell and of the position scan; ``alphas`` is the grid of
    strengths (in the direction's natural unit) for `Add` and `Scale`. ``threads``: torch's
    CPU thread count for the run (``"auto"``: one for this small model), restored afterwards,
    and said on stderr; ``None`` leaves torch's setting alone.
    """
    from .testbed import shipped_checkpoint, train_testbed

    start = time.perf_counter()
    out = Path(out_dir)
    if retrain:
        train_testbed(out / "model", seed=seed, progress=progress)
        path = out / "model"
    else:
        path = Path(checkpoint) if checkpoint is not None else shipped_checkpoint()
    lm = load_model(str(path), device=device)
    if threads is None:
        n_threads = torch.get_num_threads()
    else:
        n_threads, why = choose_threads(threads, n_parameters(lm.model))
        print(
            f"liref-lens demo: {lm.name} on {lm.device}; torch threads: {n_threads} ({why})",
            file=sys.stderr,
            flush=True,
        )
    with torch_threads(n_threads):
        return _run(lm, out, start, seed, retrain, n_random, alphas, progress)


def _run(
    lm: LensModel,
    out: Path,
    start: float,
    seed: int,
    retrain: bool,
    n_random: int,
    alphas: tuple[float, ...],
    progress: bool,
) -> DemoResult:
    from .testbed import make_testbed

    testbed = make_testbed(seed=seed)
    layers = list(range(1, lm.n_layers))  # resid_pre at layer 0 is the shared token embedding

    kw: dict[str, Any] = dict(layers=layers, progress=False)
    pos = cache_activations(lm, testbed.reasoning_prompts(), **kw)
    neg = cache_activations(lm, testbed.memory_prompts(), **kw)
    ds = fit_directions(pos, neg, diff_in_means(), model=lm)
    scores = separation(pos, neg, ds, n_boot=500, seed=seed, progress=False)

    evalset = _borderline_evalset(lm, testbed)
    config = ExperimentConfig(
        layers=tuple(layers),
        alphas=tuple(alphas),
        ops=("add", "scale", "project_out"),
        n_random=n_random,
        seed=seed,
        n_boot=500,
        batch_size=256,
        positions="last()",
    )
    results = Experiment(lm, ds, evalset, config).run(out / "experiment", progress=progress)
    switches = _switch_table(results.table)

    prompts = [*testbed.reasoning_prompts(), *testbed.memory_prompts()]
    labels = ["reasoning"] * len(pos) + ["memory"] * len(neg)
    # bos and the operands (positions 0-2) are shared by both classes: only the cue words
    n_cues = testbed.world.n_cues
    where = {f"c{k}": at(k - n_cues - 1) for k in range(1, n_cues + 1)}
    pdirs = fit_by_position(lm, prompts, labels, where, layers=layers)
    pos_table, best_pos = rank_positions(
        lm,
        prompts,
        labels,
        pdirs,
        evalset=evalset,
        metric="flip",
        alpha=1.0,
        n_random=n_random,
        seed=seed,
        n_boot=200,
        batch_size=256,
    )
    seconds = time.perf_counter() - start
    for name, table in (("scores", scores), ("switches", switches), ("positions", pos_table)):
        atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    report = _write_report(
        out,
        lm,
        testbed,
        ds,
        pos,
        neg,
        scores,
        results,
        switches,
        pos_table,
        best_pos,
        seconds,
        seed,
        retrain,
    )
    _print_summary(scores, switches, best_pos, report, seconds)
    return DemoResult(out, report, scores, switches, pos_table, seconds)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _findings(
    scores: pd.DataFrame,
    switches: pd.DataFrame,
    best_pos: dict[str, Any],
    evalset_n: dict[str, int],
) -> list[str]:
    auc = scores[scores["score"] == "auroc"].sort_values("value", ascending=False).iloc[0]
    out = [
        f"Separation: the difference-in-means direction separates reasoning-mode from "
        f"memory-mode prompts best at layer {int(auc['layer'])}, AUROC {auc['value']:.3f} "
        f"[95% CI {auc['ci_low']:.3f}, {auc['ci_high']:.3f}]. Separation alone does not show "
        "that the model uses this direction; the steering results below test that."
    ]
    for direction, subset in (
        ("memorized -> rule", "memory-mode"),
        ("rule -> memorized", "reasoning-mode"),
    ):
        b = _best(switches, direction)
        out.append(
            f"Steering {direction} ({evalset_n.get(subset, 0)} borderline {subset} prompts "
            f"answered by their mode): {b['op']} at layer {int(b['layer'])}, alpha "
            f"{b['alpha']:+g} switches {_pct(b['fitted'])} [{_pct(b['ci_low'])}, "
            f"{_pct(b['ci_high'])}]; {int(b['n_random'])} norm-matched random directions "
            f"switch {_pct(b['random_mean'])} on average (the most effective one: "
            f"{_pct(b['random_max'])})."
        )
    ok = all(
        _best(switches, d)["fitted"] >= 0.5 and _best(switches, d)["random_max"] <= RANDOM_LIMIT
        for d in ("memorized -> rule", "rule -> memorized")
    )
    out.append(
        "Verdict: the fitted direction mediates the mode in both directions (>= 50% switched "
        "where random directions switch <= 10%)."
        if ok
        else "Verdict: the target (>= 50% switched by the fitted direction, <= 10% by every random "
        "direction, in both directions) is NOT met by the last-token direction at any "
        "layer/alpha tried; see the numbers above and the position scan below."
    )
    out.append(
        f"Position scan: adding each (layer, position)'s own mean difference at that position "
        f"changes the chosen answer most at layer {best_pos['layer']}, position "
        f"{best_pos['position']} ({best_pos['value']:+.3f} share of answers flipped beyond "
        "the mean of the random directions)."
    )
    return out


def _write_report(
    out: Path,
    lm: LensModel,
    testbed: Any,
    ds: Any,
    pos: Any,
    neg: Any,
    scores: pd.DataFrame,
    results: Results,
    switches: pd.DataFrame,
    pos_table: pd.DataFrame,
    best_pos: dict[str, Any],
    seconds: float,
    seed: int,
    retrain: bool,
) -> Path:
    counts = results.table[(results.table["op"] == "baseline") & (results.table["metric"] == "acc")]
    evalset_n = {r.subset: int(r.n) for r in counts.itertuples()}
    report = Report("liref_lens demo: reasoning vs memorization on the offline testbed")
    report.findings(_findings(scores, switches, best_pos, evalset_n))
    report.text(
        f"Model: {lm.name} ({lm.n_layers} layers, d_model {lm.d_model}, fingerprint "
        f"{lm.fingerprint}). World: two operands then {testbed.world.n_cues} cue words; rule "
        f"(a + b) mod {testbed.world.modulus}; the majority of the cues picks the mode. "
        f"Fit set: {len(pos)} reasoning-mode and {len(neg)} memory-mode prompts. "
        f"Run time {seconds:.0f} s."
    )
    report.figure(
        "Layer-wise separation", layer_scores(scores), caption="Bands: 95% bootstrap intervals."
    )
    best = int(scores[scores["score"] == "auroc"].sort_values("value").iloc[-1]["layer"])
    report.figure(
        f"The two groups at layer {best}",
        pca_scatter(pos.at_layer(best), neg.at_layer(best), layer=best),
    )
    items = [*testbed.fit, *testbed.borderline_items]
    acts = cache_activations(lm, [it.prompt for it in items], layers=[best], progress=False)
    proj = projection(acts, ds.select_layers([best]))[:, 0]
    report.figure(
        "Projection vs the number of reasoning cues",
        projection_vs_label(
            proj,
            [it.n_reasoning_cues for it in items],
            layer=best,
            label_name="reasoning cues (of 5)",
        ),
    )
    t = results.table
    for direction, subset, metric in (
        ("memorized -> rule", "memory-mode", "choose_rule"),
        ("rule -> memorized", "reasoning-mode", "choose_memorized"),
    ):
        b = _best(switches, direction)
        report.figure(
            f"Switch {direction}: {b['op']} by layer and alpha",
            sweep_heatmap(t, metric, op=str(b["op"]), subset=subset),
        )
        report.figure(
            f"Switch {direction}: dose-response at layer {int(b['layer'])}",
            dose_response(t, metric, layer=int(b["layer"]), op=str(b["op"]), subset=subset),
            caption="Grey: the band (min to max) of the norm-matched random "
            "directions and their mean.",
        )
    report.figure(
        "Cosine similarity of the layers' directions",
        cosine_heatmap(cosine_matrix(ds), ds.layers, ds.layers),
    )
    report.figure(
        "Where the mode can be switched: layer x position",
        layer_position_heatmap(pos_table, "effect_vs_random"),
        caption="Share of answers flipped by each (layer, position)'s own mean "
        "difference added at that position (alpha 1), minus the mean for "
        "norm-matched random directions. Positions c1..c5 are the five cue words "
        "(c5 is the last token).",
    )
    report.table(
        "Steering results (switch shares)",
        switches,
        caption="Best first by the fitted direction's switch share (ci_low, ci_high: its 95% "
        "bootstrap interval); random_mean and random_max: the mean and the most effective of "
        "the norm-matched random directions in the same cell.",
        sort_by="fitted",
    )
    scan = pos_table.pivot_table(index=["layer", "position"], columns="score", values="value")
    scan.columns.name = None
    report.table(
        "Position scan",
        scan.reset_index(),
        caption="Best first by effect_vs_random: the share of answers flipped by the (layer, "
        "position)'s own direction (effect) minus the mean for the random directions "
        "(effect_random); auroc: how well that direction separates the two groups there.",
        sort_by="effect_vs_random",
    )
    report.config.update(
        {
            "seed": seed,
            "retrain": retrain,
            "alphas": list(results.config.alphas),
            "experiment": results.config.to_json(),
        }
    )
    return report.write(out / "report.html")


def _print_summary(
    scores: pd.DataFrame,
    switches: pd.DataFrame,
    best_pos: dict[str, Any],
    report: Path,
    seconds: float,
) -> None:
    auc = scores[scores["score"] == "auroc"][["layer", "value", "ci_low", "ci_high"]]
    print("Layer-wise AUROC (reasoning vs memory mode, last token):")
    print(auc.rename(columns={"value": "auroc"}).to_string(index=False, float_format="%.3f"))
    print("\nBest switch per direction (fitted vs norm-matched random directions):")
    best = pd.DataFrame([_best(switches, d) for d in ("memorized -> rule", "rule -> memorized")])
    cols = [
        "switch",
        "op",
        "layer",
        "alpha",
        "fitted",
        "ci_low",
        "ci_high",
        "random_mean",
        "random_max",
    ]
    print(best[cols].to_string(index=False, float_format="%.2f"))
    print(f"\nBest (layer, position) in the position scan: {best_pos}")
    print(f"\nReport: {report.resolve()}  ({seconds:.0f} s)")
