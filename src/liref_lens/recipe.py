"""The paper's protocol on a real model, as two steps the CLI and notebooks share.

1. `fit_run`: zero-shot prompts ("Q: ...\\nA: ") of reasoning-heavy and memory-heavy questions
   (two tasks, or one task split by its labels, e.g. MMLU-Pro by ``memory_reason_score``),
   last-token activations at every layer, one difference-in-means direction per layer (the
   LiReF), and layer-wise separation scores with bootstrap CIs. Writes
   ``directions.safetensors``, ``scores.csv`` and ``fit.json`` into the run folder.
2. `sweep_run`: an `Experiment` on an evaluation task (few-shot prompts, greedy generation,
   answers parsed by the task) over layers x alphas x ops with norm-matched random controls.
   Writes the experiment folder (``config.json``, ``cells/``, ``results.csv`` ...).

`report_run` turns a run folder into ``report.html``. Memory: activations of
``n_prompts x n_layers x d_model`` floats; the model itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ._io import atomic_write_text
from .cache import cache_activations
from .designs import Contrast, design_plot, heldout
from .directions import DirectionSet, diff_in_means, fit_directions
from .experiment import EvalSet, Experiment, ExperimentConfig, Results
from .model import LensModel
from .plotting import dose_response, layer_scores, sweep_heatmap
from .positions import parse_position
from .report import Report
from .scores import separation
from .tasks import Task

__all__ = ["fit_run", "report_run", "sweep_run"]


def fit_run(
    model: LensModel,
    reasoning: Task,
    memory: Task,
    out_dir: str | Path,
    *,
    site: str = "resid_pre",
    position: str = "last()",
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    n_boot: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> tuple[DirectionSet, pd.DataFrame]:
    """Fit per-layer directions (reasoning minus memory) and score every layer.

    By default every layer is fitted, except layer 0 for ``resid_pre``: there the residual
    stream is the token embedding, identical for all prompts that end with the template's
    last token, so the difference of means is exactly zero.

    ``scores.csv`` holds the in-sample scores (``auroc``, ``probe_acc``, ``cohens_d``) and the
    held-out AUROC (``cv_auroc``) of each layer next to the best trivial reader of the prompt
    (length, bag of tokens) scored on the same folds, with the paired verdict
    (`liref_lens.designs.heldout`); ``baselines.csv`` the readers themselves.
    """
    out = Path(out_dir)
    if layers is None:
        first = 1 if site == "resid_pre" else 0
        layers = list(range(first, model.n_layers))
    if len(reasoning) == 0 or len(memory) == 0:
        raise ValueError(
            f"need prompts in both groups, got {len(reasoning)} reasoning and {len(memory)} "
            "memory; check the task labels or the -n limits"
        )
    pos_sel = parse_position(position)
    kw: dict[str, Any] = dict(
        layers=list(layers), sites=(site,), position=pos_sel, batch_size=batch_size
    )
    pos_prompts, neg_prompts = reasoning.prompts("zero_shot"), memory.prompts("zero_shot")
    pos = cache_activations(model, pos_prompts, progress=progress, **kw)
    neg = cache_activations(model, neg_prompts, progress=progress, **kw)
    directions = fit_directions(pos, neg, diff_in_means(), model=model)
    folds = max(2, min(5, len(reasoning), len(memory)))  # fewer folds for tiny groups
    scores = separation(
        pos, neg, directions, n_boot=n_boot, seed=seed, cv_folds=folds, progress=progress
    )
    # held out, next to the trivial readers of the prompt on the same folds (paired verdicts)
    ids = tuple(map(tuple, model.encode([*pos_prompts, *neg_prompts])))
    contrast = Contrast("fit", pos, neg, ids, int(model.cfg.d_vocab))
    held = heldout(contrast, cv_folds=folds, n_boot=n_boot, seed=seed)
    scores = pd.concat([scores, held.layers], ignore_index=True)
    directions.save(out / "directions.safetensors")
    atomic_write_text(out / "scores.csv", scores.to_csv(index=False))
    atomic_write_text(out / "baselines.csv", held.baselines.to_csv(index=False))
    info = {
        "model": model.name,
        "fingerprint": model.fingerprint,
        "reasoning_task": reasoning.name,
        "memory_task": memory.name,
        "n_reasoning": len(reasoning),
        "n_memory": len(memory),
        # where the questions came from: file paths and SHA-256, and how they were selected
        "reasoning_data": reasoning.provenance,
        "memory_data": memory.provenance,
        "site": site,
        "position": position,
        "layers": list(layers),
        "seed": seed,
    }
    atomic_write_text(out / "fit.json", json.dumps(info, indent=2))
    return directions, scores


def sweep_run(
    model: LensModel,
    directions: DirectionSet,
    task: Task,
    out_dir: str | Path,
    *,
    layers: Sequence[int],
    alphas: Sequence[float],
    ops: Sequence[str] = ("scale",),
    n_random: int = 10,
    max_new_tokens: int = 256,
    style: str = "few_shot",
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> Results:
    """Steer along the fitted directions while the model answers ``task``; score by parsing."""
    evalset = EvalSet.from_task(task, style=style)
    config = ExperimentConfig(
        layers=tuple(layers),
        alphas=tuple(float(a) for a in alphas),
        ops=tuple(ops),
        n_random=n_random,
        seed=seed,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        extra={"task": task.name, "style": style},
    )
    return Experiment(model, directions, evalset, config).run(
        Path(out_dir) / "sweep", progress=progress
    )


def _wide(table: pd.DataFrame, keys: list[str], column: str, main: str) -> pd.DataFrame:
    """One row per ``keys``, one column per value of ``column``, with ``main``'s interval.

    Example:
        >>> t = pd.DataFrame({"layer": [1, 1], "score": ["auroc", "cohens_d"],
        ...     "value": [0.9, 1.5], "ci_low": [0.8, 1.0], "ci_high": [1.0, 2.0]})
        >>> _wide(t, ["layer"], "score", "auroc").columns.tolist()
        ['layer', 'auroc', 'ci_low', 'ci_high', 'cohens_d']
    """
    values = table.pivot_table(index=keys, columns=column, values="value", sort=False)
    head = table[table[column] == main].set_index(keys)[["ci_low", "ci_high"]]
    wide = values[[main]].join(head).join(values.drop(columns=main))
    wide.columns.name = None
    return wide.reset_index()


def _read(path: Path, read: Any, writer: str) -> Any:
    """``read(path)``, or one line naming the file, what is wrong and how to remake it."""
    try:
        return read(path)
    except FileNotFoundError as err:
        missing = Path(err.filename) if err.filename else path
        raise FileNotFoundError(
            f"{missing} is missing from the run folder; rerun `{writer}` with --out {path.parent}"
        ) from None
    except (ValueError, KeyError, OSError, UnicodeDecodeError) as err:
        what = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(
            f"{path} is damaged ({type(err).__name__}: {what}); rerun `{writer}` into a new "
            "--out folder"
        ) from None


_FIT_KEYS = ("reasoning_task", "memory_task", "n_reasoning", "n_memory")


def _fit_info(path: Path) -> dict[str, Any]:
    info = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(info, dict) or any(k not in info for k in _FIT_KEYS):
        raise ValueError(f"expected a JSON object with the keys {', '.join(_FIT_KEYS)}")
    return info


def report_run(run_dir: str | Path) -> Path:
    """Write ``report.html`` for a run folder made by `fit_run` and/or `sweep_run`."""
    run = Path(run_dir)
    report = Report(f"liref_lens run: {run.name}")
    findings = []
    if (run / "scores.csv").exists():
        scores = _read(run / "scores.csv", pd.read_csv, "liref-lens fit")
        info = _read(run / "fit.json", _fit_info, "liref-lens fit")
        report.config["fit"] = info
        auc = scores[scores["score"] == "auroc"].sort_values("value", ascending=False).iloc[0]
        findings.append(
            f"The difference-in-means direction separates {info['reasoning_task']} "
            f"({info['n_reasoning']}) from {info['memory_task']} ({info['n_memory']}) prompts "
            f"best at layer {int(auc['layer'])}: AUROC {auc['value']:.3f} "
            f"[{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]."
        )
        held = scores[scores["score"] == "cv_auroc"]
        if len(held):  # runs from before held-out scoring have none
            best = held.sort_values(["value", "layer"], ascending=[False, True]).iloc[0]
            beat = held[held["beats_baseline"].astype(bool)]["layer"].astype(int).tolist()
            findings.append(
                f"Held out (fitted on the training folds, scored on the held-out fold), the best "
                f"layer is {int(best['layer'])}: AUROC {best['value']:.3f} [{best['ci_low']:.3f}, "
                f"{best['ci_high']:.3f}], against {best['baseline_auroc']:.3f} for the best "
                f"trivial reader of the prompt ({best['baseline']}) on the same folds. Layers "
                "whose paired interval of the difference lies above 0: "
                f"{', '.join(map(str, beat)) if beat else 'none'}."
            )
            report.figure(
                "Held-out AUROC against the trivial readers",
                design_plot(held.assign(design="heldout", contrast="fit")),
            )
        report.figure("Layer-wise separation (in sample)", layer_scores(scores))
        report.table(
            "Layer scores",
            _wide(scores, ["layer"], "score", "auroc"),
            caption="Best layers first, by AUROC; ci_low and ci_high are its 95% bootstrap "
            "interval. probe_acc: cross-validated logistic-probe accuracy; cohens_d: "
            "standardized mean difference of the projections.",
            sort_by="auroc",
        )
    if (run / "sweep" / "results.parquet").exists():
        results = _read(run / "sweep", Results.load, "liref-lens sweep")
        t = results.table
        report.config["sweep"] = json.loads(results.config.to_json())
        metric = "gen_acc" if "gen_acc" in set(t["metric"]) else "kl"
        base = t[(t["op"] == "baseline") & (t["metric"] == metric) & (t["subset"] == "all")]
        fitted = t[
            (t["control"] < 0)
            & (t["op"] != "baseline")
            & (t["metric"] == metric)
            & (t["subset"] == "all")
        ]
        if not fitted.empty and not base.empty:
            best = fitted.sort_values("value", ascending=False).iloc[0]
            rand = t[
                (t["control"] >= 0)
                & (t["op"] == best["op"])
                & (t["layer"] == best["layer"])
                & (t["alpha"] == best["alpha"])
                & (t["metric"] == metric)
                & (t["subset"] == "all")
            ]["value"]
            findings.append(
                f"Baseline {metric} {base['value'].iloc[0]:.3f}; best steered cell "
                f"({best['op']}, layer {int(best['layer'])}, alpha {best['alpha']:g}): "
                f"{best['value']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}]; "
                + (
                    f"{len(rand)} norm-matched random directions there: "
                    f"{rand.mean():.3f} on average (range {rand.min():.3f} to {rand.max():.3f})."
                    if len(rand)
                    else "no random controls were run."
                )
            )
            op = str(best["op"])
            report.figure(f"{metric} by layer and alpha ({op})", sweep_heatmap(t, metric, op=op))
            report.figure(
                f"Dose-response at layer {int(best['layer'])}",
                dose_response(t, metric, layer=int(best["layer"]), op=op),
            )
        keys = ["op", "layer", "alpha", "direction", "control"]
        report.table(
            "Results (all prompts)",
            _wide(t[t["subset"] == "all"], keys, "metric", metric),
            caption=f"One row per cell, best first by {metric} (ci_low, ci_high: its 95% "
            "bootstrap interval). control: -1 for the fitted direction, the index of the "
            "norm-matched random direction otherwise.",
            sort_by=metric,
        )
    if not findings:
        raise FileNotFoundError(f"{run} holds no fit or sweep results (scores.csv, sweep/)")
    report.findings(findings)
    report.blocks.insert(0, report.blocks.pop())  # findings first
    return report.write(run / "report.html")
