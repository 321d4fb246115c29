"""What survives the confound controls on a real model: held-out, matched, residualised and
transferred AUROC next to the trivial readers, with paired verdicts, and per-item steerability.

Four contrasts, read with the questions shipped with the package (``source="builtin"``),
every prompt written ``"Q: {question}\\nA: "``, last-token ``resid_pre`` at layers 1..n-1:

- ``gsm8k_vs_nq``: GSM8K vs NQ-open (the first half of the NQ sample, seeded split);
- ``mmlu_pro_categories``: MMLU-Pro math/physics/chemistry/engineering vs
  history/law/psychology/health (question text only); ``source`` = MMLU-Pro's ``src`` family
  (``ori_mmlu``, ``stemez``, ``theoremqa``, ``scibench``);
- ``mgsm_de_vs_nq``: MGSM in German vs the other half of NQ-open;
- ``testbed_cues``: the synthetic testbed's prompts (two numbers and five cue words), reasoning
  mode vs memory mode, as text.

Per contrast: ``--n`` items per class (seeded) for the held-out, residualised and transfer
designs; the matched design draws from the whole pool (exact token length). Then the
GSM8K-vs-NQ direction of its best held-out layer (the demo's rule: within 0.01 of the best
held-out AUROC, the largest in-sample Cohen's d) is added at the last token of held-out GSM8K
and NQ questions (alpha -1, +1), next to ``--n-random`` random, shuffled-label and
covariance-matched directions each, and each question's change in p(gold vs distractor) is
read (`liref_lens.designs.per_item_effects`; intended sign: +1 on GSM8K and -1 on NQ for
alpha > 0).

Writes CSVs, ``report.html`` and ``summary.txt`` to ``--out``; prints the summary, the machine
load and the time. Run (as quoted in docs/how-to/confound-designs.md)::

    python scripts/confound_designs.py --model smollm2-135m --out runs/designs-smollm2
    python scripts/confound_designs.py --model <gemma-3-270m .gguf> --out runs/designs-gemma
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from liref_lens import ExperimentConfig, fit_directions, load_model, load_task
from liref_lens.designs import (
    Contrast,
    design_plot,
    design_table,
    heldout,
    matched,
    overlap_plot,
    per_item_effects,
    per_item_plot,
    residualized,
    steerability_summary,
    transfer_heatmap,
    transfer_matrix,
)
from liref_lens.experiment import Experiment
from liref_lens.realdemo import (
    MEMORY_CATEGORIES,
    REASONING_CATEGORIES,
    best_layer,
    steer_evalset,
)
from liref_lens.report import Report
from liref_lens.scores import separation
from liref_lens.testbed import make_testbed


def _q(text: str) -> str:
    return f"Q: {text}\nA: "


def _pools(seed: int) -> dict[str, tuple[list, list, pd.DataFrame | None]]:
    """Per contrast: positive items, negative items (objects with ``.question``), meta."""
    rng = np.random.default_rng(seed)
    gsm = list(load_task("gsm8k", source="builtin").items)
    nq_all = load_task("nq_open", source="builtin").items
    nq = [nq_all[i] for i in rng.permutation(len(nq_all))]
    mmlu = load_task("mmlu_pro", source="builtin").items
    r = [it for it in mmlu if it.meta.get("category") in REASONING_CATEGORIES]
    m = [it for it in mmlu if it.meta.get("category") in MEMORY_CATEGORIES]
    src = pd.DataFrame({"source": [it.meta["src"].split("-")[0] for it in [*r, *m]]})
    mgsm = list(load_task("mgsm", source="builtin", language="de").items)
    tb = make_testbed(seed)

    class _Q:  # a testbed prompt as an item
        def __init__(self, q: str) -> None:
            self.question = q

    return {
        "gsm8k_vs_nq": (gsm, nq[:150], None),
        "mmlu_pro_categories": (r, m, src),
        "mgsm_de_vs_nq": (mgsm, nq[150:], None),
        "testbed_cues": ([_Q(p) for p in tb.reasoning_prompts()],
                         [_Q(p) for p in tb.memory_prompts()], None),
    }  # fmt: skip


def _sample(c: Contrast, n: int, seed: int) -> tuple[Contrast, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.sort(rng.permutation(c.n_pos)[: min(n, c.n_pos)])
    q = np.sort(rng.permutation(c.n_neg)[: min(n, c.n_neg)])
    return c.take(p.tolist(), q.tolist()), p, q


def _line(r) -> str:
    lay = r.layers.sort_values(["value", "layer"], ascending=[False, True])
    best = lay.iloc[0]
    b = r.baselines.set_index("feature")
    beat = r.layers[r.layers["beats_baseline"]]["layer"].tolist()
    return (
        f"{r.contrast} | {r.design} ({r.n_pos}+{r.n_neg}): best layer {int(best['layer'])} "
        f"AUROC {best['value']:.3f} [{best['ci_low']:.3f}, {best['ci_high']:.3f}], acc "
        f"{best['acc']:.2f}; length {b.loc['length', 'auroc']:.3f}, bag of tokens "
        f"{b.loc['bag_of_tokens', 'auroc']:.3f} [{b.loc['bag_of_tokens', 'ci_low']:.3f}, "
        f"{b.loc['bag_of_tokens', 'ci_high']:.3f}]; diff vs best reader {best['diff']:+.3f} "
        f"[{best['diff_low']:+.3f}, {best['diff_high']:+.3f}]; layers that beat every trivial "
        f"reader (paired): {beat if beat else 'none'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="runs/confound-designs")
    ap.add_argument("--n", type=int, default=100, help="items per class per design (100)")
    ap.add_argument("--n-eval", type=int, default=24, help="steering questions per subset")
    ap.add_argument("--n-random", type=int, default=5, help="controls of each kind")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steer-layer", type=int, default=None, help="default: the demo's rule")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start, laps = time.perf_counter(), {}
    load0 = os.getloadavg()

    def lap(name: str) -> None:
        laps[name] = round(time.perf_counter() - start - sum(laps.values()), 1)
        print(f"  [{name}: {laps[name]:.0f} s; load {os.getloadavg()[0]:.2f}]", flush=True)

    lm = load_model(args.model, device="cpu")
    layers = list(range(1, lm.n_layers))
    lap("load")
    pools, contrasts, samples, rows = {}, {}, {}, {}
    for name, (pos, neg, meta) in _pools(args.seed).items():
        prompts = [_q(it.question) for it in pos], [_q(it.question) for it in neg]
        pools[name] = Contrast.read(lm, name, *prompts, layers=layers, meta=meta)
        contrasts[name], *rows[name] = _sample(pools[name], args.n, args.seed)
        samples[name] = (pos, neg)
        print(f"{name}: pool {pools[name].n_pos}+{pools[name].n_neg}", flush=True)
    lap("cache")
    kw = dict(n_boot=args.n_boot, seed=args.seed)
    results = []
    for name, c in contrasts.items():
        results.append(heldout(c, **kw))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                results.append(matched(pools[name], min_items=10, **kw))
            except ValueError as err:
                print(f"{name} | matched: {err}")
        for w in caught:
            print(f"{name} | matched: warning: {w.message}")
        results.append(residualized(c, ["token_length"], **kw))
        results.append(residualized(c, ["token_length"], method="leace", **kw))
        if "source" in c.meta:
            results.append(residualized(c, ["token_length", "source"], **kw))
        print("\n".join(_line(r) for r in results if r.contrast == name), flush=True)
    table = design_table(results)
    lap("designs")
    matrix = transfer_matrix(list(contrasts.values()), **kw)
    lap("transfer")

    # ----- steering: the GSM8K-vs-NQ direction at its best held-out layer, per item -------
    main_c = contrasts["gsm8k_vs_nq"]
    ds = fit_directions(main_c.pos, main_c.neg, model=lm)
    # the demo's rule: among layers within 0.01 of the best held-out AUROC, the largest
    # in-sample Cohen's d (many layers tie at 1.000 on this contrast)
    d = separation(main_c.pos, main_c.neg, ds, scores=("cohens_d",), n_boot=0, progress=False)
    layer = args.steer_layer or best_layer(results[0].layers, d[d["score"] == "cohens_d"])
    gsm, nq = samples["gsm8k_vs_nq"]
    used_p, used_n = set(rows["gsm8k_vs_nq"][0].tolist()), set(rows["gsm8k_vs_nq"][1].tolist())
    ev_gsm = [it for i, it in enumerate(gsm) if i not in used_p][: args.n_eval]
    ev_nq = [it for i, it in enumerate(nq) if i not in used_n][: args.n_eval]
    evalset = steer_evalset(lm, ev_gsm, ev_nq)
    cfg = ExperimentConfig(
        layers=(layer,), alphas=(-1.0, 1.0), ops=("add",), n_random=args.n_random,
        controls=("random", "shuffled", "covariance"), seed=args.seed, n_boot=args.n_boot,
        batch_size=16, positions="last()",
    )  # fmt: skip
    res = Experiment(lm, ds, evalset, cfg, control_activations=(main_c.pos, main_c.neg)).run(
        out / "experiment", progress=False
    )
    effects = per_item_effects(res, expect={"gsm8k": 1, "nq_open": -1})
    steer = steerability_summary(effects, n_boot=args.n_boot, seed=args.seed)
    lap("steering")

    lines = [
        f"model {lm.name} ({lm.n_layers} layers, d_model {lm.d_model}); load average at start "
        f"{load0[0]:.2f}, {os.cpu_count()} CPUs, {args.threads} torch thread(s)"
    ]
    lines += [_line(r) for r in results]
    lay = matrix[matrix["reader"] == "layer"]
    best_reader = matrix[matrix["reader"] != "layer"].groupby(["train", "test"])["auroc"].max()
    for name in contrasts:
        parts = [
            f"-> {te}: best layer AUROC {g['auroc'].max():.3f}, acc at A's cut "
            f"{g.loc[g['auroc'].idxmax(), 'acc']:.2f}, best reader "
            f"{best_reader[(name, te)]:.3f}, layers beating every reader "
            f"{int(g['beats_baseline'].sum())}"
            for te, g in lay[lay["train"] == name].groupby("test", sort=False)
        ]
        lines.append(f"transfer from {name}: " + "; ".join(parts))
    s = steer.set_index(["alpha", "subset", "direction", "statistic"])
    for alpha in (-1.0, 1.0):
        for subset in ("gsm8k", "nq_open"):
            parts = []
            for kind in ("fitted", "random", "shuffled", "covariance"):
                md, ww = (s.loc[(alpha, subset, kind, st)] for st in
                          ("mean_delta", "share_wrong_way"))  # fmt: skip
                rng_ = (
                    f" (controls {md['control_min']:+.3f}..{md['control_max']:+.3f})"
                    if kind != "fitted"
                    else f" [{md['ci_low']:+.3f}, {md['ci_high']:+.3f}]"
                )
                parts.append(f"{kind} {md['value']:+.3f}{rng_}, wrong way {ww['value']:.0%}")
            lines.append(f"steer layer {layer} alpha {alpha:+g} {subset}: mean change in "
                         f"p(gold) " + "; ".join(parts))  # fmt: skip
    kl = res.table[(res.table["metric"] == "kl") & (res.table["subset"] == "all")]
    for (alpha, kind), g in kl[kl["op"] == "add"].groupby(["alpha", "direction"]):
        lines.append(f"KL alpha {alpha:+g} {kind}: {g['value'].min():.3f}-{g['value'].max():.3f}")
    lines.append(f"times (s): {laps}; total {time.perf_counter() - start:.0f} s; load average "
                 f"at end {os.getloadavg()[0]:.2f}")  # fmt: skip
    summary = "\n".join(lines)
    print("\n" + summary)

    table.to_csv(out / "designs.csv", index=False)
    pd.concat([r.baselines.assign(design=r.design, contrast=r.contrast) for r in results]).to_csv(
        out / "baselines.csv", index=False
    )
    pd.concat([r.verdicts.assign(design=r.design, contrast=r.contrast) for r in results]).to_csv(
        out / "verdicts.csv", index=False
    )
    matrix.to_csv(out / "transfer.csv", index=False)
    effects.to_csv(out / "per_item.csv", index=False)
    steer.to_csv(out / "steerability.csv", index=False)
    (out / "summary.txt").write_text(summary + "\n")
    rep = Report(f"Confound-controlled designs on {lm.name}", config=vars(args))
    rep.findings(lines)
    for name in contrasts:
        rep.figure(f"{name}: AUROC by layer under each design", design_plot(table, name))
        m = [r for r in results if r.contrast == name and r.design.startswith("matched")]
        if m:
            from liref_lens.designs import match_classes

            values = pools[name].meta["token_length"].to_numpy()
            n_pos = pools[name].n_pos
            sample = match_classes(values[:n_pos], values[n_pos:], min_items=0, warn_share=0)
            rep.figure(f"{name}: token-length overlap", overlap_plot(sample))
    rep.figure("Transfer", transfer_heatmap(matrix, layer=layer))
    for alpha in (-1.0, 1.0):
        rep.figure(f"Per-item effect, alpha {alpha:+g}",
                   per_item_plot(effects, layer=layer, alpha=alpha))  # fmt: skip
    rep.table("Designs", table)
    rep.write(out / "report.html")


if __name__ == "__main__":
    main()
