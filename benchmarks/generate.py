"""Steered greedy generation speed against unhooked Hugging Face ``generate``, in one process.

A randomly initialised GPT-2-small-sized model (12 layers, d_model 768, vocab 50257) is saved
with a word-level tokenizer and loaded through `load_model` (TransformerBridge). Every method
gets the same token ids (equal-length prompts, so no padding), the same batch (all prompts in
one batch), greedy decoding with the KV cache, and exactly ``--new-tokens`` new tokens per row:
EOS stops nothing (HF's ``eos_token_id`` is unset, ours runs with ``stop_at_eos=False``), and
the tokens each call actually produced are counted, not assumed. Methods:

- ``hf_generate``: the Hugging Face model's own ``generate`` with eager attention;
- ``hf_generate_sdpa``: the same with PyTorch's fused attention (Hugging Face's default, and
  what `liref_lens` runs in unhooked attention layers) — the baseline; ``--baseline
  hf_generate`` compares with the eager one instead;
- ``liref_unsteered``: `liref_lens.generate` with no op;
- ``liref_add``: with an `Add` op at layer 6, every position (1 hook);
- ``liref_paper_scale``: with `paper_scale` (`Scale` at resid_pre, attn_out and mlp_out of
  every layer: 36 hooks).

After one warm-up call each, the methods run ``--repeats`` rounds, interleaved, the order
rotating from round to round. Each method's tokens/s in a round is divided by the baseline's in
the same round (a paired ratio, which cancels slow drifts of a shared machine); the table shows
the median paired ratio and its range over rounds, for wall time and for the process's CPU
time (which other processes on a shared machine disturb much less than wall time).
``torch.set_num_threads(--threads)`` fixes the intra-op threads. Run from the repository root:
``python -m benchmarks.generate``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.cache import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts, all in one batch")
    parser.add_argument("--words", type=int, default=32, help="words per prompt")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--baseline", choices=["hf_generate_sdpa", "hf_generate"], default="hf_generate_sdpa"
    )
    args = parser.parse_args()
    if min(args.prompts, args.words, args.new_tokens, args.repeats, args.threads) < 1:
        parser.error("--prompts, --words, --new-tokens, --repeats and --threads must be >= 1")
    torch.set_num_threads(args.threads)

    from transformers import GPT2LMHeadModel

    from liref_lens import load_model
    from liref_lens.generation import generate
    from liref_lens.interventions import Add, paper_scale

    gen = torch.Generator().manual_seed(0)
    prompts = [
        " ".join(f"w{int(i)}" for i in torch.randint(0, 5000, (args.words,), generator=gen))
        for _ in range(args.prompts)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpt2-small-random"
        build(path, 5000)
        lm = load_model(str(path), device="cpu")
        hf_eager = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
        hf_sdpa = GPT2LMHeadModel.from_pretrained(path, attn_implementation="sdpa").eval()
    batch = lm.tokenize(prompts)
    if not bool(batch.attention_mask.all()):
        raise RuntimeError("prompts tokenized to different lengths; the comparison needs none")
    prompt_len = int(batch.input_ids.shape[1])
    direction = torch.randn(lm.n_layers, lm.d_model, generator=gen)
    add = Add(layers=[6], direction=direction, alpha=1.0)
    scale = paper_scale(direction, 0.5, lm, source_layer=6)

    def hf(model: torch.nn.Module) -> Callable[[], list[list[int]]]:
        # On the model's own generation config: `generate` fills a None it is given from there.
        config = model.generation_config
        config.eos_token_id = None  # nothing stops a row early
        config.pad_token_id = 0

        def run() -> list[list[int]]:
            with torch.no_grad():
                out = model.generate(  # type: ignore[operator]
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    do_sample=False,
                    use_cache=True,
                    max_new_tokens=args.new_tokens,
                )
            return [list(map(int, row)) for row in out[:, prompt_len:]]

        return run

    def ours(ops: list) -> Callable[[], list[list[int]]]:
        def run() -> list[list[int]]:
            out = generate(
                lm, prompts, args.new_tokens, ops=ops, stop_at_eos=False, batch_size=args.prompts
            )
            return out.tokens

        return run

    methods: dict[str, Callable[[], list[list[int]]]] = {
        "hf_generate": hf(hf_eager),
        "hf_generate_sdpa": hf(hf_sdpa),
        "liref_unsteered": ours([]),
        "liref_add": ours([add]),
        "liref_paper_scale": ours([scale]),
    }
    names = list(methods)
    warm = {name: fn() for name, fn in methods.items()}  # warm-up, and the outputs to check
    base = args.baseline
    same = sum(a == b for a, b in zip(warm[base], warm["liref_unsteered"], strict=True))

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
                tokens[name],
                seconds[name],
                tokens[base],
                seconds[base],
                strict=True,
            )
        ]

    load = os.getloadavg()
    print(
        f"model: GPT-2-small-sized random (12 layers, d_model 768, vocab 50257), backend "
        f"{lm.backend}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{os.cpu_count()} CPUs, load average after the run {load[0]:.1f}/{load[1]:.1f}/"
        f"{load[2]:.1f}"
    )
    print(
        f"work: {args.prompts} prompts x {prompt_len} tokens in one batch, {args.new_tokens} new "
        f"tokens each ({expected} per call, counted), greedy, KV cache; {args.repeats} "
        f"interleaved rounds after a warm-up; greedy outputs of liref_unsteered equal to "
        f"{base}: {same}/{args.prompts} rows"
    )
    print(
        f"ratio = tokens/s over {base}'s in the same round: median [min, max] over rounds; "
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


if __name__ == "__main__":
    main()
