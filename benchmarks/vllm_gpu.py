"""A steering sweep on a 7B-class model through the vLLM backend on GPUs (prepared; see README).

For the day a GPU is lent: start vLLM on a local Llama-architecture checkpoint (bfloat16,
``--tp`` GPUs), read last-token residual streams of two prompt groups through vLLM and fit a
difference-in-means direction on them (provenance: the engine), then run the sweep
``--prompts`` x (unsteered + 4 alphas + 5 norm-matched random directions) x ``--new-tokens``
as one batch of per-request ops, and print tokens/s. With ``--compare N`` it also runs the
first ``N`` prompts of every op set through `liref_lens.generate` on a `LensModel` of the same
checkpoint (same process, same GPU: lower ``--gpu-memory`` to leave it room) and prints the
time ratio and the share of identical generations (in bfloat16 a few may differ: the two
engines sum in different orders).

``--smoke`` runs the same code on the CPU with a tiny Llama built from a config (float32) and
fails unless every vLLM generation equals liref_lens's: the check that the script works, run
in tests/vllm (on the tests' own tiny engine). Run from the repository root:
``python -m benchmarks.vllm_gpu --model DIR [--tp 2] [--compare 16]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ARITH = [f"Q: What is {a} + {b}? A:" for a in range(11, 99, 7) for b in (3, 8)]
FACTS = [
    f"Q: What is the capital of {c}? A:"
    for c in ("France", "Spain", "Italy", "Japan", "Egypt", "Peru", "Chile", "Kenya")
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local Llama-architecture checkpoint folder")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    parser.add_argument("--gpu-memory", type=float, default=0.85)
    parser.add_argument("--compare", type=int, default=0, help="prompts also run by liref")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    args = parser.parse_args()
    if args.smoke:
        smoke()
        return
    if not args.model:
        parser.error("--model DIR is required (or --smoke)")
    from liref_lens.backends.vllm import load_vllm

    t0 = time.perf_counter()
    engine = load_vllm(
        args.model,
        dtype="bfloat16",
        tensor_parallel_size=args.tp,
        max_model_len=2048,
        gpu_memory_utilization=args.gpu_memory,
    )
    print(f"engine start {time.perf_counter() - t0:.1f} s: {engine}")
    try:
        sweep(engine, args, device="cuda", exact=False)
    finally:
        engine.close()


def smoke() -> None:
    """The sweep on a tiny Llama on the CPU; every generation must equal liref_lens's."""
    from tests.conftest import build_tiny

    from liref_lens.backends.vllm import load_vllm

    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny("llama", Path(tmp) / "tiny", hidden_size=128, intermediate_size=192)
        with load_vllm(str(path), dtype="float32") as engine:
            sweep(engine, SMOKE, device="cpu", exact=True)


#: The smoke run's settings (tests/vllm runs `sweep` with them on its own tiny engine).
SMOKE = argparse.Namespace(prompts=8, new_tokens=8, layer=None, compare=8)


def sweep(engine: Any, args: argparse.Namespace, *, device: str, exact: bool) -> None:
    """The sweep on ``engine``; with ``args.compare``, also through liref_lens (``exact``:
    fail unless every generation is the same)."""
    from liref_lens import Add, fit_directions, generate, load_model

    layer = engine.n_layers // 2 if args.layer is None else args.layer
    acts = engine.read(ARITH[:8] + FACTS, layers=[layer], sites="resid_pre")
    ds = fit_directions(acts.subset(range(8)), acts.subset(range(8, 16)), model=engine)
    v = ds.at(layer).float()
    gen = torch.Generator().manual_seed(0)
    op_sets: list[list[Add]] = [[]]
    op_sets += [[Add(layers=[layer], direction=v, alpha=a)] for a in (-1.0, -0.5, 0.5, 1.0)]
    for _ in range(5):
        r = torch.randn(v.shape, generator=gen)
        op_sets.append([Add(layers=[layer], direction=r / r.norm() * v.norm(), alpha=1.0)])
    texts = [(ARITH + FACTS)[i % (len(ARITH) + len(FACTS))] for i in range(args.prompts)]
    n_tokens = len(texts) * len(op_sets) * args.new_tokens
    t = time.perf_counter()
    out = engine.sweep(texts, op_sets, args.new_tokens, stop_at_eos=False)
    took = time.perf_counter() - t
    print(f"vllm sweep: {len(texts)} prompts x {len(op_sets)} op sets x {args.new_tokens} tokens")
    print(f"  {took:.1f} s, {n_tokens / took:.0f} tokens/s")
    if args.compare:
        lm = load_model(str(engine.path), device=device, dtype=getattr(torch, engine.dtype_name))
        few = texts[: args.compare]
        t = time.perf_counter()
        ref = [generate(lm, few, args.new_tokens, ops=ops, stop_at_eos=False) for ops in op_sets]
        ref_took = time.perf_counter() - t
        t = time.perf_counter()
        again = engine.sweep(few, op_sets, args.new_tokens, stop_at_eos=False)
        vllm_took = time.perf_counter() - t
        pairs = [zip(g.tokens, h.tokens, strict=True) for g, h in zip(again, ref, strict=True)]
        same = sum(a == b for cell in pairs for a, b in cell)
        total = len(few) * len(op_sets)
        print(f"liref generate on {len(few)} prompts x {len(op_sets)} op sets: {ref_took:.1f} s")
        print(f"  vllm on the same: {vllm_took:.1f} s; liref / vllm = {ref_took / vllm_took:.2f}x")
        print(f"  identical generations: {same} of {total}")
        if exact and same != total:
            raise SystemExit("FAIL: vLLM and liref_lens generations differ in float32")
    del out
    print("ok")


if __name__ == "__main__":
    main()
