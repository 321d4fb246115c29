"""Steered greedy generation speed against unhooked Hugging Face ``generate``, in one process.

A randomly initialised GPT-2-small-sized model (12 layers, d_model 768) is saved with a
word-level tokenizer and loaded through `load_model` (TransformerBridge). On the same
prompts, batch and number of new tokens (EOS never stops a row), we time:

- ``hf_generate``: the Hugging Face model's own ``generate`` (greedy, KV cache, eager
  attention as the bridge uses) — the baseline;
- ``hf_generate_sdpa``: the same with PyTorch's fused attention, for reference;
- ``liref_unsteered``: `liref_lens.generate` with no op (KV cache);
- ``liref_add``: `liref_lens.generate` with an `Add` op at one layer, all positions;
- ``liref_paper_scale``: with `paper_scale` (36 hooks: 3 sites x 12 layers).

Methods run interleaved ``--repeats`` times; tokens/s of each (median time) is divided by the
baseline's. Run: ``python benchmarks/generate.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.cache import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

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
    batch = lm.tokenize(prompts)  # equal lengths: no padding, so HF and ours see the same
    direction = torch.randn(lm.n_layers, lm.d_model, generator=gen)
    add = Add(layers=[6], direction=direction, alpha=1.0)
    scale = paper_scale(direction, 0.5, lm, source_layer=6)

    def hf(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model.generate(  # type: ignore[operator]
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    do_sample=False,
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    pad_token_id=0,
                    use_cache=True,
                )

        return run

    def ours(ops: list) -> Callable[[], None]:
        return lambda: generate(
            lm, prompts, args.new_tokens, ops=ops, stop_at_eos=False, batch_size=args.prompts
        )

    methods: dict[str, Callable[[], None]] = {
        "hf_generate": hf(hf_eager),
        "hf_generate_sdpa": hf(hf_sdpa),
        "liref_unsteered": ours([]),
        "liref_add": ours([add]),
        "liref_paper_scale": ours([scale]),
    }
    for fn in methods.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    n_tokens = args.prompts * args.new_tokens
    base = n_tokens / statistics.median(times["hf_generate"])
    print(
        f"model: GPT-2-small-sized random, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.prompts} prompts x {batch.input_ids.shape[1]} "
        f"tokens, {args.new_tokens} new tokens each, greedy, KV cache, {args.repeats} repeats"
    )
    print(f"{'method':<22}{'median s':>10}{'tokens/s':>10}{'/ hf_generate':>15}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:<22}{t:>10.3f}{n_tokens / t:>10.1f}{n_tokens / t / base:>15.3f}")


if __name__ == "__main__":
    main()
