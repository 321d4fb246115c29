"""Seeded random samples, one template at a time; `take` stays "the first n"; `load_task`."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from math import comb
from pathlib import Path

import pytest

from liref_lens.tasks import Item, Task, load_task, numbers_equal, parse_number
from liref_lens.tasks.sampling import round_robin


def _templated(templates: int = 30, variants: int = 50) -> Task:
    """Items in file order, all variants of template 0 first (as GSM-Symbolic's files are)."""
    items = [
        Item(f"template {t} variant {v}", float(v), group=f"t{t}", id=f"{t}-{v}")
        for t in range(templates)
        for v in range(variants)
    ]
    return Task("toy", items, parser=parse_number, matcher=numbers_equal)


def test_sample_draws_different_templates_first() -> None:
    """Fails before: a plain random draw of 20 from 30 templates x 50 variants repeats templates."""
    task = _templated()
    for seed in range(20):
        picked = task.sample(20, seed=seed)
        assert len(picked) == 20 and len({item.group for item in picked}) == 20
    # past the number of templates: every template twice before any template three times
    counts = Counter(item.group for item in task.sample(61, seed=3))
    assert sorted(Counter(counts.values()).items()) == [(2, 29), (3, 1)]
    # the first rows are 20 variants of one template; take keeps meaning "the first n"
    assert {item.group for item in task.take(20)} == {"t0"}
    assert task.take(20).items == task.items[:20]


def test_sample_is_seeded_and_keeps_file_order() -> None:
    task = _templated()
    a, b = task.sample(20, seed=7), task.sample(20, seed=7)
    assert a == b and a != task.sample(20, seed=8)
    positions = [task.items.index(item) for item in a]
    assert positions == sorted(positions)
    assert len(task.sample(10_000, seed=0)) == len(task)  # more than there are: all of them
    with pytest.raises(ValueError, match="n must be 0 or more"):
        task.sample(-1)


def test_templates_and_variants_are_drawn_uniformly() -> None:
    """Over many seeds, every template and every variant within one is equally likely."""
    task = _templated(templates=6, variants=4)
    seeds = 3000
    groups: Counter[str] = Counter()
    variants: Counter[str] = Counter()
    for seed in range(seeds):
        for item in task.sample(3, seed=seed):
            groups[item.group or ""] += 1
            variants[item.id or ""] += 1
    expected_group = seeds * 3 / 6  # 3 of 6 templates per draw
    assert all(abs(c - expected_group) < 0.1 * expected_group for c in groups.values())
    expected_variant = expected_group / 4
    assert len(variants) == 24
    assert all(abs(c - expected_variant) < 0.2 * expected_variant for c in variants.values())


def test_without_groups_every_subset_is_equally_likely() -> None:
    task = Task("toy", [Item(str(i), 1.0) for i in range(6)], parse_number, numbers_equal)
    seeds = 6000
    draws = Counter(tuple(item.question for item in task.sample(2, seed=s)) for s in range(seeds))
    assert len(draws) == comb(6, 2) == len(list(combinations(range(6), 2)))
    expected = seeds / comb(6, 2)
    assert all(abs(c - expected) < 0.2 * expected for c in draws.values())
    grouped = _templated(5, 5)
    flat = grouped.sample(5, seed=0, per_group=False)
    assert flat.provenance["selection"] == [{"sample": 5, "seed": 0, "per_group": False}]


def test_round_robin_is_the_documented_algorithm() -> None:
    """Pins the documented draw (the same random calls), so a seed keeps its sample."""
    import random

    groups = ["b", "a", "b", None, "a", "c", "b"]
    rng = random.Random(5)
    members = {("group", "b"): [0, 2, 6], ("group", "a"): [1, 4], ("item", 3): [3]}
    members[("group", "c")] = [5]
    order = [members[k] for k in [("group", "b"), ("group", "a"), ("item", 3), ("group", "c")]]
    rng.shuffle(order)
    for ix in order:
        rng.shuffle(ix)
    rounds = [ix[d] for d in range(3) for ix in order if d < len(ix)]
    assert round_robin(groups, 5, seed=5) == sorted(rounds[:5])


def test_load_task_sample_and_seed(tmp_path: Path) -> None:
    """Fails before: load_task had no sample/seed (they went to the loader: TypeError)."""
    rows = [
        {"id": t, "instance": v, "question": f"{t}/{v}?", "answer": f"#### {v}", "original_id": t}
        for t in range(12)
        for v in range(50)
    ]
    path = tmp_path / "GSM_p2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task("gsm_symbolic", source=path, sample=10, seed=4)
    assert len(task) == 10 and len({item.group for item in task}) == 10
    assert task == load_task("gsm_symbolic", source=path).sample(10, seed=4)
    assert task.provenance["selection"] == [{"sample": 10, "seed": 4, "per_group": True}]
    first = load_task("gsm_symbolic", source=path, n=10)
    assert {item.group for item in first} == {"0"}
    assert first.provenance["selection"] == [{"first": 10}]
    with pytest.raises(ValueError, match="give n= .* or sample= .*, not both"):
        load_task("gsm_symbolic", source=path, n=10, sample=10)
