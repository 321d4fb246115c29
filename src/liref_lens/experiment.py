"""Reusable, seeded, resumable steering experiments with random-direction controls.

An `Experiment` evaluates a model on an `EvalSet` (prompts with answer candidates and a subset
label each) once without intervention (the baseline) and once per grid cell: op x layer x
alpha x {the fitted direction, ``n_random`` norm-matched random directions}. Per prompt it
records next-token metrics at the last prompt token:

- ``kl``: KL(baseline || steered); ``entropy`` of the steered distribution;
- ``p_correct``: probability of the correct candidate among the candidates;
- ``acc``: the top candidate is the correct one; ``flip``: the top candidate differs from the
  baseline's; ``choose_<name>``: the top candidate is candidate ``<name>``;
- with ``max_new_tokens > 0`` and an eval set made by `EvalSet.from_task`: ``gen_acc``
  (greedy generation under the op, parsed by the task; a parse failure is wrong) and
  ``parse_fail`` (the generation could not be parsed).

Each finished cell is written atomically to ``out_dir/cells/`` and skipped on a re-run, so an
interrupted run resumes where it stopped and gives the same numbers. `Results` holds the
per-prompt values and a tidy table (op, layer, alpha, control, direction, subset, metric,
value, n, ci_low, ci_high) with seeded bootstrap intervals.

Random control ``i`` draws one Gaussian matrix ``[n_layers, d_model]`` from seed
``(seed, i)`` and rescales each layer's row to the fitted direction's norm at that layer, so
a control is the same direction across alphas (a dose-response band). Memory: per-prompt
values of all cells (n_prompts x metrics x cells floats).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ._io import atomic_write, atomic_write_text
from .cache import cache_activations
from .generation import generate
from .interventions import Add, Op, ProjectOut, Scale, intervene, layer_vector, paper_scale
from .metrics import answer_probability, candidate_choice, entropy, kl_divergence, mean_ci
from .model import LensModel
from .positions import Position, parse_position

__all__ = ["EvalSet", "Experiment", "ExperimentConfig", "Results"]

OP_KINDS = ("add", "scale", "project_out", "paper_scale")


@dataclass(frozen=True)
class EvalSet:
    """Prompts with answer candidates (strings whose first token is scored) and subsets."""

    name: str
    prompts: tuple[str, ...]
    candidates: tuple[tuple[str, ...], ...] = ()
    correct: tuple[int, ...] = ()
    subsets: tuple[str, ...] = ()
    candidate_names: tuple[str, ...] = ()
    task: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if n == 0:
            raise ValueError(f"eval set {self.name!r} has no prompts")
        if not self.subsets:
            object.__setattr__(self, "subsets", ("all",) * n)
        for what in ("candidates", "correct", "subsets"):
            got = len(getattr(self, what))
            if got != n and not (what != "subsets" and got == 0 and not self.candidates):
                raise ValueError(f"{what} has {got} entries for {n} prompts")
        if self.candidates:
            widths = {len(c) for c in self.candidates}
            if len(widths) != 1 or min(widths) < 1:
                raise ValueError("every prompt needs the same number (>= 1) of candidates")
            if self.candidate_names and len(self.candidate_names) != widths.pop():
                raise ValueError("candidate_names must name each candidate")
        if self.task is not None and len(self.task) != n:
            raise ValueError(f"task has {len(self.task)} items for {n} prompts")

    @classmethod
    def from_task(cls, task: Any, style: str = "zero_shot", name: str | None = None) -> EvalSet:
        """Prompts of a `liref_lens.Task`, scored by generating and parsing with the task.

        Subsets are the items' labels ("unlabelled" where an item has none).
        """
        return cls(
            name=name or task.name,
            prompts=tuple(task.prompts(style)),
            subsets=tuple(lab or "unlabelled" for lab in task.labels),
            task=task,
        )

    @property
    def digest(self) -> str:
        blob = json.dumps([self.prompts, self.candidates, self.correct, self.subsets])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def candidate_ids(self, model: LensModel) -> torch.Tensor:
        tok = model.tokenizer
        ids = [
            [tok(c, add_special_tokens=False)["input_ids"][0] for c in row]
            for row in self.candidates
        ]
        return torch.tensor(ids, dtype=torch.long)


@dataclass(frozen=True)
class ExperimentConfig:
    """The grid and settings of an experiment; serializable to JSON."""

    layers: tuple[int, ...]
    alphas: tuple[float, ...] = (1.0,)
    ops: tuple[str, ...] = ("add",)
    sites: tuple[str, ...] = ("resid_pre",)
    positions: str = "all"
    add_scale: str = "raw"
    n_random: int = 10
    seed: int = 0
    n_boot: int = 1000
    batch_size: int = 32
    max_new_tokens: int = 0
    model_name: str = ""
    model_fingerprint: str = ""
    directions: str = ""
    evalset: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [o for o in self.ops if o not in OP_KINDS]
        if bad:
            raise ValueError(f"unknown ops {bad}; use any of {OP_KINDS}")
        if not self.layers or not self.alphas:
            raise ValueError("layers and alphas must each name at least one value")
        if self.positions not in ("all", "prompt", "generated") and not self.positions.startswith(
            "span("
        ):
            parse_position(self.positions)  # raises on an unknown selector

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        data = json.loads(text)
        for key in ("layers", "alphas", "ops", "sites"):
            data[key] = tuple(data[key])
        return cls(**data)

    def cells(self) -> list[tuple[str, int, float, int]]:
        """(op, layer, alpha, control) for every cell; control -1 is the fitted direction."""
        out = []
        for op in self.ops:
            alphas = (1.0,) if op == "project_out" else self.alphas
            for layer in self.layers:
                for alpha in alphas:
                    for control in range(-1, self.n_random):
                        out.append((op, layer, float(alpha), control))
        return out


def _direction_label(directions: Any) -> str:
    if isinstance(directions, torch.Tensor):
        return "tensor:" + hashlib.sha256(directions.float().numpy().tobytes()).hexdigest()[:16]
    return f"{getattr(directions, 'method', '?')}:{getattr(directions, 'data_hash', '?')}"


class Experiment:
    """Model + eval set + direction set + grid; `run` evaluates it into a folder.

    Example:
        >>> cfg = ExperimentConfig(layers=(1, 2), alphas=(-1.0, 1.0), n_random=2, n_boot=50)
        >>> results = Experiment(lm, ds, evalset, cfg).run(tmp / "exp1", progress=False)
        >>> sorted(set(results.table["direction"]))
        ['fitted', 'none', 'random']
    """

    def __init__(
        self,
        model: LensModel,
        directions: Any,
        evalset: EvalSet,
        config: ExperimentConfig,
        *,
        rule: Position | None = None,
        allow_transfer: bool = False,
    ) -> None:
        """``rule``: a position selector object (e.g. a `span`) used instead of
        ``config.positions``, whose text then records it. ``allow_transfer``: accept a
        direction set fitted on another model of the same shape (e.g. base -> instruct)."""
        self._position_rule = rule
        if rule is not None:
            config = replace(config, positions=str(rule))
        self.model = model
        self.directions = directions
        self.evalset = evalset
        self.config = replace(
            config,
            layers=tuple(model.resolve_layer(x) for x in config.layers),
            model_name=model.name,
            model_fingerprint=model.fingerprint,
            directions=_direction_label(directions),
            evalset=f"{evalset.name}:{evalset.digest}",
        )
        if hasattr(directions, "check_compatible"):
            directions.check_compatible(model, allow_transfer=allow_transfer)
        self._random: dict[int, torch.Tensor] = {}
        self._norms: dict[int, float] | None = None

    # ----- directions ----------------------------------------------------------------------
    def _fitted(self, layer: int) -> torch.Tensor:
        return layer_vector(self.directions, layer, None).detach().float().cpu()

    def vector(self, layer: int, control: int) -> torch.Tensor:
        fitted = self._fitted(layer)
        if control < 0:
            return fitted
        if control not in self._random:
            gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + control)
            self._random[control] = torch.randn(
                self.model.n_layers, self.model.d_model, generator=gen, dtype=torch.float64
            )
        r = self._random[control][layer]
        return (r / r.norm() * fitted.double().norm()).float()

    def op(self, kind: str, layer: int, alpha: float, control: int) -> Op:
        cfg = self.config
        v = self.vector(layer, control)
        where: dict[str, Any] = dict(layers=(layer,), sites=cfg.sites, positions=self._rule())
        if kind == "add":
            norms = self.resid_norms() if cfg.add_scale == "resid_norm" else None
            return Add(direction=v, alpha=alpha, scale=cfg.add_scale, norms=norms, **where)
        if kind == "scale":
            return Scale(direction=v, alpha=alpha, **where)
        if kind == "project_out":
            return ProjectOut(direction=v, **where)
        return paper_scale(v, alpha, self.model, source_layer=layer)

    def resid_norms(self) -> dict[int, float]:
        """Mean norm of the activations at each grid layer (first site, last prompt token,
        eval-set prompts, no intervention): the unit of ``add_scale="resid_norm"``."""
        if self._norms is None:
            acts = cache_activations(
                self.model,
                list(self.evalset.prompts),
                layers=list(self.config.layers),
                sites=(self.config.sites[0],),
                batch_size=self.config.batch_size,
                progress=False,
            )
            norms = acts.tensor.double().norm(dim=-1).mean(0)
            self._norms = {layer: float(n) for layer, n in zip(acts.layers, norms, strict=True)}
        return self._norms

    def _rule(self) -> Any:
        if self._position_rule is not None:
            return self._position_rule
        p = self.config.positions
        return p if p in ("all", "prompt", "generated") else parse_position(p)

    # ----- evaluation ----------------------------------------------------------------------
    @cached_property
    def _prompt_ids(self) -> list[list[int]]:
        """Token ids of the eval-set prompts, encoded once for every cell."""
        return self.model.encode(self.evalset.prompts)

    @cached_property
    def _candidate_ids(self) -> torch.Tensor:
        return self.evalset.candidate_ids(self.model)

    def _logits(self, ops: Sequence[Op]) -> torch.Tensor:
        ids = self._prompt_ids
        bs = self.config.batch_size
        chunks = []
        with torch.no_grad():
            for i in range(0, len(ids), bs):
                batch = self.model.pad(ids[i : i + bs])
                rows = range(i, i + len(ids[i : i + bs]))
                if ops:
                    with intervene(self.model, *ops):
                        chunks.append(self.model.forward(batch, row_ids=rows)[:, -1].float().cpu())
                else:
                    chunks.append(self.model.forward(batch, row_ids=rows)[:, -1].float().cpu())
        return torch.cat(chunks)

    def _metrics(
        self, ops: Sequence[Op], logits: torch.Tensor, base: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        out = {"kl": kl_divergence(base, logits), "entropy": entropy(logits)}
        if self.evalset.candidates:
            cand = self._candidate_ids
            correct = torch.tensor(self.evalset.correct)
            choice = candidate_choice(logits, cand)
            out["p_correct"] = answer_probability(logits, cand, correct)
            out["acc"] = (choice == correct).double()
            out["flip"] = (choice != candidate_choice(base, cand)).double()
            for k, name in enumerate(self.evalset.candidate_names):
                out[f"choose_{name}"] = (choice == k).double()
        if self.config.max_new_tokens > 0 and self.evalset.task is not None:
            texts = generate(
                self.model,
                list(self.evalset.prompts),
                self.config.max_new_tokens,
                ops=ops,
                batch_size=self.config.batch_size,
            ).texts
            result = self.evalset.task.evaluate(texts)
            out["gen_acc"] = torch.tensor(result.correct, dtype=torch.float64)
            failed = torch.zeros(len(texts), dtype=torch.float64)
            failed[list(result.failures)] = 1.0
            out["parse_fail"] = failed
        return out

    def _frame(self, cell: tuple[str, int, float, int], values: dict[str, torch.Tensor]) -> Any:
        op, layer, alpha, control = cell
        rows = []
        for metric, vals in values.items():
            for i, v in enumerate(vals.tolist()):
                rows.append((op, layer, alpha, control, i, self.evalset.subsets[i], metric, v))
        cols = ["op", "layer", "alpha", "control", "prompt", "subset", "metric", "value"]
        return pd.DataFrame(rows, columns=cols)

    def run(
        self,
        out_dir: str | Path,
        *,
        progress: bool = True,
        on_cell: Callable[[tuple[str, int, float, int]], None] | None = None,
    ) -> Results:
        """Evaluate the baseline and every cell not already in ``out_dir``; return `Results`.

        ``on_cell`` is called after each newly computed cell (for logging, or to stop a run).
        """
        out = Path(out_dir)
        cfg_path = out / "config.json"
        if cfg_path.exists():
            old = ExperimentConfig.from_json(cfg_path.read_text())
            if old != self.config:
                raise ValueError(
                    f"{out} holds results of a different experiment config; "
                    "use a new folder or delete that one"
                )
        else:
            atomic_write_text(cfg_path, self.config.to_json())
        base = self._logits(())
        frames = [self._frame(("baseline", -1, 0.0, -1), self._metrics((), base, base))]
        self.computed = 0
        cells = self.config.cells()
        for cell in tqdm(cells, desc="experiment", disable=not progress, unit="cell"):
            key = hashlib.sha256(repr(cell).encode()).hexdigest()[:20]
            path = out / "cells" / f"{key}.parquet"
            if path.exists():
                frames.append(pd.read_parquet(path))
                continue
            ops = [self.op(*cell)]
            frame = self._frame(cell, self._metrics(ops, self._logits(ops), base))
            atomic_write(path, partial(frame.to_parquet, index=False))
            self.computed += 1
            frames.append(frame)
            if on_cell is not None:
                on_cell(cell)
        results = Results(pd.concat(frames, ignore_index=True), self.config)
        results.save(out)
        return results


class Results:
    """Per-prompt values of an experiment and their tidy summary with bootstrap CIs."""

    def __init__(self, per_prompt: pd.DataFrame, config: ExperimentConfig) -> None:
        self.per_prompt = per_prompt
        self.config = config
        self.table = self._summarize()

    def _summarize(self) -> pd.DataFrame:
        rows = []
        keys = ["op", "layer", "alpha", "control"]
        # every prompt once more under "all" (prompts already in a subset named "all" are
        # there once: the default when an eval set has no subsets)
        rest = self.per_prompt[self.per_prompt["subset"] != "all"]
        df = pd.concat([self.per_prompt, rest.assign(subset="all")])
        for (op, layer, alpha, control, subset, metric), g in df.groupby(
            [*keys, "subset", "metric"], sort=True
        ):
            seed = (
                int(
                    hashlib.sha256(
                        repr((op, layer, alpha, control, subset, metric)).encode()
                    ).hexdigest()[:8],
                    16,
                )
                + self.config.seed
            )
            value, lo, hi = mean_ci(g["value"].to_numpy(), n_boot=self.config.n_boot, seed=seed)
            direction = "none" if op == "baseline" else ("fitted" if control < 0 else "random")
            rows.append(
                (op, layer, alpha, control, direction, subset, metric, value, len(g), lo, hi)
            )
        cols = [*keys, "direction", "subset", "metric", "value", "n", "ci_low", "ci_high"]
        return pd.DataFrame(rows, columns=cols)

    def save(self, out_dir: str | Path) -> None:
        out = Path(out_dir)
        atomic_write(out / "per_prompt.parquet", lambda p: self.per_prompt.to_parquet(p))
        atomic_write(out / "results.parquet", lambda p: self.table.to_parquet(p, index=False))
        atomic_write_text(out / "results.csv", self.table.to_csv(index=False))

    @classmethod
    def load(cls, out_dir: str | Path) -> Results:
        out = Path(out_dir)
        config = ExperimentConfig.from_json((out / "config.json").read_text())
        results = cls.__new__(cls)
        results.per_prompt = pd.read_parquet(out / "per_prompt.parquet")
        results.config = config
        results.table = pd.read_parquet(out / "results.parquet")
        return results
