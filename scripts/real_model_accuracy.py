"""Greedy answer accuracy of a real model on GSM8K (8-shot chain of thought) and NQ-open.

Measures whether answer accuracy is a usable steering metric on a model: if the unsteered
model gets almost nothing right, a steering effect on accuracy cannot be seen, and the
next-token metrics of `liref_lens.realdemo` (probability of the gold answer's first token,
KL, entropy) are the ones to read. Questions: the samples shipped with the package, a seeded
random subset. Prints accuracies with 95% bootstrap intervals, parse failures, time.

Run: ``python scripts/real_model_accuracy.py --n 20`` (about 2.5 min for SmolLM2-135M on 2 CPU
cores). The numbers are quoted in docs/how-to/real-model.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from liref_lens import load_model
from liref_lens.generation import generate
from liref_lens.metrics import mean_ci
from liref_lens.tasks import load_task


def _run(lm, task, style: str, max_new_tokens: int, batch_size: int) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = generate(lm, task.prompts(style), max_new_tokens, batch_size=batch_size)
    return list(out.texts), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=20, help="questions per task (default: 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model, device="cpu")
    runs = (
        ("gsm8k", "few_shot", 160),  # 8-shot chain of thought (Wei et al.), answer after it
        ("nq_open", "zero_shot", 16),  # "Q: ...\nA:", exact match after normalisation
    )
    for name, style, max_new in runs:
        task = load_task(name, source="builtin").sample(args.n, seed=args.seed)
        texts, seconds = _run(lm, task, style, max_new, args.batch_size)
        result = task.evaluate(texts)
        correct = [
            float(task.is_correct(task.parse(t), it))
            for t, it in zip(texts, task.items, strict=True)
        ]
        mean, lo, hi = mean_ci(correct, seed=args.seed)
        print(
            f"{name} ({style}, greedy, {max_new} new tokens): accuracy {mean:.2f} "
            f"[{lo:.2f}, {hi:.2f}] ({result.n_correct}/{result.n}), parse failures "
            f"{result.n_failures}, {seconds:.0f} s"
        )
        for text, item in list(zip(texts, task.items, strict=True))[:3]:
            print(f"  gold {item.answer!r}; generated {text[:120]!r}")


if __name__ == "__main__":
    main()
