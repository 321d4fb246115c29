"""Cost of `cache_activations` against a bare Hugging Face forward pass, in one process.

A randomly initialised GPT-2-small-sized model (12 layers, d_model 768, vocab 50257) is saved
to a temporary directory with a word-level tokenizer and loaded through `load_model`. The same
length-sorted, left-padded batches are then run by:

- ``hf``: the Hugging Face model alone (eager attention, the bridge's own path), full forward
  with logits — the baseline;
- ``hf_body``: the same without the LM head (what a hidden-state read needs at least);
- ``hf_sdpa``: the full forward with PyTorch's fused attention (Hugging Face's default);
- ``liref``: `cache_activations` of ``resid_pre`` at all 12 layers, ``last()`` position
  (unhooked attention fused, see `liref_lens.attention`);
- ``liref_half``: the same for layers 0-5 (the forward stops after layer 5);
- ``tl_run_with_cache``: TransformerLens ``run_with_cache`` with a resid_pre-only
  ``names_filter`` (full sequences kept, reduced to the last token afterwards).

Methods run interleaved, ``--repeats`` times; the median time of each is divided by the
median of ``hf``. Peak memory is the rise of the process's resident set size (sampled every
2 ms) above its level before each call; ``--threads`` (default 1) pins torch's threads. Run:
``python benchmarks/cache.py``.

``--memory`` measures instead how peak memory grows with the sequence length: one batch of
``--batch-size`` prompts of each of ``--lengths`` tokens (BOS included) through each method,
**every (method, length) in a fresh process** so no allocator state or retained tensor carries
over. Methods:

- ``liref``: `cache_activations` of ``resid_post`` at all 12 layers, ``last()`` position (the
  forward stops after block 11; the final LayerNorm and the unembedding never run), with the
  bridge's unhooked attention fused (SDPA, `liref_lens.attention`);
- ``liref_eager``: the same with ``lm.sdpa = False`` (the bridge's own eager attention);
- ``hf_eager`` / ``hf_sdpa``: the Hugging Face model's body (``model.transformer``: the 12
  blocks and the final LayerNorm, no LM head, no hidden states kept) with eager attention and
  with PyTorch's fused ``scaled_dot_product_attention``;
- ``tl_run_with_cache``: TransformerLens ``run_with_cache`` with a resid_post-only
  ``names_filter``, reduced to the last token afterwards (a full forward with logits).

Each child loads its model, runs a 16-token warm-up, then resets the kernel's peak-RSS mark
(``echo 5 > /proc/self/clear_refs``) and reads ``VmHWM`` after the call: the peak resident set
of the whole process during the call (weights included), next to the resident set before it.
Where ``clear_refs`` is not writable the peak is ``resource.getrusage``'s ``ru_maxrss`` (which
then includes loading). On a GPU (``--device cuda``) the peak is
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. Run:
``python benchmarks/cache.py --memory``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def build(directory: Path, n_words: int, n_positions: int = 1024) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", *[f"w{i}" for i in range(n_words)]])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<bos>"
    )
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=n_positions)
    GPT2LMHeadModel(cfg).save_pretrained(directory)
    fast.save_pretrained(directory)
    cfg_path = directory / "config.json"
    data = json.loads(cfg_path.read_text())
    data["n_ctx"] = data["n_positions"]
    cfg_path.write_text(json.dumps(data))


METHODS = ("liref", "liref_eager", "hf_eager", "hf_sdpa", "tl_run_with_cache")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _token_batch(length: int, batch_size: int, seed: int) -> tuple[list[str], torch.Tensor]:
    """``batch_size`` prompts of ``length`` tokens (BOS + words) and their token ids."""
    gen = torch.Generator().manual_seed(seed)
    words = torch.randint(0, 5000, (batch_size, length - 1), generator=gen)
    prompts = [" ".join(f"w{int(w)}" for w in row) for row in words]
    ids = torch.cat([torch.ones(batch_size, 1, dtype=torch.long), words + 2], dim=1)
    return prompts, ids  # the word-level vocabulary: <pad>=0, <bos>=1, w{i}=i+2


def memory_child(method: str, length: int, batch_size: int, model_dir: Path, device: str) -> dict:
    """Peak memory of one call of ``method`` on one batch, in this (fresh) process."""
    from transformers import GPT2LMHeadModel

    from liref_lens import cache_activations, last, load_model

    cuda = device.startswith("cuda")
    if method in ("liref", "liref_eager", "tl_run_with_cache"):
        lm = load_model(str(model_dir), device=device)
        lm.sdpa = method != "liref_eager"
        names = [lm.hook_name(layer, "resid_post") for layer in range(lm.n_layers)]

        def run(prompts: list[str], ids: torch.Tensor) -> None:
            if method.startswith("liref"):
                assert lm.encode(prompts) == ids.tolist()
                cache_activations(
                    lm,
                    prompts,
                    sites="resid_post",
                    position=last(),
                    batch_size=batch_size,
                    progress=False,
                )
                return
            with torch.no_grad():
                mask = torch.ones_like(ids).to(device)
                _, cache = lm.model.run_with_cache(
                    ids.to(device), attention_mask=mask, names_filter=names
                )
                torch.stack([cache[n][:, -1] for n in names], dim=1)

    else:
        impl = method.removeprefix("hf_")
        hf = GPT2LMHeadModel.from_pretrained(model_dir, attn_implementation=impl)
        hf = hf.to(device).eval()

        def run(prompts: list[str], ids: torch.Tensor) -> None:
            with torch.no_grad():
                ids = ids.to(device)
                hf.transformer(ids, attention_mask=torch.ones_like(ids))

    run(*_token_batch(16, batch_size, seed=1))  # warm-up: lazy initialisation, kernels
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _status_kib("VmRSS") * 1024
    exact = cuda or _reset_peak_rss()
    start = time.perf_counter()
    run(*_token_batch(length, batch_size, seed=0))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    elif exact:
        peak = _status_kib("VmHWM") * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "method": method,
        "length": length,
        "batch_size": batch_size,
        "before_bytes": before,
        "peak_bytes": peak,
        "peak_is_call_only": exact,
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "device": device,
    }


def memory_table(args: argparse.Namespace) -> None:
    """Run every (method, length) in its own process and print the peak-memory table."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpt2-small-random"
        build(path, 5000, n_positions=args.n_positions or max(args.lengths))
        for length in args.lengths:
            for method in args.methods:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    method,
                    "--length",
                    str(length),
                    "--batch-size",
                    str(args.batch_size),
                    "--model-dir",
                    str(path),
                    "--device",
                    args.device,
                    "--threads",
                    str(args.threads),
                ]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    print(f"{method} at {length} tokens failed:\n{out.stderr[-2000:]}")
                    continue
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(
                    f"  {method:<18} {length:>5} tokens: peak {r['peak_bytes'] / 2**20:8.1f} MiB"
                    f" (before {r['before_bytes'] / 2**20:8.1f} MiB, {r['seconds']:.1f} s)",
                    flush=True,
                )
    unit = "GPU max_memory_allocated" if args.device.startswith("cuda") else "peak RSS (VmHWM)"
    print(
        f"\nmodel: GPT-2-small-sized random (12 layers, d_model 768, 12 heads, vocab 50257), "
        f"batch size {args.batch_size}, device {args.device}, {args.threads} thread(s), torch "
        f"{torch.__version__}"
    )
    print(f"{unit} in MiB during one call; in brackets the rise above the level before it")
    print(f"{'method':<20}" + "".join(f"{n:>22}" for n in args.lengths))
    for method in args.methods:
        cells = []
        for length in args.lengths:
            r = next((r for r in rows if r["method"] == method and r["length"] == length), None)
            if r is None:
                cells.append(f"{'failed':>22}")
                continue
            rise = (r["peak_bytes"] - r["before_bytes"]) / 2**20
            cells.append(f"{r['peak_bytes'] / 2**20:>12.0f} ({rise:>7.0f})")
        print(f"{method:<20}" + "".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory", action="store_true", help="peak memory vs sequence length")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-positions", type=int, help="position table size (default: max length)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="with --memory: also write the rows to this JSON file")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument(
        "--batch-size", type=int, help="prompts per batch (default 16; with --memory 1)"
    )
    parser.add_argument("--min-words", type=int, default=20)
    parser.add_argument("--max-words", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 1 if args.memory or args.child else 16
    if args.child:
        torch.set_num_threads(args.threads)
        row = memory_child(args.child, args.length, args.batch_size, args.model_dir, args.device)
        print(json.dumps(row))
        return
    if args.memory:
        if min(args.lengths) < 17 or args.batch_size < 1 or args.threads < 1:
            parser.error("--lengths must be >= 17, --batch-size and --threads >= 1")
        memory_table(args)
        return

    from transformers import GPT2LMHeadModel

    from liref_lens import cache_activations, last, load_model

    torch.set_num_threads(args.threads)
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
        hf_sdpa = GPT2LMHeadModel.from_pretrained(path, attn_implementation="sdpa").eval()

    ids = lm.encode(prompts)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = [
        lm.pad([ids[i] for i in order[j : j + args.batch_size]])
        for j in range(0, len(order), args.batch_size)
    ]

    def hf_forward(body_only: bool, model: Any = hf) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for b in batches:
                    pos = (b.attention_mask.cumsum(-1) - 1).clamp_min(0)
                    net = model.transformer if body_only else model
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
        "hf_sdpa": hf_forward(False, hf_sdpa),
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
