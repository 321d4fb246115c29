"""Data-parallel caching: 2 gloo processes against 1, and the speed-up their split allows.

A randomly initialised GPT-2-small-sized model (12 layers, d_model 768, vocab 50257, word-level
tokenizer; `benchmarks.cache.build`) and ``--prompts`` prompts of random words whose lengths are
the word counts of the shipped GSM8K sample's questions with their worked solutions (36 to 229
words, median 90: a realistic spread). ``torchrun`` starts 2 processes of 1 thread each; both
load the model, then run ``--repeats`` rounds of:

- ``one``: rank 0 runs the single-process function (`liref_lens.cache_activations` or
  `liref_lens.stream_activations`) on every prompt while rank 1 waits in a barrier (its CPU
  time during the wait is reported: it should be about 0);
- ``two``: both ranks run the `liref_lens.distributed` function on every prompt;
- ``both``: both ranks run the single-process function on every prompt at the same time, with
  no communication: how much slower one process runs beside another on this machine (shared
  caches and memory bandwidth, the host's scheduling), whatever the split.

Each round's speed-up is the ``one`` time over the ``two`` time (rank 0's wall clock, from a
barrier to the call's return: the distributed call ends with a gather, so it includes waiting
for the slower rank). The split allows at most the total padded tokens over the largest rank's
(`cache_activations`; for `stream_activations` the sum over windows of each window's largest
share, since ranks meet after each window). The table shows the median speed-up, the allowed
one and their ratio (the target: at least 0.90); the same ratio with CPU times (one process's
CPU time over the busier rank's: less sensitive to other load than wall time); ``both/one``
(the slower ``both`` rank over ``one``) and the ratio with that slowdown taken out (``vs
both``: speed-up x both/one / allowed, what is lost to the split and the communication
alone); the speed-up the round-robin split used before allowed; and whether the results were
bit for bit equal to one process. The order of the three runs rotates from round to round.
Run from the repository root on a quiet machine (``uptime`` load below 1):
``python -m benchmarks.distributed``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

_GSM8K = Path(__file__).parents[1] / "src/liref_lens/tasks/data/gsm8k_test_sample.jsonl"


def make_prompts(n: int) -> list[str]:
    """``n`` prompts of random words, as long as GSM8K questions with their solutions."""
    rows = [json.loads(line) for line in _GSM8K.read_text().splitlines() if line.strip()]
    if n > len(rows):
        raise SystemExit(f"--prompts must be at most {len(rows)} (the rows of {_GSM8K.name})")
    gen = torch.Generator().manual_seed(0)
    prompts = []
    for row in rows[:n]:
        words = len(f"{row['question']} {row['answer']}".split())
        prompts.append(
            " ".join(f"w{int(i)}" for i in torch.randint(0, 5000, (words,), generator=gen))
        )
    return prompts


def split_allows(lm: Any, prompts: list[str], batch_size: int, world: int) -> dict[str, float]:
    """Total padded tokens over the largest rank's, for each split."""
    from liref_lens import RunningStats, distributed
    from liref_lens._collectives import flatten_stats
    from liref_lens._shards import batch_costs, window_batches, windows
    from liref_lens.model import length_batches

    ids = lm.encode(prompts)
    costs = batch_costs(length_batches(ids, batch_size), ids)
    total = sum(costs)
    cache = max(sum(costs[b] for b in s) for s in distributed.balance(costs, world))
    stats = RunningStats(("reasoning", "memory"), (lm.n_layers, lm.d_model), second_moments=True)
    per_rank = window_batches(8 * flatten_stats(stats).numel(), world)
    stream = sum(
        max(sum(costs[b] for b in s) for s in shares) for shares in windows(costs, world, per_rank)
    )
    round_robin = max(sum(costs[r::world]) for r in range(world))
    return {
        "tokens": total,
        "cache": total / cache,
        "stream": total / stream,
        "round_robin": total / round_robin,
    }


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    import liref_lens
    from liref_lens import distributed as dp
    from liref_lens import load_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dp.rank_and_world()
    prompts = json.loads(Path(args.prompts_file).read_text())
    labels = ["reasoning" if i % 2 else "memory" for i in range(len(prompts))]
    lm = load_model(args.model_dir, device="cpu")
    kw: dict[str, Any] = dict(batch_size=args.batch_size, progress=False)
    calls = {
        "cache": (
            lambda: liref_lens.cache_activations(lm, prompts, **kw),
            lambda: dp.cache_activations(lm, prompts, **kw),
        ),
        "stream": (
            lambda: liref_lens.stream_activations(lm, prompts, labels, second_moments=True, **kw),
            lambda: dp.stream_activations(lm, prompts, labels, second_moments=True, **kw),
        ),
    }
    calls = {name: fns for name, fns in calls.items() if name in args.functions}
    warm = prompts[: 2 * args.batch_size]
    liref_lens.cache_activations(lm, warm, **kw)
    dp.cache_activations(lm, warm, **kw)
    keys = ["one", "two", "both", "one_cpu", "two_cpu", "both_cpu", "idle_cpu"]
    rows: dict[str, dict[str, list[float]]] = {name: {k: [] for k in keys} for name in calls}
    first: dict[tuple[str, str], torch.Tensor] = {}  # round 0's results on rank 0
    modes = ("one", "two", "both")
    for round_ in range(args.repeats):
        for name, (one, two) in calls.items():
            for mode in modes[round_ % 3 :] + modes[: round_ % 3]:  # the order rotates
                dist.barrier()
                start, cpu = time.perf_counter(), time.process_time()
                if mode == "one" and rank != 0:
                    dist.barrier()  # idle while rank 0 runs alone
                    rows[name]["idle_cpu"].append(time.process_time() - cpu)
                    continue
                result = two() if mode == "two" else one()
                rows[name][mode].append(time.perf_counter() - start)
                rows[name][mode + "_cpu"].append(time.process_time() - cpu)
                if mode == "one":
                    dist.barrier()
                if round_ == 0 and mode != "both":
                    first[(name, mode)] = getattr(result, "tensor" if name == "cache" else "means")
    saved: dict[str, Any] = {"rows": rows}
    if rank == 0:  # one process's result against two processes', bit for bit
        saved["equal"] = {n: torch.equal(first[(n, "one")], first[(n, "two")]) for n in calls}
    torch.save(saved, Path(args.out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    # Skip the interpreter's teardown: with gloo it sometimes aborts (SIGABRT, "terminate called
    # without an active exception") after everything above has returned, which would fail the
    # `torchrun` below although the results are written (docs/api/distributed.md).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--functions", nargs="+", choices=("cache", "stream"), default=["cache", "stream"]
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--prompts-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from benchmarks.cache import build
    from liref_lens import load_model

    torch.set_num_threads(1)
    prompts = make_prompts(args.prompts)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "gpt2-small-random"
        build(model_dir, 5000)
        allows = split_allows(load_model(str(model_dir), device="cpu"), prompts, args.batch_size, 2)
        prompts_file = Path(tmp) / "prompts.json"
        prompts_file.write_text(json.dumps(prompts))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        cmd += ["-m", "benchmarks.distributed", "--worker", "--model-dir", str(model_dir)]
        cmd += [
            "--prompts-file",
            str(prompts_file),
            "--out",
            tmp,
            "--batch-size",
            str(args.batch_size),
        ]
        cmd += ["--repeats", str(args.repeats), "--functions", *args.functions]
        subprocess.run(cmd, check=True, env=env)
        ranks = [torch.load(Path(tmp, f"rank{r}.pt")) for r in (0, 1)]
    load_after = os.getloadavg()
    print(
        f"data: {args.prompts} prompts, {allows['tokens']:,} padded tokens, batch size "
        f"{args.batch_size}; 2 gloo processes of 1 thread; {args.repeats} rounds; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"{'function':<20}{'one s':>7}{'two s':>7}{'speed-up':>9}{'allowed':>8}{'ratio':>7}"
        f"{'CPU ratio':>10}{'both/one':>9}{'vs both':>8}{'round robin':>12}{'equal':>6}"
    )
    results = {}
    for name in args.functions:
        r0, r1 = ranks[0]["rows"][name], ranks[1]["rows"][name]
        speedups = [a / b for a, b in zip(r0["one"], r0["two"], strict=True)]
        # the same with CPU time: one process's over the busier rank's (load-insensitive)
        two_cpu = [max(a, b) for a, b in zip(r0["two_cpu"], r1["two_cpu"], strict=True)]
        cpu_speedups = [a / b for a, b in zip(r0["one_cpu"], two_cpu, strict=True)]
        # both ranks running the single-process function at once: how much slower each runs
        # beside the other (shared caches, memory bandwidth, the host), whatever the split
        both = [max(a, b) / c for a, b, c in zip(r0["both"], r1["both"], r0["one"], strict=True)]
        med, allowed, slowdown = statistics.median(speedups), allows[name], statistics.median(both)
        row = {
            "one_s": statistics.median(r0["one"]),
            "two_s": statistics.median(r0["two"]),
            "speedups": speedups,
            "speedup": med,
            "allowed": allowed,
            "ratio": med / allowed,
            "cpu_speedups": cpu_speedups,
            "cpu_ratio": statistics.median(cpu_speedups) / allowed,
            "both_over_one": both,
            "ratio_with_both": med * slowdown / allowed,
            "round_robin_allowed": allows["round_robin"],
            "idle_cpu_s": max(r1["idle_cpu"]),
            "bit_for_bit": ranks[0]["equal"][name],
        }
        results[name] = row
        print(
            f"{name + '_activations':<20}{row['one_s']:>7.2f}{row['two_s']:>7.2f}"
            f"{med:>9.3f}{allowed:>8.3f}{row['ratio']:>7.3f}{row['cpu_ratio']:>10.3f}"
            f"{slowdown:>9.3f}{row['ratio_with_both']:>8.3f}{allows['round_robin']:>12.3f}"
            f"{str(row['bit_for_bit']):>6}"
        )
        print(f"  speed-ups by round: {', '.join(f'{s:.3f}' for s in speedups)}")
        print(f"  both/one by round:  {', '.join(f'{s:.3f}' for s in both)}")
        print(f"  rank 1 CPU while idle: at most {row['idle_cpu_s']:.3f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"load": [load_before, load_after], **results}, indent=2)
        )


if __name__ == "__main__":
    main()
