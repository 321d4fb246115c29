"""The demo's steering step: held-out questions with a gold and a distractor answer, the
steering layer, and the table of what steering did next to each kind of control direction.

Greedy chain-of-thought accuracy is not part of the demo: SmolLM2-135M got 0 of 20 GSM8K
questions right with an 8-shot chain-of-thought prompt (133 s on 2 CPU cores) and 0 of 20
NQ-open questions (``scripts/real_model_accuracy.py``), so next-token metrics are read:
the probability of the gold answer's first token against a distractor's (``p_correct``), the
KL from the unsteered distribution and the entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..experiment import EvalSet, Results
from ..model import LensModel
from ..tasks import Item

__all__ = ["best_layer", "steer_evalset", "steer_table"]


def gold(item: Item) -> str | None:
    """The text of an item's first gold answer (integers without a decimal point)."""
    answer = item.answer
    if answer is None:
        return None
    if isinstance(answer, tuple | list):
        return str(answer[0]) if answer else None
    if isinstance(answer, float) and answer == int(answer):
        return str(int(answer))
    return str(answer)


def _template(rows: Sequence[Item]) -> tuple[str, str]:
    """A numeric answer follows "The answer is "; a text answer follows "A:" after a space."""
    numeric = all(isinstance(r.answer, int | float) for r in rows)
    return ("Q: {q}\nA: The answer is ", "") if numeric else ("Q: {q}\nA:", " ")


def steer_evalset(
    lm: LensModel,
    reasoning: Sequence[Item],
    memory: Sequence[Item],
    names: tuple[str, str] = ("gsm8k", "nq_open"),
) -> EvalSet:
    """Held-out questions with two candidates: the gold answer's first token and a
    distractor's (another question's gold answer of the same class with a different first
    token). Items without an answer are left out; subsets are named by ``names``.

    Example:
        >>> ev = steer_evalset(lm, [Item("w1 + w2", 3.0), Item("w2 + w3", 5.0)],
        ...                    [Item("w3 ?", ("w4",)), Item("w5 ?", ("w6",))])
        >>> ev.candidates[0], ev.subsets
        (('3', '5'), ('gsm8k', 'gsm8k', 'nq_open', 'nq_open'))
    """
    tok = lm.tokenizer

    def first(text: str) -> int:
        return int(tok(text, add_special_tokens=False)["input_ids"][0])

    prompts, cands, subsets = [], [], []
    for name, rows in zip(names, (reasoning, memory), strict=True):
        rows = [r for r in rows if gold(r)]
        template, space = _template(rows)
        golds = [space + str(gold(r)) for r in rows]
        for i, row in enumerate(rows):
            other = next(
                (g for k in range(1, len(golds)) if first(g := golds[(i + k) % len(golds)])
                 != first(golds[i])),
                None,
            )  # fmt: skip
            if other is None:
                continue
            prompts.append(template.format(q=row.question))
            cands.append((golds[i], other))
            subsets.append(name)
    if not prompts:
        raise ValueError(
            "no held-out question has a gold answer and a distractor with another first token; "
            "steering needs questions with answers"
        )
    return EvalSet(
        name="real-heldout",
        prompts=tuple(prompts),
        candidates=tuple(cands),
        correct=(0,) * len(prompts),
        subsets=tuple(subsets),
        candidate_names=("gold", "distractor"),
    )


def steer_table(results: Results) -> pd.DataFrame:
    """Per subset, metric and alpha: the baseline, the fitted direction with its interval,
    and for each control kind the mean, min and max over its directions.

    Columns: ``subset, metric, alpha, baseline, fitted, ci_low, ci_high, n`` and
    ``<kind>_mean, <kind>_min, <kind>_max, n_<kind>`` per control kind (``random``,
    ``shuffled``, ``covariance``).
    """
    t = results.table
    base = t[t["op"] == "baseline"]
    rows = []
    for (subset, metric, alpha), g in t[t["op"] != "baseline"].groupby(
        ["subset", "metric", "alpha"]
    ):
        fitted = g[g["control"] < 0].iloc[0]
        b = base[(base["subset"] == subset) & (base["metric"] == metric)]["value"]
        row = {
            "subset": subset, "metric": metric, "alpha": float(alpha),
            "baseline": float(b.iloc[0]) if len(b) else float("nan"),
            "fitted": fitted["value"], "ci_low": fitted["ci_low"], "ci_high": fitted["ci_high"],
            "n": int(fitted["n"]),
        }  # fmt: skip
        for kind, k in g[g["control"] >= 0].groupby("direction", sort=False):
            row |= {
                f"{kind}_mean": k["value"].mean(), f"{kind}_min": k["value"].min(),
                f"{kind}_max": k["value"].max(), f"n_{kind}": len(k),
            }  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def best_layer(heldout: pd.DataFrame, cohens_d: pd.DataFrame, tol: float = 0.01) -> int:
    """The steering layer: among layers within ``tol`` of the best held-out AUROC (many tie
    at 1.0 when the classes are easy), the one with the largest in-sample Cohen's d.

    Example:
        >>> held = pd.DataFrame({"layer": [1, 2, 3], "value": [0.9, 1.0, 0.995]})
        >>> d = pd.DataFrame({"layer": [1, 2, 3], "value": [5.0, 1.0, 2.0]})
        >>> best_layer(held, d)
        3
    """
    cv = heldout.set_index("layer")["value"]
    top = cv[cv >= cv.max() - tol].index
    d = cohens_d.set_index("layer")["value"]
    d = d[d.index.isin(top)]
    return int(d.idxmax()) if len(d) else int(cv.idxmax())
