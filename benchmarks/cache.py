"""Cost of `cache_activations` against a bare Hugging Face forward pass, in one process.

A randomly initialised GPT-2-small-sized model (12 layers, d_model 768, vocab 50257) is saved
to a temporary directory with a word-level tokenizer and loaded through `load_model`. The same
length-sorted, left-padded batches are then run by:

- ``hf``: the Hugging Face model alone (eager attention, as the bridge uses), full forward with
  logits — the baseline;
- ``hf_body``: the same without the LM head (what a hidden-state read needs at least);
- ``liref``: `cache_activations` of ``resid_pre`` at all 12 layers, ``last()`` position;
- ``liref_half``: the same for layers 0-5 (the forward stops after layer 5);
- ``tl_run_with_cache``: TransformerLens ``run_with_cache`` with a resid_pre-only
  ``names_filter`` (full sequences kept, reduced to the last token afterwards).

Methods run interleaved, ``--repeats`` times; the median time of each is divided by the
median of ``hf``. Peak memory is the rise of the process's resident set size (sampled every
2 ms) above its level before each call. Run: ``python benchmarks/cache.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure(fn: Callable[[], object]) -> tuple[float, int]:
    """Wall time of ``fn()`` and the peak RSS rise while it ran."""
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join()
    return elapsed, max(peak[0], _rss_bytes()) - base


def build(directory: Path, n_words: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", *[f"w{i}" for i in range(n_words)]])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<bos>"
    )
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    GPT2LMHeadModel(cfg).save_pretrained(directory)
    fast.save_pretrained(directory)
    cfg_path = directory / "config.json"
    data = json.loads(cfg_path.read_text())
    data["n_ctx"] = data["n_positions"]
    cfg_path.write_text(json.dumps(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--min-words", type=int, default=20)
    parser.add_argument("--max-words", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from transformers import GPT2LMHeadModel

    from liref_lens import cache_activations, last, load_model

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(args.min_words, args.max_words + 1, (args.prompts,), generator=gen)
    prompts = [
        " ".join(f"w{int(i)}" for i in torch.randint(0, 5000, (int(n),), generator=gen))
        for n in lengths
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpt2-small-random"
        build(path, 5000)
        lm = load_model(str(path), device="cpu")
        hf = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()

    ids = lm.encode(prompts)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = [
        lm.pad([ids[i] for i in order[j : j + args.batch_size]])
        for j in range(0, len(order), args.batch_size)
    ]

    def hf_forward(body_only: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for b in batches:
                    pos = (b.attention_mask.cumsum(-1) - 1).clamp_min(0)
                    net = hf.transformer if body_only else hf
                    net(b.input_ids, attention_mask=b.attention_mask, position_ids=pos)

        return run

    def tl_run_with_cache() -> None:
        names = [lm.hook_name(layer, "resid_pre") for layer in range(lm.n_layers)]
        with torch.no_grad():
            for b in batches:
                _, cache = lm.model.run_with_cache(
                    b.input_ids, attention_mask=b.attention_mask, names_filter=names
                )
                torch.stack([cache[n][:, -1] for n in names], dim=1)

    def liref(layers: list[int]) -> Callable[[], None]:
        return lambda: cache_activations(
            lm,
            prompts,
            layers=layers,
            position=last(),
            batch_size=args.batch_size,
            progress=False,
        )

    methods: dict[str, Callable[[], object]] = {
        "hf": hf_forward(False),
        "hf_body": hf_forward(True),
        "liref": liref(list(range(12))),
        "liref_half": liref(list(range(6))),
        "tl_run_with_cache": tl_run_with_cache,
    }
    for fn in methods.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    peaks: dict[str, list[int]] = {k: [] for k in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            t, m = measure(fn)
            times[name].append(t)
            peaks[name].append(m)

    base = statistics.median(times["hf"])
    n_tokens = sum(len(x) for x in ids)
    print(
        f"model: GPT-2-small-sized random (12 layers, d_model 768), torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, backend {lm.backend}"
    )
    print(
        f"data: {args.prompts} prompts, {n_tokens} tokens, batch size {args.batch_size}, "
        f"{len(batches)} batches, {args.repeats} repeats (median)"
    )
    print(f"{'method':<20}{'median s':>10}{'/ hf':>8}{'peak RSS rise MiB':>20}")
    for name in methods:
        t = statistics.median(times[name])
        print(f"{name:<20}{t:>10.3f}{t / base:>8.3f}{max(peaks[name]) / 2**20:>20.1f}")
    out_mib = args.prompts * 12 * 768 * 4 / 2**20
    print(f"result tensor of `liref` (all layers, float32): {out_mib:.1f} MiB")


if __name__ == "__main__":
    main()
