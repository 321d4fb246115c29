"""Exploration of testbed variants: train one, locate the mode, measure switch rates.

Usage:
    python scripts/explore_testbed.py train VARIANT OUT_DIR [--seed 0]
    python scripts/explore_testbed.py patch CKPT_DIR [--seed 0]
    python scripts/explore_testbed.py measure CKPT_DIR [--seed 0] [--random-seed 0]
        [--n-random 10] [--alphas -3 ... 3] [--json OUT]

``train`` trains one of ``VARIANTS`` (v7 is the shipped configuration, v6 the one shipped
before it). ``patch`` writes the resid_pre of a reasoning-mode twin (one cue changed) into
borderline memory-mode runs at one (layer, position) and reports the share switching to the
rule answer. ``measure`` fits the last-token difference-in-means between the reasoning-mode and
memory-mode prompts of the fit set (resid_pre, every layer), adds it (raw, alpha in a grid) at
one layer (at the last token, or at every position), and reports, on the borderline prompts,
the share that switch from the memorized answer to the rule answer (positive alpha, memory-mode
prompts) and from the rule answer to the memorized answer (negative alpha, reasoning-mode
prompts), next to ``--n-random`` norm-matched random directions; also a position-aware
direction (one mean difference per position, each added at its position). The results of all
variants are in ``src/liref_lens/testbed/MEASUREMENTS.md``. Runs on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from liref_lens import Add, cache_activations, fit_directions, load_model, random_like
from liref_lens.positions import at, every, last
from liref_lens.testbed import TestbedWorld, TrainConfig, make_testbed, train_testbed
from liref_lens.testbed.measure import answers, switch_rate

# The first explored model (v1-v5); v6 shipped first, the default TrainConfig is v7.
# v1-v6 decayed the learning rate to 10% (the default before v7).
_SMALL = dict(
    n_layer=4,
    d_model=64,
    n_head=4,
    d_mlp=256,
    steps=3000,
    batch_size=256,
    lr=3e-3,
    min_lr_ratio=0.1,
)

VARIANTS: dict[str, tuple[dict, dict]] = {
    # name: (TestbedWorld overrides, TrainConfig overrides); results in MEASUREMENTS.md
    "v1": ({"layout": "cues_first"}, {**_SMALL, "threads": 2}),
    "v2": ({}, {**_SMALL, "weight_decay": 2.0}),
    "v3": ({}, _SMALL),
    "v4": ({}, {**_SMALL, "dropout": 0.1}),
    "v5": ({}, {**_SMALL, "dropout": 0.1, "steps": 4000}),
    "v6": ({}, {"steps": 3500, "min_lr_ratio": 0.1}),  # shipped before v7
    "v7": ({}, {}),  # the shipped checkpoint
}


def train(variant: str, out_dir: str, seed: int) -> None:
    world_kw, cfg_kw = VARIANTS[variant]
    record = train_testbed(
        out_dir, seed, world=TestbedWorld(**world_kw), config=TrainConfig(**cfg_kw), progress=True
    )
    print(json.dumps({k: v for k, v in record.items() if k != "world"}, indent=1))


def _separation(lm, tb, ds, layers):
    """AUROC of the projection on each layer's direction: borderline reasoning vs memory."""
    from liref_lens import auroc

    out = {}
    for mode_items in (tb.borderline("reasoning"), tb.borderline("memory")):
        acts = cache_activations(
            lm, [it.prompt for it in mode_items], layers=layers, progress=False
        )
        out[mode_items[0].mode] = acts
    for layer in layers:
        u = ds.at(layer).float()
        r = out["reasoning"].at_layer(layer).float() @ u
        m = out["memory"].at_layer(layer).float() @ u
        yield layer, auroc(r.tolist(), m.tolist())


def measure(ckpt: str, seed: int, random_seed: int, n_random: int, alphas, out_json) -> None:
    torch.set_num_threads(1)
    lm = load_model(ckpt, device="cpu")
    world = TestbedWorld(**json.loads((Path(ckpt) / "training.json").read_text())["world"])
    tb = make_testbed(seed=seed, world=world)
    layers = list(range(lm.n_layers))
    pos = cache_activations(lm, tb.reasoning_prompts(), layers=layers, progress=False)
    neg = cache_activations(lm, tb.memory_prompts(), layers=layers, progress=False)
    ds = fit_directions(pos, neg, model=lm)
    randoms = random_like(ds, n_random, generator=torch.Generator().manual_seed(random_seed))
    resid = torch.cat([pos.tensor, neg.tensor]).norm(dim=-1).mean(0)
    print(f"testbed seed {seed}, random seed {random_seed}, {n_random} random directions")
    for layer, a in _separation(lm, tb, ds, layers):
        i = layers.index(layer)
        print(
            f"L{layer}: |diff| {ds.norms()[i]:.3f}, mean last-token |resid| {resid[i]:.3f}, "
            f"AUROC of projection on borderline prompts {a:.3f}"
        )
    sets = {
        1: (tb.borderline("memory"), "memorized", "rule"),
        -1: (tb.borderline("reasoning"), "rule", "memorized"),
    }
    base = {k: answers(lm, world, v[0]) for k, v in sets.items()}
    # per-position mean differences (all prompts have the same length: rank = position)
    pos_e = cache_activations(
        lm, tb.reasoning_prompts(), layers=layers, position=every(), progress=False
    )
    neg_e = cache_activations(
        lm, tb.memory_prompts(), layers=layers, position=every(), progress=False
    )
    per_pos = [
        pos_e.tensor[pos_e.token_rank == i].double().mean(0)
        - neg_e.tensor[neg_e.token_rank == i].double().mean(0)
        for i in range(world.prompt_length)
    ]  # each [layer, d]
    rows = []
    t0 = time.time()
    for layer in layers:
        for alpha in alphas:
            items, src, tgt = sets[1 if alpha > 0 else -1]
            b = base[1 if alpha > 0 else -1]

            def rate(op, items=items, src=src, tgt=tgt, b=b):
                return switch_rate(lm, world, items, op, source=src, target=tgt, baseline=b)

            for where, positions in (("all", "all"), ("last", last())):
                f = rate(Add(layers=[layer], direction=ds, alpha=alpha, positions=positions))
                rr = [
                    rate(Add(layers=[layer], direction=r, alpha=alpha, positions=positions))
                    for r in randoms
                ]
                sw = [x.switched for x in rr]
                rows.append(
                    {
                        "direction": "last-token diff-in-means",
                        "positions": where,
                        "layer": layer,
                        "alpha": alpha,
                        "n": f.n,
                        "switch": f.switched,
                        "kept": f.kept,
                        "random_mean": sum(sw) / len(sw),
                        "random_max": max(sw),
                        "random_kept": sum(x.kept for x in rr) / len(rr),
                    }
                )
            ops = [
                Add(
                    layers=[layer],
                    direction=per_pos[i][layer].float(),
                    alpha=alpha,
                    positions=at(i),
                )
                for i in range(world.prompt_length)
                if float(per_pos[i][layer].norm()) > 0
            ]
            f = rate(ops)
            rows.append(
                {
                    "direction": "per-position diff-in-means",
                    "positions": "each",
                    "layer": layer,
                    "alpha": alpha,
                    "n": f.n,
                    "switch": f.switched,
                    "kept": f.kept,
                }
            )
            for row in rows[-3:]:
                print(json.dumps(row), flush=True)
    print(f"measured in {time.time() - t0:.0f}s")
    if out_json:
        Path(out_json).write_text(json.dumps(rows, indent=1))


def patch(ckpt: str, seed: int) -> None:
    """Activation patching: which (layer, position) carries the mode to the answer.

    For each borderline memory-mode item, a twin with the same operands and one memory cue
    replaced by a reasoning cue (so reasoning mode) is run; its resid_pre at one (layer,
    position) is written into the original run. The share switching to the rule answer
    says whether that single residual vector carries the mode.
    """
    import numpy as np

    torch.set_num_threads(1)
    lm = load_model(ckpt, device="cpu")
    world = TestbedWorld(**json.loads((Path(ckpt) / "training.json").read_text())["world"])
    tb = make_testbed(seed=seed, world=world)
    rng = np.random.default_rng(seed)
    items, twins = [], []
    for it in tb.borderline("memory"):
        cues = list(it.cues)
        mem_slots = [i for i, c in enumerate(cues) if c in world.memory_cues]
        slot = mem_slots[int(rng.integers(len(mem_slots)))]
        cues[slot] = world.reasoning_cues[int(rng.integers(len(world.reasoning_cues)))]
        items.append(it)
        twins.append(world.item(cues, it.a, it.b))
    src_b, dst_b = lm.tokenize([t.prompt for t in twins]), lm.tokenize([t.prompt for t in items])
    rule = torch.tensor([world.number_offset + it.rule_answer for it in items])
    mem = torch.tensor([world.number_offset + it.memorized_answer for it in items])
    base = lm.forward(dst_b)[:, -1].argmax(-1)
    ok = base == mem
    print("baseline memorized share", float(ok.float().mean()))
    n_pos = world.prompt_length
    for layer in range(lm.n_layers):
        name = lm.hook_name(layer, "resid_pre")
        store: dict[str, torch.Tensor] = {}

        def keep(act, hook, store=store):
            store["x"] = act.detach()

        with lm.hooks([(name, keep)]):
            lm.forward(src_b)
        row = []
        for p in range(n_pos):

            def put(act, hook, p=p, store=store):
                act = act.clone()
                act[:, p] = store["x"][:, p]
                return act

            with lm.hooks([(name, put)]):
                pred = lm.forward(dst_b)[:, -1].argmax(-1)
            row.append(float((pred[ok] == rule[ok]).float().mean()))
        print(f"resid_pre L{layer}: switch by position", " ".join(f"{x:.2f}" for x in row))


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("variant")
    t.add_argument("out_dir")
    t.add_argument("--seed", type=int, default=0)
    m = sub.add_parser("measure")
    m.add_argument("ckpt")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--random-seed", type=int, default=0)
    m.add_argument("--n-random", type=int, default=10)
    m.add_argument("--alphas", type=float, nargs="+", default=[-3, -2, -1, -0.5, 0.5, 1, 2, 3])
    m.add_argument("--json")
    q = sub.add_parser("patch")
    q.add_argument("ckpt")
    q.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.cmd == "patch":
        patch(args.ckpt, args.seed)
    elif args.cmd == "train":
        train(args.variant, args.out_dir, args.seed)
    else:
        measure(args.ckpt, args.seed, args.random_seed, args.n_random, args.alphas, args.json)


if __name__ == "__main__":
    main()
