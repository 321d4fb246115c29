"""The ``liref-lens`` command.

Sub-commands:
- ``demo``: the offline testbed end to end (cache, fit, score, steer with controls, report).
- ``train-testbed``: retrain the testbed model with a seed.
- ``fit``: the paper's protocol step 1 on any model: directions + layer scores.
- ``sweep``: step 2: steer while the model answers a task, with random controls.
- ``report``: HTML report of a run folder.

Nothing runs at import; `main` parses arguments and dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _layers(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            lo, hi = part.rsplit("-", 1)
            out += list(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def _task(spec: str, n: int | None, label_file: str | None = None) -> Any:
    """``name`` or ``name:source`` (hub id or local path) -> Task."""
    from .tasks import load_task

    name, _, source = spec.partition(":")
    kwargs: dict[str, Any] = {"n": n}
    if source:
        kwargs["source"] = source
    task = load_task(name, **kwargs)
    if label_file:
        task = task.with_labels(label_file)
    return task


def _model(args: argparse.Namespace) -> Any:
    import torch

    from .model import load_model

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return load_model(args.model, device=args.device, dtype=dtype[args.dtype], backend=args.backend)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="hub id or local checkpoint directory")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--backend", default=None, choices=["bridge", "hooked_transformer"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _cmd_fit(args: argparse.Namespace) -> int:
    from .recipe import fit_run

    lm = _model(args)
    if args.task:
        reasoning, memory = _task(args.task, args.n, args.labels).split()
    else:
        if not (args.reasoning_task and args.memory_task):
            raise SystemExit(
                "give --task (split by labels) or both --reasoning-task and --memory-task"
            )
        reasoning = _task(args.reasoning_task, args.n)
        memory = _task(args.memory_task, args.n)
    _, scores = fit_run(
        lm,
        reasoning,
        memory,
        args.out,
        site=args.site,
        position=args.position,
        layers=_layers(args.layers) if args.layers else None,
        seed=args.seed,
        progress=not args.no_progress,
    )
    auc = scores[scores["score"] == "auroc"].sort_values("layer")
    print(auc[["layer", "value", "ci_low", "ci_high"]].to_string(index=False))
    print(f"directions and scores written to {args.out}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .directions import DirectionSet
    from .recipe import sweep_run

    lm = _model(args)
    directions = DirectionSet.load(args.directions, model=lm)
    task = _task(args.task, args.n)
    results = sweep_run(
        lm,
        directions,
        task,
        args.out,
        layers=_layers(args.layers),
        alphas=_floats(args.alphas),
        ops=args.ops.split(","),
        n_random=args.n_random,
        max_new_tokens=args.max_new_tokens,
        style=args.style,
        seed=args.seed,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    t = results.table
    summary = t[(t["subset"] == "all") & (t["metric"].isin(["gen_acc", "parse_fail"]))]
    print(
        summary.groupby(["op", "layer", "alpha", "direction", "metric"])["value"].mean().to_string()
    )
    print(f"results written to {Path(args.out) / 'sweep'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .recipe import report_run

    print(report_run(args.run))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        args.out,
        seed=args.seed,
        device=args.device,
        retrain=args.retrain,
        progress=not args.no_progress,
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import filecmp
    import json

    from .testbed import TrainConfig, shipped_checkpoint, train_testbed

    steps = TrainConfig.steps if args.steps is None else args.steps
    if steps < 1:
        raise ValueError(f"--steps must be at least 1, got {steps}")
    record = train_testbed(
        args.out, seed=args.seed, config=TrainConfig(steps=steps), progress=not args.no_progress
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="liref-lens",
        description="Find and steer reasoning-vs-memorization directions in language models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the offline testbed end to end and write a report")
    demo.add_argument("--out", type=Path, default=Path("liref-demo"), help="output folder")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu")
    demo.add_argument(
        "--retrain",
        action="store_true",
        help="train the testbed model first (about 4.5 min) instead of using the shipped one",
    )
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_cmd_demo)

    train = sub.add_parser("train-testbed", help="train the testbed model (seeded)")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--steps", type=int, default=None, help="training steps (default: the shipped recipe's)"
    )
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_cmd_train)

    fit = sub.add_parser("fit", help="fit reasoning-vs-memory directions and score layers")
    _add_model_args(fit)
    fit.add_argument("--task", help="one labelled task to split, e.g. mmlu_pro:FILE")
    fit.add_argument("--labels", help="CSV/JSON file with id,label columns for --task")
    fit.add_argument("--reasoning-task", help="e.g. gsm8k or gsm8k:PATH")
    fit.add_argument("--memory-task", help="e.g. popqa or popqa:PATH")
    fit.add_argument("-n", type=int, default=None, help="questions per task (default: all)")
    fit.add_argument("--site", default="resid_pre")
    fit.add_argument("--position", default="last()")
    fit.add_argument("--layers", help="e.g. 1-23 (default: all; resid_pre skips layer 0)")
    fit.set_defaults(func=_cmd_fit)

    sweep = sub.add_parser("sweep", help="steer along the directions while answering a task")
    _add_model_args(sweep)
    sweep.add_argument("--directions", required=True, type=Path)
    sweep.add_argument("--task", required=True, help="evaluation task, e.g. gsm8k:PATH")
    sweep.add_argument("-n", type=int, default=None)
    sweep.add_argument("--layers", required=True, help="e.g. 4,8,12 or 0-23")
    sweep.add_argument(
        "--alphas",
        required=True,
        help="comma-separated; write --alphas=-0.5,0.5 when the first is negative",
    )
    sweep.add_argument("--ops", default="scale", help="add,scale,project_out,paper_scale")
    sweep.add_argument("--n-random", type=int, default=10)
    sweep.add_argument("--max-new-tokens", type=int, default=256)
    sweep.add_argument("--style", default="few_shot", choices=["few_shot", "zero_shot"])
    sweep.add_argument("--batch-size", type=int, default=8)
    sweep.set_defaults(func=_cmd_sweep)

    report = sub.add_parser("report", help="write report.html for a run folder")
    report.add_argument("run", type=Path)
    report.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, KeyError, FileNotFoundError, ConnectionError, OSError) as err:
        print(f"liref-lens {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
