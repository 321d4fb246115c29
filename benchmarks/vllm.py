"""A steering sweep through vLLM's per-request batching against the same sweep through `generate`.

The sweep is the paper's evaluation shape: ``--prompts`` prompts x (unsteered + 4 alphas of the
fitted direction + 5 norm-matched random directions at the largest alpha) x ``--new-tokens``
greedy tokens, on SmolLM2-135M (``smollm2-135m``, float32). The direction is the difference of
the mean last-token residual streams (read through vLLM) of arithmetic and capital-city prompts
at ``--layer``; every op is an `Add` there, at every position.

- ``vllm``: one `VLLMEngine.sweep` call: all ``prompts x 10`` requests in one vLLM batch, each
  request with its own op (one engine worker, pinned to core 0 by
  ``VLLM_CPU_OMP_THREADS_BIND=0``);
- ``liref``: `liref_lens.generate` once per op set (all prompts in one batch, KV cache,
  ``torch.set_num_threads(1)``).

Both produce exactly ``--new-tokens`` tokens per request (``stop_at_eos=False``); the tokens of
the two are compared and the share of identical generations printed. The methods run
``--repeats`` interleaved rounds; the table shows the median wall time and the median paired
ratio ``liref / vllm``. Engine start-up (not part of the ratio) is printed separately. Run from
the repository root in the vLLM environment: ``python -m benchmarks.vllm``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

CAPITALS = ["France", "Spain", "Italy", "Germany", "Japan", "Egypt", "Peru", "Canada"]


def prompts(n: int) -> tuple[list[str], list[str], list[str]]:
    """``n`` prompts (half arithmetic, half capitals) and the two groups for the direction."""
    arith = [f"Q: What is {a} + {b}? A:" for a in range(3, 40, 3) for b in (4, 7, 9)]
    facts = [f"The capital of {c} is" for c in CAPITALS] + [
        f"Q: Which city is the capital of {c}? A:" for c in CAPITALS
    ]
    mixed = [p for pair in zip(arith, facts * 4, strict=False) for p in pair]
    if n > len(mixed):
        raise SystemExit(f"--prompts must be at most {len(mixed)}")
    return mixed[:n], arith[:8], facts[:8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--max-num-seqs", type=int, default=None, help="vLLM's batch limit (default: vLLM's)"
    )
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB: the whole sweep fits at once
    torch.set_num_threads(1)

    from liref_lens import Add, fit_directions, generate, load_model
    from liref_lens.backends.vllm import load_vllm

    texts, arith, facts = prompts(args.prompts)
    t0 = time.perf_counter()
    extra = {} if args.max_num_seqs is None else {"max_num_seqs": args.max_num_seqs}
    engine = load_vllm(args.model, max_model_len=512, **extra)
    print(f"vLLM engine start: {time.perf_counter() - t0:.1f} s ({engine})")
    lm = load_model(args.model, device="cpu")
    acts = engine.read(arith + facts, layers=[args.layer], sites="resid_pre")
    ds = fit_directions(acts.subset(range(8)), acts.subset(range(8, 16)), model=engine)
    v = ds.at(args.layer).float()
    gen = torch.Generator().manual_seed(0)
    randoms = [torch.randn(v.shape, generator=gen) for _ in range(5)]
    alphas = (-1.0, -0.5, 0.5, 1.0)
    op_sets: list[list[Add]] = [[]]
    op_sets += [[Add(layers=[args.layer], direction=v, alpha=a)] for a in alphas]
    op_sets += [
        [Add(layers=[args.layer], direction=r / r.norm() * v.norm(), alpha=max(alphas))]
        for r in randoms
    ]
    n_req = len(texts) * len(op_sets)
    print(f"sweep: {len(texts)} prompts x {len(op_sets)} op sets x {args.new_tokens} tokens")

    def run_vllm() -> list[list[list[int]]]:
        out = engine.sweep(texts, op_sets, args.new_tokens, stop_at_eos=False)
        return [g.tokens for g in out]

    def run_liref() -> list[list[list[int]]]:
        return [
            generate(lm, texts, args.new_tokens, ops=ops, stop_at_eos=False, batch_size=64).tokens
            for ops in op_sets
        ]

    times: dict[str, list[float]] = {"vllm": [], "liref": []}
    tokens: dict[str, list[list[list[int]]]] = {}
    for r in range(args.repeats):
        order = ["vllm", "liref"] if r % 2 == 0 else ["liref", "vllm"]
        for name in order:
            t = time.perf_counter()
            tokens[name] = run_vllm() if name == "vllm" else run_liref()
            times[name].append(time.perf_counter() - t)
            print(f"round {r + 1}: {name} {times[name][-1]:.1f} s", flush=True)
    for name, toks in tokens.items():
        made = sum(len(row) for cell in toks for row in cell)
        if made != n_req * args.new_tokens:
            raise RuntimeError(f"{name} made {made} tokens, not {n_req * args.new_tokens}")
    same = sum(
        a == b
        for cell_a, cell_b in zip(tokens["vllm"], tokens["liref"], strict=True)
        for a, b in zip(cell_a, cell_b, strict=True)
    )
    ratios = [b / a for a, b in zip(times["vllm"], times["liref"], strict=True)]
    print()
    print("| method | median s | tokens/s |")
    print("|---|---:|---:|")
    for name in ("liref", "vllm"):
        med = statistics.median(times[name])
        print(f"| {name} | {med:.1f} | {n_req * args.new_tokens / med:.0f} |")
    print(
        f"\nliref / vllm (median paired ratio over {args.repeats} rounds): "
        f"{statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})"
    )
    print(f"identical generations: {same} of {n_req}")
    engine.close()


if __name__ == "__main__":
    main()
