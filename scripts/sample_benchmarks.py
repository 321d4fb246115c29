"""Rebuild the benchmark samples shipped in ``src/liref_lens/tasks/data`` from the full files.

Usage::

    python scripts/sample_benchmarks.py [--data /work/shared/data] [--out src/liref_lens/tasks/data]

Deterministic: every sample is drawn with ``random.Random(seed)`` (seed 0) and kept in the
source file's order, so running it twice gives byte-identical files. What it writes:

- ``gsm8k_test_sample.jsonl``: 250 of the 1,319 GSM8K test questions;
- ``mgsm/mgsm_{en,de,fr,zh}.tsv``: the MGSM files of four languages, whole (250 each), unchanged;
- ``nq_open_dev_sample.jsonl``: 300 of the 3,610 NQ-open dev questions;
- ``mmlu_pro_sample.json``: 300 MMLU-Pro test questions, 150 from the reasoning-heavy
  categories (math, physics, engineering, chemistry) and 150 from the memory-heavy ones
  (history, law, psychology, health), split evenly over the four categories of each side
  (38, 38, 37, 37), without the Llama-3-8B outputs of the source file.

JSONL rows gain an ``id``: the row's 0-based line number in the full file. Nothing else is
changed. The licences and sources are in the data folder's README.md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import zipfile
from pathlib import Path

SEED = 0
MGSM_LANGUAGES = ("en", "de", "fr", "zh")
REASONING = ("math", "physics", "engineering", "chemistry")
MEMORY = ("history", "law", "psychology", "health")
MMLU_KEYS = ("question_id", "question", "options", "answer", "answer_index", "cot_content")
MMLU_KEYS += ("category", "src")


def _pick(n_total: int, n: int, seed: int = SEED) -> list[int]:
    return sorted(random.Random(seed).sample(range(n_total), n))


def _sample_jsonl(src: Path, dst: Path, n: int) -> None:
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line]
    lines = [json.dumps({"id": i, **rows[i]}, ensure_ascii=False) for i in _pick(len(rows), n)]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _sample_mmlu_pro(src: Path, dst: Path, per_side: int = 150) -> None:
    with zipfile.ZipFile(src) as archive:
        (name,) = archive.namelist()
        rows = json.loads(archive.read(name))
    keep: list[int] = []
    for categories in (REASONING, MEMORY):
        for category, k in zip(categories, _split_evenly(per_side, len(categories)), strict=True):
            indices = [i for i, row in enumerate(rows) if row["category"] == category]
            keep += [indices[j] for j in _pick(len(indices), k)]
    sample = [{key: rows[i][key] for key in MMLU_KEYS} for i in sorted(keep)]
    dst.write_text(json.dumps(sample, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--out", type=Path, default=Path("src/liref_lens/tasks/data"))
    args = parser.parse_args(argv)
    data, out = args.data, args.out
    (out / "mgsm").mkdir(parents=True, exist_ok=True)
    _sample_jsonl(data / "gsm8k_test.jsonl", out / "gsm8k_test_sample.jsonl", 250)
    _sample_jsonl(data / "nq_open_dev.jsonl", out / "nq_open_dev_sample.jsonl", 300)
    for language in MGSM_LANGUAGES:
        shutil.copyfile(
            data / "mgsm" / f"mgsm_{language}.tsv", out / "mgsm" / f"mgsm_{language}.tsv"
        )
    _sample_mmlu_pro(
        data / "mmlu_pro_questions_with_llama3_8b_outputs.zip", out / "mmlu_pro_sample.json"
    )
    for path in sorted(out.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size:>9,}  {path}")


if __name__ == "__main__":
    main()
