"""The paper's protocol on a real language model (default SmolLM2-135M-Instruct), with controls.

Steps (all seeded): load the model (a named GGUF model is de-quantized once, see
`liref_lens.gguf`); read real questions; for two contrasts, cache the last-token ``resid_pre``
activations at layers 1..n-1 (``resid_pre`` of layer L is the output of block L-1), fit the
difference-in-means direction per layer and score it:

- ``gsm8k_vs_nq``: GSM8K questions (reasoning) vs NQ-open questions (memory), both written
  ``"Q: {question}\\nA: "``. These two sets also differ in length, vocabulary and style, so a
  high AUROC alone says little;
- ``mmlu_pro_categories``: MMLU-Pro questions (same source, same format, question text only)
  from reasoning-heavy categories (math, physics, chemistry, engineering) vs memory-heavy ones
  (history, law, psychology, health): the stronger, within-dataset test.

Each layer gets its in-sample AUROC (`separation`), its held-out AUROC (`layer_oof`) and the
paired verdict against the trivial readers of `baseline_oof` (prompt length, bag of tokens;
`against_baselines`: the bootstrap interval of the AUROC difference on the same resampled rows
lies above 0). Then the GSM8K-vs-NQ direction of the best held-out layer is added (``Add`` at
the last prompt token, alpha in the direction's natural unit: +1 moves the memory mean onto the
reasoning mean) on held-out GSM8K and NQ questions, next to norm-matched random directions, and
next-token metrics are read: probability of the gold answer's first token against a
distractor's (``p_correct``), KL from the unsteered distribution, entropy. Greedy
chain-of-thought accuracy is not part of the run: SmolLM2-135M got 0 of 20 GSM8K questions
right with an 8-shot chain-of-thought prompt (133 s on 2 CPU cores) and 0 of 20 NQ-open
questions (``scripts/real_model_accuracy.py``; docs/how-to/real-model.md), so an effect on
accuracy could not be seen.

Writes ``report.html``, ``scores.csv``, ``baselines.csv``, ``steering.csv`` and prints a
summary. Memory: activations of ``2 * n`` prompts per contrast x layers x d_model floats.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import atomic_write_text
from .cache import Activations, cache_activations
from .confounds import against_baselines, auroc_table, baseline_oof, layer_oof
from .directions import DirectionSet, diff_in_means, fit_directions
from .experiment import EvalSet, Experiment, ExperimentConfig, Results
from .model import LensModel, load_model
from .plotting import dose_response, layer_scores, pca_scatter
from .report import Report
from .scores import separation
from .tasks import Item, Task, load_task

__all__ = ["REASONING_CATEGORIES", "MEMORY_CATEGORIES", "RealDemoResult", "run_real_demo"]

REASONING_CATEGORIES = ("math", "physics", "chemistry", "engineering")
MEMORY_CATEGORIES = ("history", "law", "psychology", "health")
ALPHAS = (-1.0, 1.0)


@dataclass(frozen=True)
class RealDemoResult:
    """What the real-model demo measured (tables also written as CSV next to the report)."""

    out_dir: Path
    report: Path
    scores: pd.DataFrame  # contrast, layer, score, value, ci_low, ci_high (+ baseline columns)
    baselines: pd.DataFrame  # contrast, feature, auroc, ci_low, ci_high
    steering: pd.DataFrame  # subset, metric, alpha, fitted (+CI), random mean/min/max
    steer_layer: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


# ----- data ---------------------------------------------------------------------------------
_FILES = {
    "gsm8k": "gsm8k_test.jsonl",
    "nq_open": "nq_open_dev.jsonl",
    "mmlu_pro": "mmlu_pro_questions_with_llama3_8b_outputs.zip",
}


def _read_questions(data_dir: str | os.PathLike[str] | None) -> dict[str, Task]:
    """GSM8K, NQ-open and MMLU-Pro as tasks: the samples shipped with the package
    (``source="builtin"``) by default, else the full public files in ``data_dir``
    (``gsm8k_test.jsonl``, ``nq_open_dev.jsonl`` and MMLU-Pro's results zip)."""
    if data_dir is None:
        return {name: load_task(name, source="builtin") for name in _FILES}
    root = Path(data_dir)
    missing = [f for f in _FILES.values() if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{root} lacks {missing}; point data_dir at the folder with the question files, "
            "or leave it None for the samples shipped with the package"
        )
    return {name: load_task(name, source=root / f) for name, f in _FILES.items()}


def _gold(item: Item) -> str:
    """The text of an item's first gold answer (integers without a decimal point)."""
    answer = item.answer
    if isinstance(answer, tuple | list):
        return str(answer[0])
    if isinstance(answer, float) and answer == int(answer):
        return str(int(answer))
    return str(answer)


def _pick(
    lm: LensModel,
    items: Sequence[Item],
    n: int,
    rng: np.random.Generator,
    max_tokens: int,
) -> list[Item]:
    """``n`` items in seeded random order whose question is at most ``max_tokens`` tokens."""
    out: list[Item] = []
    for i in rng.permutation(len(items)):
        item = items[int(i)]
        if len(lm.tokenizer(item.question)["input_ids"]) > max_tokens:
            continue
        out.append(item)
        if len(out) == n:
            return out
    raise ValueError(
        f"only {len(out)} of {len(items)} questions have at most {max_tokens} tokens, {n} "
        "needed; lower n or n_eval, or raise max_tokens"
    )


def _prompt(question: str) -> str:
    return f"Q: {question}\nA: "


# ----- steering ---------------------------------------------------------------------------
def _steer_evalset(
    lm: LensModel,
    gsm: Sequence[Item],
    nq: Sequence[Item],
) -> EvalSet:
    """Held-out questions with two candidates: the gold answer's first token and a
    distractor's (another question's gold answer with a different first token)."""
    tok = lm.tokenizer

    def first(text: str) -> int:
        return int(tok(text, add_special_tokens=False)["input_ids"][0])

    prompts, cands, subsets = [], [], []
    for name, rows, template, space in (
        ("gsm8k", gsm, "Q: {q}\nA: The answer is ", ""),
        ("nq_open", nq, "Q: {q}\nA:", " "),
    ):
        golds = [space + _gold(r) for r in rows]
        for i, row in enumerate(rows):
            other = next(
                (g for k in range(1, len(golds)) if first(g := golds[(i + k) % len(golds)])
                 != first(golds[i])),
                None,
            )  # fmt: skip
            if other is None:
                continue
            prompts.append(template.format(q=row.question))
            cands.append((golds[i], other))
            subsets.append(name)
    return EvalSet(
        name="real-heldout",
        prompts=tuple(prompts),
        candidates=tuple(cands),
        correct=(0,) * len(prompts),
        subsets=tuple(subsets),
        candidate_names=("gold", "distractor"),
    )


def _steer_table(results: Results) -> pd.DataFrame:
    t = results.table
    base = t[t["op"] == "baseline"]
    rows = []
    for (subset, metric, alpha), g in t[t["op"] != "baseline"].groupby(
        ["subset", "metric", "alpha"]
    ):
        fitted = g[g["control"] < 0].iloc[0]
        rand = g[g["control"] >= 0]["value"]
        b = base[(base["subset"] == subset) & (base["metric"] == metric)]["value"]
        rows.append({
            "subset": subset, "metric": metric, "alpha": float(alpha),
            "baseline": float(b.iloc[0]) if len(b) else float("nan"),
            "fitted": fitted["value"], "ci_low": fitted["ci_low"], "ci_high": fitted["ci_high"],
            "random_mean": rand.mean(), "random_min": rand.min(), "random_max": rand.max(),
            "n": int(fitted["n"]), "n_random": len(rand),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _best_layer(scores: pd.DataFrame, tol: float = 0.01) -> int:
    """The steering layer: among layers within ``tol`` of the best held-out AUROC (many tie
    at 1.0 when the classes are easy), the one with the largest in-sample Cohen's d."""
    cv = scores[scores["score"] == "cv_auroc"].set_index("layer")["value"]
    top = cv[cv >= cv.max() - tol].index
    d = scores[scores["score"] == "cohens_d"].set_index("layer")["value"]
    d = d[d.index.isin(top)]
    return int(d.idxmax()) if len(d) else int(cv.idxmax())


# ----- run --------------------------------------------------------------------------------
def _contrast(
    lm: LensModel,
    name: str,
    pos_prompts: list[str],
    neg_prompts: list[str],
    layers: list[int],
    seed: int,
    n_boot: int,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, DirectionSet, Activations, Activations]:
    kw: dict[str, Any] = dict(layers=layers, progress=progress, batch_size=16)
    pos = cache_activations(lm, pos_prompts, **kw)
    neg = cache_activations(lm, neg_prompts, **kw)
    ds = fit_directions(pos, neg, diff_in_means(), model=lm)
    insample = separation(
        pos, neg, ds, scores=("auroc", "cohens_d"), n_boot=n_boot, seed=seed, progress=False
    )
    ids = lm.encode(pos_prompts), lm.encode(neg_prompts)
    base_oof = baseline_oof(*ids, int(lm.cfg.d_vocab), seed=seed)
    held = against_baselines(
        layer_oof(pos, neg, seed=seed, progress=False), base_oof, n_boot=n_boot, seed=seed
    )
    base = auroc_table(base_oof, n_boot=n_boot, seed=seed)
    scores = pd.concat([insample, held], ignore_index=True).assign(contrast=name)
    return scores, base.assign(contrast=name), ds, pos, neg


def run_real_demo(
    out_dir: str | Path = "liref-real-demo",
    *,
    model: str | LensModel = "smollm2-135m",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    n: int = 48,
    n_eval: int = 24,
    n_random: int = 5,
    n_boot: int = 500,
    alphas: tuple[float, ...] = ALPHAS,
    max_tokens: int = 48,
    data_dir: str | os.PathLike[str] | None = None,
    steer_layer: int | None = None,
) -> RealDemoResult:
    """Run the paper's protocol on a real model; returns what it measured, writes a report.

    Args:
        out_dir: Where ``report.html`` and the CSVs go.
        model: A named GGUF model (``"smollm2-135m"``), a ``.gguf`` file, a checkpoint
            folder / hub id that `load_model` reads, or a loaded `LensModel`.
        seed: Seeds the question sampling, folds, bootstraps and random directions.
        device: Torch device.
        progress: Print the steps and show progress bars.
        n: Questions per class per contrast, for fitting and scoring.
        n_eval: Held-out GSM8K and NQ questions (each) for steering.
        n_random: Norm-matched random directions per steering cell.
        n_boot: Bootstrap replicates of every interval.
        alphas: Strengths of `Add` (natural unit of the direction).
        max_tokens: Keep questions of at most this many tokens (bounds the CPU time; the
            same cap holds in both classes).
        data_dir: Folder with the full question files; None (default) uses the samples
            shipped with the package (``load_task(name, source="builtin")``).
        steer_layer: The layer to steer at; by default the GSM8K-vs-NQ layer with the best
            held-out AUROC (ties within 0.01 broken by the largest in-sample Cohen's d).
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}
    say: Callable[[str], None] = print if progress else (lambda _: None)

    def lap(step: str) -> None:
        timings[step] = round(time.perf_counter() - start - sum(timings.values()), 1)
        say(f"  [{step}: {timings[step]:.0f} s]")

    out = Path(out_dir)
    if isinstance(model, LensModel):
        lm, name = model, model.name
        say(f"[1/5] {name}: loaded; reading the questions ...")
    else:
        name = model
        say(f"[1/5] loading {name} ...")
        lm = load_model(model, device=device)
    data = _read_questions(data_dir)
    rng = np.random.default_rng(seed)
    gsm = _pick(lm, data["gsm8k"].items, n + n_eval, rng, max_tokens)
    nq = _pick(lm, data["nq_open"].items, n + n_eval, rng, max_tokens)
    mmlu = data["mmlu_pro"].items
    reason = [it for it in mmlu if it.meta.get("category") in REASONING_CATEGORIES]
    memory = [it for it in mmlu if it.meta.get("category") in MEMORY_CATEGORIES]
    mm_pos, mm_neg = _pick(lm, reason, n, rng, max_tokens), _pick(lm, memory, n, rng, max_tokens)
    lap("load")
    layers = list(range(1, lm.n_layers))
    contrasts = {
        "gsm8k_vs_nq": ([_prompt(it.question) for it in gsm[:n]],
                        [_prompt(it.question) for it in nq[:n]]),
        "mmlu_pro_categories": ([_prompt(it.question) for it in mm_pos],
                                [_prompt(it.question) for it in mm_neg]),
    }  # fmt: skip
    all_scores, all_base, fitted = [], [], {}
    for k, (name, (p, q)) in enumerate(contrasts.items(), start=2):
        say(f"[{k}/5] {name}: caching {len(p)} + {len(q)} prompts at {len(layers)} layers ...")
        s, b, ds, pos, neg = _contrast(lm, name, p, q, layers, seed, n_boot, progress)
        all_scores.append(s)
        all_base.append(b)
        fitted[name] = (ds, pos, neg)
        lap(name)
    scores = pd.concat(all_scores, ignore_index=True)
    baselines = pd.concat(all_base, ignore_index=True)

    main = scores[scores["contrast"] == "gsm8k_vs_nq"]
    layer = steer_layer if steer_layer is not None else _best_layer(main)
    say(f"[4/5] steering at layer {layer} with {n_random} random controls ...")
    evalset = _steer_evalset(lm, gsm[n:], nq[n:])
    config = ExperimentConfig(
        layers=(layer,),
        alphas=tuple(alphas),
        ops=("add",),
        n_random=n_random,
        seed=seed,
        n_boot=n_boot,
        batch_size=16,
        positions="last()",
    )
    ds = fitted["gsm8k_vs_nq"][0]
    results = Experiment(lm, ds, evalset, config).run(out / "experiment", progress=progress)
    steering = _steer_table(results)
    lap("steering")
    say("[5/5] writing the report ...")
    seconds = time.perf_counter() - start
    for fname, table in (("scores", scores), ("baselines", baselines), ("steering", steering)):
        atomic_write_text(out / f"{fname}.csv", table.to_csv(index=False))
    report = _write_report(
        out, lm, name, scores, baselines, steering, results, fitted, layer, seconds, seed
    )
    lap("report")
    seconds = time.perf_counter() - start
    if progress:
        print(summary(scores, baselines, steering, layer, report, seconds))
    return RealDemoResult(out, report, scores, baselines, steering, layer, seconds, timings)


# ----- report -----------------------------------------------------------------------------
def _verdicts(scores: pd.DataFrame, baselines: pd.DataFrame) -> list[str]:
    out = []
    for name in scores["contrast"].unique():
        s = scores[(scores["contrast"] == name) & (scores["score"] == "cv_auroc")]
        b = baselines[baselines["contrast"] == name].set_index("feature")["auroc"]
        best = s.sort_values(["value", "layer"], ascending=[False, True]).iloc[0]
        beat = s[s["beats_baseline"]]["layer"].tolist()
        out.append(
            f"{name}: best held-out AUROC {best['value']:.3f} "
            f"[{best['ci_low']:.3f}, {best['ci_high']:.3f}] at layer {int(best['layer'])}; "
            f"trivial readers: length {b['length']:.3f}, bag of tokens "
            f"{b['bag_of_tokens']:.3f}. Layers that beat every trivial reader (paired "
            f"bootstrap of the AUROC difference, lower bound above 0): {beat if beat else 'none'}."
        )
    return out


def _steer_lines(steering: pd.DataFrame, layer: int) -> list[str]:
    out = []
    for subset in ("gsm8k", "nq_open"):
        for alpha in sorted(steering["alpha"].unique()):
            r = steering[
                (steering["subset"] == subset)
                & (steering["alpha"] == alpha)
                & (steering["metric"] == "p_correct")
            ]
            k = steering[
                (steering["subset"] == subset)
                & (steering["alpha"] == alpha)
                & (steering["metric"] == "kl")
            ]
            if r.empty or k.empty:
                continue
            r, k = r.iloc[0], k.iloc[0]
            out.append(
                f"Add at layer {layer}, alpha {alpha:+g}, {subset} ({int(r['n'])} questions): "
                f"P(gold vs distractor) {r['baseline']:.3f} -> {r['fitted']:.3f} "
                f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]; {int(r['n_random'])} random "
                f"directions: {r['random_mean']:.3f} (range {r['random_min']:.3f}-"
                f"{r['random_max']:.3f}). KL {k['fitted']:.3f} nats vs random "
                f"{k['random_mean']:.3f} (range {k['random_min']:.3f}-{k['random_max']:.3f})."
            )
    return out


def summary(
    scores: pd.DataFrame,
    baselines: pd.DataFrame,
    steering: pd.DataFrame,
    layer: int,
    report: Path | None = None,
    seconds: float | None = None,
) -> str:
    """The printed summary: held-out AUROC per layer vs the baselines, and steering."""
    lines = []
    for name in scores["contrast"].unique():
        s = scores[(scores["contrast"] == name) & (scores["score"] == "cv_auroc")]
        lines.append(f"\n{name}: held-out AUROC per layer (diff-in-means, 5 folds)")
        cols = ["layer", "value", "ci_low", "ci_high", "baseline_auroc", "diff", "diff_low"]
        cols += ["diff_high", "beats_baseline"]
        lines.append(s[cols].to_string(index=False, float_format="%.3f"))
    lines.append("\nTrivial readers (held-out AUROC):")
    lines.append(baselines.to_string(index=False, float_format="%.3f"))
    lines.append("\nVerdicts:")
    lines += ["- " + v for v in _verdicts(scores, baselines)]
    lines.append("\nSteering (next-token metrics on held-out questions):")
    lines += ["- " + v for v in _steer_lines(steering, layer)]
    if report is not None:
        lines.append(f"\nReport: {report.resolve()}  ({seconds or 0:.0f} s)")
    return "\n".join(lines)


def _write_report(
    out: Path,
    lm: LensModel,
    model: str,
    scores: pd.DataFrame,
    baselines: pd.DataFrame,
    steering: pd.DataFrame,
    results: Results,
    fitted: dict[str, tuple[DirectionSet, Activations, Activations]],
    layer: int,
    seconds: float,
    seed: int,
) -> Path:
    report = Report(f"liref_lens: reasoning vs memorization on {model}")
    report.findings([*_verdicts(scores, baselines), *_steer_lines(steering, layer)])
    report.text(
        f"Model: {lm.name} ({lm.n_layers} layers, d_model {lm.d_model}, fingerprint "
        f"{lm.fingerprint}). Last-token resid_pre activations, difference-in-means direction "
        f"per layer. Held-out AUROC: direction fitted on 4 of 5 folds, scored on the fifth. "
        f"Run time {seconds:.0f} s."
    )
    for name, (_, pos, neg) in fitted.items():
        s = scores[scores["contrast"] == name]
        fig = layer_scores(s, ("auroc", "cv_auroc"))
        b = baselines[baselines["contrast"] == name]
        for row in b.itertuples():
            for r in (1, 2):
                fig.add_hline(
                    y=float(row.auroc), line_dash="dot", row=r, col=1,
                    annotation_text=f"{row.feature} {row.auroc:.2f}",
                )  # fmt: skip
        report.figure(
            f"{name}: separation by layer",
            fig,
            caption="Top: in-sample AUROC; bottom: held-out AUROC. Dotted: the trivial "
            "readers' held-out AUROC (prompt length, bag of tokens). Bands: 95% bootstrap.",
        )
        best = _best_layer(s)
        names = ("reasoning", "memory")
        report.figure(
            f"{name}: the two groups at layer {best}",
            pca_scatter(pos.at_layer(best), neg.at_layer(best), names=names, layer=best),
        )
    for subset in ("gsm8k", "nq_open"):
        report.figure(
            f"Steering on {subset}: P(gold) vs alpha at layer {layer}",
            dose_response(results.table, "p_correct", layer=layer, op="add", subset=subset),
            caption="Grey: the band (min to max) of the norm-matched random directions.",
        )
    report.table("Held-out and in-sample layer scores", scores)
    report.table("Trivial readers", baselines)
    report.table("Steering", steering)
    report.config.update({"model": model, "seed": seed, "experiment": results.config.to_json()})
    return report.write(out / "report.html")
