"""The ``liref-lens`` command.

Sub-commands:
- ``demo``: the offline testbed end to end (cache, fit, score, steer with controls, report).
- ``train-testbed``: retrain the testbed model with a seed.
- ``fit``: the paper's protocol step 1 on any model: directions + layer scores.
- ``sweep``: step 2: steer while the model answers a task, with random controls.
- ``report``: HTML report of a run folder.

Nothing runs at import; `main` parses arguments and dispatches. Arguments are checked before a
model is loaded; an error the library raises on bad input (``ValueError``, ``KeyError``,
``OSError``) prints one line, ``liref-lens: error: ...``, and exits with status 2
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._warnings import quiet_third_party_warnings

__all__ = ["build_parser", "main"]

_LAYERS_SYNTAX = "comma-separated layer numbers and ranges, e.g. 4,8,12 or 1-23 or 0-3,7"


def _floats(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers, e.g. --alphas=-0.5,0.5"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError("give at least one number, e.g. --alphas=-0.5,0.5")
    return out


def _layers(text: str) -> list[int]:
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            head, dash, hi = part[1:].partition("-")  # part[0] may be a minus sign
            if dash:
                lo = int(part[0] + head)
                if lo > int(hi):
                    raise ValueError
                out += list(range(lo, int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad layers {text!r}: expected {_LAYERS_SYNTAX}"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError(f"no layers in {text!r}: expected {_LAYERS_SYNTAX}")
    return out


def _threads(text: str) -> int | str:
    if text == "auto":
        return "auto"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number >= 1, got {text!r}")


def _position(text: str) -> str:
    from .positions import parse_position

    try:
        return str(parse_position(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _ops(text: str) -> list[str]:
    from .experiment import OP_KINDS

    ops = [o.strip() for o in text.split(",") if o.strip()]
    bad = [o for o in ops if o not in OP_KINDS]
    if bad or not ops:
        raise argparse.ArgumentTypeError(
            f"unknown ops {bad or text!r}; give a comma-separated list of {', '.join(OP_KINDS)}"
        )
    return ops


def _task_spec(text: str) -> str:
    from .tasks import LOADERS

    name = text.partition(":")[0]
    if name not in LOADERS:
        raise argparse.ArgumentTypeError(
            f"unknown task {name!r}; known: {', '.join(sorted(LOADERS))} "
            "(write NAME or NAME:SOURCE, SOURCE a hub id or a local file)"
        )
    return text


def _task(spec: str, n: int | None, seed: int, label_file: str | None = None) -> Any:
    """``name`` or ``name:source`` (hub id or local path) -> Task; ``n`` questions drawn at
    random with ``seed`` (one template after another where the task has templates, e.g.
    GSM-Symbolic), or all of them."""
    from .tasks import load_task

    name, _, source = spec.partition(":")
    kwargs: dict[str, Any] = {"sample": n, "seed": seed}
    if source:
        kwargs["source"] = source
    task = load_task(name, **kwargs)
    if label_file:
        task = task.with_labels(label_file)
    return task


def _check_out(path: Path | None) -> None:
    """``--out`` names a folder to create or reuse, never an existing file."""
    if path is not None and path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is an existing file; give a folder (new or a run folder)")


def _model(args: argparse.Namespace) -> Any:
    """Load ``--model``, set the torch thread count (``--threads``) and say so on stderr."""
    import torch

    from ._threads import choose_threads, n_parameters
    from .model import load_model

    dtype = {
        "auto": None,  # load_model's default for the device
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }
    lm = load_model(
        args.model,
        device=args.device,
        dtype=dtype[getattr(args, "dtype", "auto")],  # `demo --model` has no --dtype
        backend=getattr(args, "backend", None),
    )
    n, why = choose_threads(args.threads, n_parameters(lm.model))
    torch.set_num_threads(n)  # `main` restores the previous count when the command ends
    print(
        f"liref-lens {args.command}: {lm.name} on {lm.device}; torch threads: {n} ({why})",
        file=sys.stderr,
        flush=True,
    )
    return lm


def _cmd_fit(args: argparse.Namespace) -> int:
    import pandas as pd

    from .recipe import fit_run

    # everything that can fail on bad input comes before the model load
    if args.task:
        if args.reasoning_task or args.memory_task:
            args.parser.error("give --task or --reasoning-task/--memory-task, not both")
        reasoning, memory = _task(args.task, args.n, args.seed, args.labels).split()
    else:
        if not (args.reasoning_task and args.memory_task):
            args.parser.error(
                "give --task (one labelled task, split by its labels) or both "
                "--reasoning-task and --memory-task"
            )
        if args.labels:
            args.parser.error("--labels goes with --task")
        reasoning = _task(args.reasoning_task, args.n, args.seed)
        memory = _task(args.memory_task, args.n, args.seed)
    lm = _model(args)
    _, scores = fit_run(
        lm,
        reasoning,
        memory,
        args.out,
        site=args.site,
        position=args.position,
        layers=args.layers,
        seed=args.seed,
        progress=not args.no_progress,
    )
    held = scores[scores["score"] == "cv_auroc"].sort_values("layer")
    cols = ["layer", "value", "ci_low", "ci_high", "baseline", "baseline_auroc", "diff",
            "diff_low", "diff_high", "beats_baseline"]  # fmt: skip
    held = held[cols].rename(columns={"value": "heldout_auroc"})
    ins = scores[scores["score"] == "auroc"].set_index("layer")["value"]
    held.insert(1, "insample_auroc", held["layer"].map(ins))
    base = pd.read_csv(Path(args.out) / "baselines.csv")
    print(
        f"Held-out AUROC of each layer's direction, {reasoning.name} vs {memory.name} (fitted on "
        "the training folds, scored on the held-out fold; ci: 95% bootstrap), next to the best "
        "trivial reader of the prompt on the same folds; diff: layer minus reader, paired "
        "interval; beats_baseline: the interval lies above 0:"
    )
    print(held.to_string(index=False, float_format="%.3f"))
    print("Trivial readers (held out): " + "; ".join(
        f"{r.feature} {r.auroc:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" for r in base.itertuples()
    ))  # fmt: skip
    beat = held[held["beats_baseline"].astype(bool)]["layer"].tolist()
    print(
        "Layers that beat every trivial reader: "
        + (", ".join(map(str, beat)) if beat else "none (the readers separate the sets as well)")
    )
    print(f"directions and scores written to {args.out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .directions import DirectionSet
    from .recipe import sweep_run

    stored = DirectionSet.load(args.directions)  # a missing or broken file fails before loading
    missing = sorted(set(args.layers) - {int(x) for x in stored.layers})
    if missing:
        raise ValueError(
            f"--layers {missing} are not in {args.directions}, which holds layers "
            f"{[int(x) for x in stored.layers]}"
        )
    task = _task(args.task, args.n, args.seed)
    lm = _model(args)
    directions = DirectionSet.load(args.directions, model=lm)
    results = sweep_run(
        lm,
        directions,
        task,
        args.out,
        layers=args.layers,
        alphas=args.alphas,
        ops=args.ops,
        n_random=args.n_random,
        max_new_tokens=args.max_new_tokens,
        style=args.style,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    t = results.table
    summary = t[(t["subset"] == "all") & (t["metric"].isin(["gen_acc", "parse_fail"]))]
    table = (
        summary.groupby(["op", "layer", "alpha", "direction", "metric"])["value"]
        .mean()
        .unstack("metric")
    )
    print(
        "gen_acc: share of answers the task's parser reads as correct; parse_fail: share it "
        "cannot read (random directions: mean over the controls)"
    )
    print(table.to_string(float_format="%.3f"))
    print(f"results written to {Path(args.out) / 'sweep'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .recipe import report_run

    if args.threads != "auto":
        import torch

        torch.set_num_threads(args.threads)
    print(report_run(args.run))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.model is not None:
        return _cmd_real_demo(args)
    if args.data is not None or args.reasoning_task or args.memory_task:
        raise ValueError(
            "--data, --reasoning-task and --memory-task are for a real model: give --model too "
            "(e.g. smollm2-135m or gemma3-270m)"
        )
    from .demo import run_demo

    run_demo(
        args.out,
        seed=args.seed,
        device=args.device,
        retrain=args.retrain,
        progress=not args.no_progress,
        threads=args.threads,
    )
    return 0


def _cmd_real_demo(args: argparse.Namespace) -> int:
    from .realdemo import ContrastSpec, default_contrasts, run_real_demo, summary

    if args.retrain:
        raise ValueError("--retrain trains the testbed model; it cannot be used with --model")
    if args.data is not None and not args.data.is_dir():
        raise ValueError(f"--data {args.data}: no such folder (it holds the full question files)")
    if bool(args.reasoning_task) != bool(args.memory_task):
        args.parser.error("give both --reasoning-task and --memory-task, or neither")
    # every question file is read before the model loads
    contrasts, sources = default_contrasts(args.data, seed=args.seed)
    if args.reasoning_task:
        mine = ContrastSpec.of(
            _task(args.reasoning_task, None, args.seed), _task(args.memory_task, None, args.seed)
        )
        contrasts = [mine, *(c for c in contrasts if c.name != mine.name)]
    if not args.no_progress:
        for line in sources:
            print(f"  data: {line}", file=sys.stderr)
        print(f"[1/5] loading {args.model} ...", file=sys.stderr)
    lm = _model(args)
    result = run_real_demo(
        args.out, model=lm, seed=args.seed, progress=not args.no_progress, contrasts=contrasts,
        n=args.n, n_eval=args.n_eval,
    )  # fmt: skip
    if args.no_progress:  # with progress, run_real_demo printed it already
        print(summary(result))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import filecmp
    import json

    from .testbed import TrainConfig, shipped_checkpoint, train_testbed

    steps = TrainConfig.steps if args.steps is None else args.steps
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    threads = TrainConfig.threads if args.threads == "auto" else args.threads
    why = "auto: the recipe's" if args.threads == "auto" else f"--threads {threads}"
    print(f"liref-lens train-testbed: torch threads: {threads} ({why})", file=sys.stderr)
    record = train_testbed(
        args.out,
        seed=args.seed,
        config=TrainConfig(steps=steps, threads=threads),
        progress=not args.no_progress,
    )
    print(f"trained in {record['train_seconds']} s; checkpoint in {args.out}")
    shipped_dir = shipped_checkpoint()
    shipped = json.loads((shipped_dir / "training.json").read_text())
    same = shipped["config"] == record["config"] and shipped["seed"] == record["seed"]
    head = f"shipped (seed {shipped['seed']})"
    print(f"{'accuracy':<26} {'this run':>9}  {head}")
    for key, value in record["metrics"].items():
        print(f"{key.removeprefix('acc_'):<26} {value:>9.3f}  {shipped['metrics'][key]:.3f}")
    weights = "model.safetensors"
    if not same:
        print("Recipe or seed differs from the shipped checkpoint's: not a like-for-like check.")
    elif filecmp.cmp(args.out / weights, shipped_dir / weights, shallow=False):
        print("Same recipe and seed: the weights are bit-identical to the shipped checkpoint's.")
    else:
        print(
            "Same recipe and seed, but the weights differ from the shipped checkpoint's: the "
            "float arithmetic here (CPU or torch build) differs from the one that trained it, "
            "so the run drifted like another seed's. Expect 100% on the trained sets and a "
            "held-out accuracy inside the seed spread (testbed/MEASUREMENTS.md)."
        )
    return 0


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=79)


def _common(p: argparse.ArgumentParser, threads_help: str) -> None:
    p.add_argument(
        "--threads",
        type=_threads,
        default="auto",
        metavar="N|auto",
        help=threads_help,
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error instead of a one-line message",
    )


_THREADS_MODEL = (
    "CPU threads for torch (default: auto = 1 for models under 100M parameters, where more "
    "threads only wait on each other on a busy machine; torch's default for larger models)"
)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="hub id, local checkpoint folder, .gguf file, smollm2-135m or gemma3-270m (named "
        "GGUF models, from their packages) (required)",
    )
    p.add_argument("--out", required=True, type=Path, help="run folder (required)")
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:1, ... (default: TransformerLens's choice, CUDA if present)",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=["bridge", "hooked_transformer"],
        help="TransformerLens model class: bridge or hooked_transformer "
        "(default: bridge where installed)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="parameter dtype: auto, float32, bfloat16 or float16 (default: auto = bfloat16 "
        "on a CUDA device, float32 elsewhere)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _common(p, _THREADS_MODEL)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``liref-lens`` (`main` runs it)."""
    from .model import SITES
    from .tasks import LOADERS

    tasks = ", ".join(sorted(LOADERS))
    task_help = (
        f"NAME or NAME:SOURCE; NAME one of {tasks}; SOURCE a hub id or a local file "
        "(default source: the task's hub dataset)"
    )
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="liref-lens",
        description=_wrap(
            "Find and steer reasoning-vs-memorization directions in language models."
        ),
        epilog="Run 'liref-lens SUB-COMMAND --help' for the options of each sub-command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUB-COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the method end to end (offline testbed, or a real model) and write a report",
        description=_wrap(
            "Run the whole method on the offline testbed (cache, fit, score, steer "
            "with random controls, position scan) and write OUT/report.html. With --model, "
            "run the paper's protocol on a real model instead (GSM8K vs NQ-open and a "
            "within-MMLU-Pro split, held-out AUROC next to prompt-length and bag-of-tokens "
            "baselines, steering next to norm-matched random directions)."
        ),
        formatter_class=fmt,
    )
    demo.add_argument(
        "--out", type=Path, default=Path("liref-demo"), help="output folder (default: liref-demo)"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    demo.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    demo.add_argument(
        "--retrain",
        action="store_true",
        help="train the testbed model first (about 4.5 min) instead of using the shipped one",
    )
    demo.add_argument(
        "--model",
        default=None,
        help="a real model: smollm2-135m or gemma3-270m (named GGUF models, from their "
        "packages; see the README), a .gguf file, a checkpoint folder or a hub id (default: "
        "none, the offline testbed); a few minutes on 2 CPU cores",
    )
    demo.add_argument(
        "--data",
        type=Path,
        default=None,
        help="with --model: a folder with any of the full question files (gsm8k_test.jsonl, "
        "nq_open_dev.jsonl, the MMLU-Pro zip, mgsm/mgsm_de.tsv); each one missing comes from "
        "the samples shipped with the package (default: all from the samples)",
    )
    demo.add_argument(
        "--reasoning-task",
        type=_task_spec,
        default=None,
        help="with --model and --memory-task: your own contrast, NAME or NAME:FILE like fit's; "
        "it runs first and is the one steered (default: none, GSM8K vs NQ-open first)",
    )
    demo.add_argument(
        "--memory-task",
        type=_task_spec,
        default=None,
        help="the memory side of --reasoning-task (default: none)",
    )
    demo.add_argument(
        "-n",
        type=int,
        default=48,
        help="with --model: questions per class per contrast, drawn with --seed (default: 48)",
    )
    demo.add_argument(
        "--n-eval",
        type=int,
        default=24,
        help="with --model: held-out questions per class for steering (default: 24)",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _common(demo, _THREADS_MODEL + "; the testbed model is small, so auto is 1")
    demo.set_defaults(func=_cmd_demo, parser=demo)

    train = sub.add_parser(
        "train-testbed",
        help="train the testbed model (seeded)",
        description=_wrap(
            "Train the testbed model and compare its accuracies with the shipped checkpoint's."
        ),
    )
    train.add_argument("--out", type=Path, required=True, help="checkpoint folder (required)")
    train.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    train.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the shipped recipe's)"
    )
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _common(
        train,
        "CPU threads for training (default: auto = the shipped recipe's 1; another count can "
        "change the float arithmetic, so the run is then not a like-for-like check)",
    )
    train.set_defaults(func=_cmd_train)

    fit = sub.add_parser(
        "fit",
        help="fit reasoning-vs-memory directions and score layers",
        description=_wrap(
            "Fit one difference-in-means direction per layer (reasoning minus memory) "
            "and score every layer (AUROC, probe accuracy, Cohen's d with bootstrap intervals). "
            "Needs --task (one labelled task, split by its labels) or both --reasoning-task and "
            "--memory-task. Writes OUT/directions.safetensors, OUT/scores.csv, OUT/fit.json."
        ),
        epilog="examples:\n"
        "  liref-lens fit --model EleutherAI/pythia-410m --out run "
        "--reasoning-task gsm8k --memory-task popqa -n 500\n"
        "  liref-lens fit --model ./ckpt --out run --task mmlu_pro:annotated.parquet",
        formatter_class=fmt,
    )
    _add_model_args(fit)
    fit.add_argument(
        "--task", type=_task_spec, help=f"one labelled task to split (default: none): {task_help}"
    )
    fit.add_argument(
        "--labels", help="CSV/JSON file with id,label columns, attached to --task (default: none)"
    )
    fit.add_argument(
        "--reasoning-task",
        type=_task_spec,
        help="the reasoning group (with --memory-task), written like --task (default: none)",
    )
    fit.add_argument(
        "--memory-task",
        type=_task_spec,
        help="the memory group (with --reasoning-task), written like --task (default: none)",
    )
    fit.add_argument(
        "-n",
        type=int,
        default=None,
        help="questions per task, drawn at random with --seed (one per template first for "
        "tasks with templates, e.g. GSM-Symbolic) (default: all)",
    )
    fit.add_argument(
        "--site",
        default="resid_pre",
        choices=list(SITES),
        metavar="SITE",
        help=f"hook site to read: {', '.join(SITES)} (default: resid_pre)",
    )
    fit.add_argument(
        "--position",
        type=_position,
        default="last()",
        help="token position to read: last(), mean(), every() or at(i), e.g. at(-3) "
        "(default: last())",
    )
    fit.add_argument(
        "--layers",
        type=_layers,
        default=None,
        help=f"{_LAYERS_SYNTAX} (default: all layers; resid_pre skips layer 0)",
    )
    fit.set_defaults(func=_cmd_fit, parser=fit)

    sweep = sub.add_parser(
        "sweep",
        help="steer along the directions while answering a task",
        description=_wrap(
            "Steer along fitted directions while the model answers a task, next to "
            "norm-matched random directions; writes OUT/sweep/."
        ),
        epilog="example:\n"
        "  liref-lens sweep --model EleutherAI/pythia-410m --out run "
        "--directions run/directions.safetensors \\\n"
        "      --task gsm8k -n 200 --layers 4,8,12 --alphas=-0.5,0.5 --ops scale",
        formatter_class=fmt,
    )
    _add_model_args(sweep)
    sweep.add_argument(
        "--directions",
        required=True,
        type=Path,
        help="the directions.safetensors written by fit (required)",
    )
    sweep.add_argument("--task", required=True, type=_task_spec, help=f"(required) {task_help}")
    sweep.add_argument(
        "-n",
        type=int,
        default=None,
        help="questions, drawn at random with --seed (default: all)",
    )
    sweep.add_argument("--layers", required=True, type=_layers, help=f"(required) {_LAYERS_SYNTAX}")
    sweep.add_argument(
        "--alphas",
        required=True,
        type=_floats,
        help="(required) comma-separated strengths; write --alphas=-0.5,0.5 when the first "
        "is negative",
    )
    sweep.add_argument(
        "--ops",
        default=["scale"],
        type=_ops,
        help="comma-separated interventions: add, scale, project_out, paper_scale (default: scale)",
    )
    sweep.add_argument(
        "--n-random",
        type=int,
        default=10,
        help="norm-matched random directions per cell (default: 10)",
    )
    sweep.add_argument(
        "--max-new-tokens", type=int, default=256, help="generation length (default: 256)"
    )
    sweep.add_argument(
        "--style",
        default="few_shot",
        choices=["few_shot", "zero_shot"],
        help="prompt style: few_shot or zero_shot (default: few_shot)",
    )
    sweep.add_argument(
        "--batch-size", type=int, default=8, help="prompts per forward pass (default: 8)"
    )
    sweep.set_defaults(func=_cmd_sweep, parser=sweep)

    report = sub.add_parser(
        "report",
        help="write report.html for a run folder",
        description=_wrap(
            "Write RUN/report.html from what the run folder holds (fit and/or sweep "
            "results) and print its path."
        ),
    )
    report.add_argument("run", type=Path, help="run folder written by fit and/or sweep")
    _common(report, "CPU threads for torch (default: auto = torch's default; report runs no model)")
    report.set_defaults(func=_cmd_report)
    return parser


# What Ctrl-C leaves behind, per command: an Experiment keeps every finished cell.
_RESUME = "interrupted; run the same command to resume (finished cells are kept in --out)"
_INTERRUPTED = {"sweep": _RESUME, "demo": _RESUME}


def _message(err: BaseException) -> str:
    """One line for an error: a bare ``KeyError('answer')`` becomes "missing key 'answer'"."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        key = err.args[0]
        text = key if isinstance(key, str) and " " in key else f"missing key {key!r}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (usage errors exit with 2, Ctrl-C with
    130 and one line saying what to do)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:  # before a command started (imports, argument parsing)
        print("\nliref-lens: interrupted", file=sys.stderr)
        return 130


def _run(argv: Sequence[str] | None) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from .model import check_device

    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    bars = hf_logging.is_progress_bar_enabled()
    if getattr(args, "no_progress", False):
        hf_logging.disable_progress_bar()  # transformers' own "Loading weights" bar
    with warnings.catch_warnings():
        quiet_third_party_warnings()  # the known deprecations; ours stay visible
        try:
            _check_out(getattr(args, "out", None))
            check_device(getattr(args, "device", None))
            return int(args.func(args))
        except (ValueError, KeyError, OSError) as err:
            if args.debug:
                raise
            print(f"liref-lens: error: {_message(err)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"\nliref-lens: {_INTERRUPTED.get(args.command, 'interrupted')}", file=sys.stderr)
            return 130
        finally:
            torch.set_num_threads(threads)
            if bars:
                hf_logging.enable_progress_bar()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
