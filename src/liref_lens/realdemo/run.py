"""`run_real_demo`: the paper's protocol on a real model, with the confound-controlled designs.

Steps (all seeded): load the model; pick ``n`` questions per class for each contrast
(`liref_lens.realdemo.data`); per contrast cache the last-token ``resid_pre`` activations at
layers 1..n-1 (``resid_pre`` of layer L is the output of block L-1), fit the
difference-in-means direction per layer (saved with its provenance), and score it:

- in sample (`separation`: AUROC and Cohen's d of the projections);
- held out, next to the trivial readers (prompt length, bag of tokens) scored on the same
  folds, with paired verdicts (`liref_lens.designs.heldout`);
- matched on token length, in bins 4 tokens wide (`liref_lens.designs.matched`; where the
  classes' lengths do not overlap, the run says so instead);
- residualised on token length and the contrast's own columns
  (`liref_lens.designs.residualized`);
- transferred: every contrast's readers scored on every other contrast
  (`liref_lens.designs.transfer_matrix`).

Then the first contrast's direction at its best held-out layer is added (``Add`` at the last
prompt token, alpha in the direction's natural unit: +1 moves the memory mean onto the
reasoning mean) to held-out questions of both classes, next to ``n_random`` control directions
of each kind (isotropic random, difference in means of shuffled labels, Gaussian with the
activations' covariance; all norm-matched), and each question's change is read
(`liref_lens.designs.per_item_effects`).

Memory: activations of ``2 * n`` prompts per contrast x layers x d_model floats.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_write_text
from ..designs import (
    Contrast,
    DesignResult,
    design_table,
    heldout,
    matched,
    per_item_effects,
    residualized,
    steerability_summary,
    transfer_matrix,
)
from ..directions import fit_directions
from ..experiment import Experiment, ExperimentConfig
from ..model import LensModel, load_model
from ..scores import separation
from .data import ContrastSpec, default_contrasts, item_meta, pick_questions, prompt
from .steering import best_layer, steer_evalset, steer_table

__all__ = ["ALPHAS", "CONTROLS", "RealDemoResult", "run_real_demo"]

ALPHAS = (-1.0, 1.0)
#: control kinds of the steering step, ``n_random`` of each (`liref_lens.controls`)
CONTROLS = ("random", "shuffled", "covariance")
#: the matched design's bins of token length: 4 tokens wide
LENGTH_BINS = tuple(range(0, 4097, 4))


@dataclass(frozen=True)
class RealDemoResult:
    """What the real-model demo measured (each table is also a CSV next to the report)."""

    out_dir: Path
    report: Path
    scores: pd.DataFrame  # contrast, layer, score (auroc, cohens_d, cv_auroc), value, CI (+verdict)
    baselines: pd.DataFrame  # contrast, feature, auroc, ci_low, ci_high, acc, ... (held out)
    designs: pd.DataFrame  # `design_table`: every design of every contrast, per layer
    transfer: pd.DataFrame  # `transfer_matrix` (empty with one contrast)
    steering: pd.DataFrame  # `steer_table`
    effects: pd.DataFrame  # `per_item_effects`
    steerability: pd.DataFrame  # `steerability_summary`
    steer_layer: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _designs(
    c: Contrast, spec: ContrastSpec, seed: int, n_boot: int, method: str, notes: list[str]
) -> list[DesignResult]:
    """Held-out, matched and residualised designs of one contrast; what cannot run, in notes."""
    kw: dict[str, Any] = dict(n_boot=n_boot, seed=seed)
    out = [heldout(c, **kw)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out.append(matched(c, bins=LENGTH_BINS, min_items=8, **kw))
        except ValueError as err:
            notes.append(f"{c.name}: no matched design: {err}")
        out.append(residualized(c, ["token_length", *spec.columns], method=method, **kw))
    for w in caught:
        if issubclass(w.category, UserWarning):
            text = str(w.message)
            notes.append(text if text.startswith(c.name) else f"{c.name}: {text}")
    return out


def _versions() -> dict[str, str]:
    found = {}
    for name in ("liref-lens", "torch", "transformers", "transformer-lens", "scikit-learn"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _digest(texts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()


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
    contrasts: Sequence[ContrastSpec] | None = None,
    steer_layer: int | None = None,
    controls: tuple[str, ...] = CONTROLS,
    residualize: str = "lstsq",
) -> RealDemoResult:
    """Run the paper's protocol on a real model with the confound controls; write a report.

    Args:
        out_dir: Where ``report.html``, the CSVs, ``run.json`` and ``directions/`` go.
        model: A named GGUF model (``"smollm2-135m"``, ``"gemma3-270m"``), a ``.gguf`` file, a
            checkpoint folder / hub id that `load_model` reads, or a loaded `LensModel`.
        seed: Seeds the question sampling, folds, bootstraps and control directions.
        device: Torch device (when ``model`` is a name).
        progress: Print the steps and show progress bars.
        n: Questions per class per contrast, for fitting and scoring.
        n_eval: Held-out questions per class of the first contrast, for steering.
        n_random: Control directions of each kind in ``controls``.
        n_boot: Bootstrap replicates of every interval.
        alphas: Strengths of `Add` (natural unit of the direction).
        max_tokens: Keep questions of at most this many tokens (bounds the CPU time).
        data_dir: A folder with the full question files (`liref_lens.realdemo.data.FILES`);
            default: the samples shipped with the package. Ignored with ``contrasts``.
        contrasts: The contrasts to run (default `default_contrasts`); the first is steered.
        steer_layer: The layer to steer at; by default the first contrast's layer with the
            best held-out AUROC (ties within 0.01 broken by the largest in-sample Cohen's d).
        controls: Kinds of control directions (`liref_lens.ExperimentConfig.controls`).
        residualize: ``"lstsq"`` or ``"leace"`` (`liref_lens.designs.residualized`).
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}
    say: Callable[[str], None] = print if progress else (lambda _: None)

    def lap(step: str) -> None:
        timings[step] = round(time.perf_counter() - start - sum(timings.values()), 1)
        say(f"  [{step}: {timings[step]:.0f} s]")

    out = Path(out_dir)
    if contrasts is None:
        specs, sources = default_contrasts(data_dir, seed=seed)
    else:
        specs, sources = list(contrasts), []
    names = [s.name for s in specs]
    if not specs or len(set(names)) != len(names):
        raise ValueError(f"give one or more contrasts with distinct names, got {names}")
    for line in sources:
        say(f"  data: {line}")
    if isinstance(model, LensModel):
        lm = model
    else:
        say(f"[1/5] loading {model} ...")
        lm = load_model(model, device=device)
    rng = np.random.default_rng(seed)
    picked = {
        s.name: tuple(
            pick_questions(
                lm, task.items, n + (n_eval if i == 0 else 0), rng, s.max_tokens or max_tokens
            )
            for task in (s.reasoning, s.memory)
        )
        for i, s in enumerate(specs)
    }
    lap("load")

    layers = list(range(1, lm.n_layers))
    read: dict[str, Contrast] = {}
    results: list[DesignResult] = []
    insample: list[pd.DataFrame] = []
    notes: list[str] = []
    directions = {}
    for k, spec in enumerate(specs):
        pos, neg = (rows[:n] for rows in picked[spec.name])
        say(f"[2/5] {spec.name} ({k + 1}/{len(specs)}): {n} + {n} prompts at {len(layers)} layers")
        meta = None
        if spec.columns:
            meta = pd.DataFrame([item_meta(it, spec.columns) for it in [*pos, *neg]])
        c = Contrast.read(
            lm,
            spec.name,
            [prompt(it.question) for it in pos],
            [prompt(it.question) for it in neg],
            layers=layers,
            meta=meta,
            progress=progress,
        )
        read[spec.name] = c
        directions[spec.name] = ds = fit_directions(c.pos, c.neg, model=lm)
        ds.save(out / "directions" / f"{spec.name}.safetensors")
        insample.append(
            separation(
                c.pos,
                c.neg,
                ds,
                scores=("auroc", "cohens_d"),
                n_boot=n_boot,
                seed=seed,
                progress=False,
            ).assign(contrast=spec.name)
        )
        results += _designs(c, spec, seed, n_boot, residualize, notes)
        lap(spec.name)
    designs = design_table(results)
    held = [r for r in results if r.design == "heldout"]
    scores = pd.concat(
        [*insample, *(r.layers.assign(contrast=r.contrast) for r in held)], ignore_index=True
    )
    baselines = pd.concat([r.baselines.assign(contrast=r.contrast) for r in held])
    say(f"[3/5] transfer between {len(read)} contrasts ...")
    transfer = (
        transfer_matrix(list(read.values()), n_boot=n_boot, seed=seed)
        if len(read) > 1
        else pd.DataFrame()
    )
    lap("transfer")

    main = specs[0]
    c = read[main.name]
    if steer_layer is None:
        d = scores[(scores["contrast"] == main.name) & (scores["score"] == "cohens_d")]
        steer_layer = best_layer(held[0].layers, d)
    say(f"[4/5] steering at layer {steer_layer} with {n_random} controls of each kind {controls}")
    names2 = (main.reasoning.name, main.memory.name)
    evalset = steer_evalset(lm, picked[main.name][0][n:], picked[main.name][1][n:], names2)
    config = ExperimentConfig(
        layers=(steer_layer,),
        alphas=tuple(alphas),
        ops=("add",),
        n_random=n_random,
        controls=tuple(controls),
        seed=seed,
        n_boot=n_boot,
        batch_size=16,
        positions="last()",
    )
    experiment = Experiment(
        lm, directions[main.name], evalset, config, control_activations=(c.pos, c.neg)
    )
    steered = experiment.run(out / "experiment", progress=progress)
    steering = steer_table(steered)
    effects = per_item_effects(steered, expect={names2[0]: 1, names2[1]: -1})
    steerability = steerability_summary(effects, n_boot=n_boot, seed=seed)
    lap("steering")

    say("[5/5] writing the report ...")
    tables = {
        "scores": scores,
        "baselines": baselines,
        "designs": designs,
        "transfer": transfer,
        "steering": steering,
        "per_item": effects,
        "steerability": steerability,
    }
    for fname, table in tables.items():
        atomic_write_text(out / f"{fname}.csv", table.to_csv(index=False))
    seconds = time.perf_counter() - start
    record = {
        "model": lm.name,
        "fingerprint": lm.fingerprint,
        "dtype": lm.dtype_name,
        "device": str(lm.device),
        "attention": lm.attention_path,
        "seed": seed,
        "sizes": {
            "n": n,
            "n_eval": n_eval,
            "n_random": n_random,
            "n_boot": n_boot,
            "max_tokens": max_tokens,
            "alphas": list(alphas),
            "controls": list(controls),
            "residualize": residualize,
        },
        "steer_layer": steer_layer,
        "seconds": round(seconds, 1),
        "versions": _versions(),
        "contrasts": {
            s.name: {
                "reasoning": s.reasoning.provenance,
                "memory": s.memory.provenance,
                "prompts_sha256": _digest(
                    [it.question for it in (*picked[s.name][0][:n], *picked[s.name][1][:n])]
                ),
                "directions": f"directions/{s.name}.safetensors",
            }
            for s in specs
        },
        "notes": notes,
    }
    atomic_write_text(out / "run.json", json.dumps(record, indent=2, default=str) + "\n")
    from .report import summary, write_report

    report = write_report(out, lm, tables, steered, read, steer_layer, notes, seconds, seed)
    lap("report")
    seconds = time.perf_counter() - start
    result = RealDemoResult(
        out,
        report,
        scores,
        baselines,
        designs,
        transfer,
        steering,
        effects,
        steerability,
        steer_layer,
        seconds,
        notes,
        timings,
    )
    if progress:
        print(summary(result))
    return result
