"""Measurements of docs/how-to/neurons-and-truncation.md (issue #8): LASER truncation on the
noisy-recall world, and top-k NeuronShift vs random neurons on the main testbed.

Usage:
    python scripts/neurons_and_truncation.py train OUT_DIR [--seed 0] [--p-noise 0.3]
    python scripts/neurons_and_truncation.py truncation CKPT_DIR [--test-seed 2]
        [--random-seed 0] [--n-test 1000] [--n-random 10] [--json OUT]
    python scripts/neurons_and_truncation.py neurons [--ckpt DIR] [--seed 0]
        [--random-seed 0] [--n-random 10] [--json OUT]

``train`` trains the 2-layer recall model (`liref_lens.testbed.train_recall`, recipe
`RECALL_CONFIG`). ``truncation`` reads the world from the checkpoint's ``training.json``,
draws ``--n-test`` test prompts with ``torch.Generator().manual_seed(test_seed)`` and runs
`measure_truncation` on the second block's MLP. ``neurons`` runs `neuron_shift_vs_random` on
the shipped testbed checkpoint (or ``--ckpt``) with ``make_testbed(seed)``. Each prints
Markdown tables and, with ``--json``, writes the full DataFrame. One CPU thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from liref_lens import load_model
from liref_lens.testbed import (
    RecallWorld,
    make_testbed,
    measure_truncation,
    neuron_shift_vs_random,
    shipped_checkpoint,
    train_recall,
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(row: pd.Series, name: str) -> str:
    return f"{_pct(row[name])} [{_pct(row[name + '_lo'])}, {_pct(row[name + '_hi'])}]"


def truncation_tables(df: pd.DataFrame) -> str:
    """Markdown: LASER rows with their controls (random draws: mean and range)."""
    base = df[df.edit == "none"].iloc[0]
    lines = [
        f"before: accuracy {_ci(base, 'acc')}, p(target) {_ci(base, 'p_target')}, "
        f"p(noise) {_ci(base, 'p_noise')} (n = {base.n})",
        "",
        "| matrix | rho | rank | top-k: accuracy | top-k: p(noise) | random-k (mean, min-max):"
        " accuracy | random-k: p(noise) | other layer top-k: accuracy | other layer: p(noise) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (m, rho), g in df[df.edit != "none"].groupby(["matrix", "rho"], sort=False):
        top = g[g.edit == "top_k"]
        if top.empty:
            continue
        t, o = top.iloc[0], g[g.edit == "top_k_other_layer"].iloc[0]
        r = g[g.edit == "random_k"]
        rand = [
            f"{_pct(r[c].mean())} ({_pct(r[c].min())}-{_pct(r[c].max())})" if len(r) else "-"
            for c in ("acc", "p_noise")
        ]
        lines.append(
            f"| {m} | {rho} | {t['rank']} | {_ci(t, 'acc')} | {_ci(t, 'p_noise')} | {rand[0]} "
            f"| {rand[1]} | {_ci(o, 'acc')} | {_ci(o, 'p_noise')} |"
        )
    zero = df[df.edit == "rank_0"]
    for _, z in zero.iterrows():
        lines.append(
            f"\nrank 0 ({z.matrix} = 0): accuracy {_ci(z, 'acc')}, p(target) "
            f"{_ci(z, 'p_target')}, p(noise) {_ci(z, 'p_noise')}"
        )
    top = df[df.edit == "top_k"]
    lines.append(
        "\np(target) under top-k: "
        + ", ".join(f"{r.matrix} rho {r.rho}: {_pct(r.p_target)}" for r in top.itertuples())
    )
    return "\n".join(lines)


def neuron_tables(df: pd.DataFrame) -> str:
    lines = [
        "| positions | layer | k | alpha | direction | n | top-k: switched [95% CI] | kept "
        "| random: mean switched [95% CI] | max | kept |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in df.itertuples():
        lines.append(
            f"| {r.positions} | {r.layer} | {r.k} | {r.alpha:+g} | {r.direction} | {r.n} "
            f"| {_pct(r.switched)} [{_pct(r.lo)}, {_pct(r.hi)}] | {_pct(r.kept)} "
            f"| {_pct(r.random)} [{_pct(r.random_lo)}, {_pct(r.random_hi)}] | {_pct(r.random_max)} "
            f"| {_pct(r.random_kept)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("out_dir", type=Path)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--p-noise", type=float, default=RecallWorld.p_noise)
    tc = sub.add_parser("truncation")
    tc.add_argument("ckpt")
    tc.add_argument("--test-seed", type=int, default=2)
    tc.add_argument("--random-seed", type=int, default=0)
    tc.add_argument("--n-test", type=int, default=1000)
    tc.add_argument("--n-random", type=int, default=10)
    tc.add_argument("--json", type=Path)
    nu = sub.add_parser("neurons")
    nu.add_argument("--ckpt", default=None)
    nu.add_argument("--seed", type=int, default=0)
    nu.add_argument("--random-seed", type=int, default=0)
    nu.add_argument("--n-random", type=int, default=10)
    nu.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.cmd == "train":
        record = train_recall(args.out_dir, args.seed, world=RecallWorld(p_noise=args.p_noise))
        print(json.dumps({k: record[k] for k in ("metrics", "train_seconds")}, indent=1))
        return
    if args.cmd == "truncation":
        info = json.loads((Path(args.ckpt) / "training.json").read_text())
        world = RecallWorld(**{k: v for k, v in info["world"].items() if k != "kind"})
        items = world.sample_items(args.n_test, torch.Generator().manual_seed(args.test_seed))
        lm = load_model(args.ckpt, device="cpu")
        df = measure_truncation(lm, world, items, n_random=args.n_random, seed=args.random_seed)
        print(
            f"{world}, training seed {info['seed']}, test seed {args.test_seed}, "
            f"random seed {args.random_seed}\n"
        )
        print(truncation_tables(df))
    else:
        lm = load_model(args.ckpt or str(shipped_checkpoint()), device="cpu")
        df = neuron_shift_vs_random(
            lm, make_testbed(seed=args.seed), n_random=args.n_random, seed=args.random_seed
        )
        print(f"testbed seed {args.seed}, random seed {args.random_seed}\n")
        print(neuron_tables(df))
    print(f"\n{time.perf_counter() - start:.0f} s")
    if args.json:
        df.to_json(args.json, orient="records", indent=1)


if __name__ == "__main__":
    main()
