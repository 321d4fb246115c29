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
a control is the same direction across alphas (a dose-response band). ``config.controls``
adds kinds drawn like the fitted direction (`liref_lens.controls`: ``shuffled``, the
difference in means of relabelled rows; ``covariance``, Gaussian with the activations'
within-class covariance), ``n_random`` of each, norm-matched the same way; they need the
activations the direction was fitted on (``control_activations``). Control ``c`` is of kind
``config.controls[c // n_random]``, and the results table names it in ``direction``. Prompts run in
length-sorted batches; only the last position is unembedded, and the metrics are computed
on the model's device, so one cell moves just its per-prompt values to the host. Memory:
the baseline's and one cell's last-position logits on the model's device (two
``n_prompts x vocab`` float32 tables, plus a float64 copy while a metric runs), and the
per-prompt values of all cells (n_prompts x metrics x cells floats).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ._io import atomic_write, atomic_write_text
from .cache import Activations, cache_activations
from .controls import CONTROL_KINDS, control_directions
from .generation import generate
from .interventions import (
    Add,
    Op,
    ProjectOut,
    Scale,
    check_direction_rows,
    intervene,
    layer_vector,
    paper_scale,
)
from .metrics import answer_probability, candidate_choice, entropy, kl_divergence, mean_ci
from .model import LensModel, length_batches
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
            k = widths.pop()
            if self.candidate_names and len(self.candidate_names) != k:
                raise ValueError("candidate_names must name each candidate")
            for i, (row, c) in enumerate(zip(self.candidates, self.correct, strict=True)):
                if any(not isinstance(x, str) or not x for x in row):
                    raise ValueError(
                        f"prompt {i} has an empty candidate {row!r}; every candidate needs text "
                        "whose first token is scored"
                    )
                if not isinstance(c, int) or not 0 <= c < k:
                    raise ValueError(
                        f"correct index {c!r} of prompt {i} is out of range: it has {k} "
                        f"candidates, so use 0..{k - 1}"
                    )
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
        blob = json.dumps(
            [self.prompts, self.candidates, self.correct, self.subsets, self.candidate_names]
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def candidate_ids(self, model: LensModel) -> torch.Tensor:
        """The first token of every candidate, ``[n_prompts, n_candidates]``.

        Raises if a candidate has no token, or if two candidates of a prompt share their
        first token: only that token is scored, so they could not be told apart.
        """
        tok = model.tokenizer
        ids = []
        for i, row in enumerate(self.candidates):
            first = []
            for c in row:
                got = tok(c, add_special_tokens=False)["input_ids"]
                if not got:
                    raise ValueError(f"candidate {c!r} of prompt {i} has no token; give it text")
                first.append(int(got[0]))
            for a in range(len(row)):
                for b in range(a + 1, len(row)):
                    if first[a] == first[b]:
                        shown = tok.convert_ids_to_tokens(first[a])
                        raise ValueError(
                            f"prompt {i}: candidates {row[a]!r} and {row[b]!r} share their first "
                            f"token {shown!r} (id {first[a]}); only the first token is scored, "
                            "so they cannot be told apart: use candidates whose first tokens "
                            "differ (e.g. answer letters, or a distinct leading word)"
                        )
            ids.append(first)
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
    #: kinds of control directions, ``n_random`` of each (`liref_lens.controls`)
    controls: tuple[str, ...] = ("random",)
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
        bad_kinds = [k for k in self.controls if k not in CONTROL_KINDS]
        if bad_kinds or not self.controls or len(set(self.controls)) != len(self.controls):
            raise ValueError(
                f"controls must name distinct kinds among {CONTROL_KINDS}, got {self.controls}"
            )
        bad_alphas = [a for a in self.alphas if not math.isfinite(float(a))]
        if bad_alphas:
            raise ValueError(f"alphas must be finite numbers, got {bad_alphas}")
        for name, low in (("batch_size", 1), ("n_random", 0), ("n_boot", 1), ("max_new_tokens", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.positions not in ("all", "prompt", "generated") and not self.positions.startswith(
            "span("
        ):
            parse_position(self.positions)  # raises on an unknown selector

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        data = json.loads(text)
        for key in ("layers", "alphas", "ops", "sites", "controls"):
            if key in data:  # "controls" is absent from configs written before it existed
                data[key] = tuple(data[key])
        return cls(**data)

    def cells(self) -> list[tuple[str, int, float, int]]:
        """(op, layer, alpha, control) for every cell; control -1 is the fitted direction."""
        out = []
        for op in self.ops:
            alphas = (1.0,) if op == "project_out" else self.alphas
            for layer in self.layers:
                for alpha in alphas:
                    for control in range(-1, self.n_random * len(self.controls)):
                        out.append((op, layer, float(alpha), control))
        return out

    def control_kind(self, control: int) -> str:
        """``"fitted"`` for control -1, else the kind of control ``control``.

        Example:
            >>> cfg = ExperimentConfig(layers=(1,), n_random=2, controls=("random", "shuffled"))
            >>> [cfg.control_kind(c) for c in range(-1, 4)]
            ['fitted', 'random', 'random', 'shuffled', 'shuffled']
        """
        return "fitted" if control < 0 else self.controls[control // self.n_random]


def _hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().to("cpu", torch.float64).contiguous()
            h.update(f"{tuple(t.shape)};".encode())
            h.update(t.numpy().tobytes())
        else:
            h.update(json.dumps(part, default=repr).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


def _direction_label(directions: Any) -> str:
    """Method and a hash of the vector bytes (and layers) of a direction set or tensor."""
    if isinstance(directions, torch.Tensor):
        return "tensor:" + _hash(directions)
    vectors = getattr(directions, "vectors", None)
    content = (
        _hash(vectors, list(getattr(directions, "layers", ()))) if vectors is not None else "?"
    )
    return f"{getattr(directions, 'method', '?')}:{content}"


def _rule_identity(rule: Any) -> str:
    """A rule's full content: a dataclass selector's repr holds its fields (e.g. span ranges)."""
    if isinstance(rule, str):
        return rule
    return repr(rule) if dataclasses.is_dataclass(rule) else str(rule)


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
        engine: Any = None,
        control_activations: tuple[Activations, Activations] | None = None,
    ) -> None:
        """``rule``: a position selector object (e.g. a `span`) used instead of
        ``config.positions``, whose text then records it. ``allow_transfer``: accept a
        direction set fitted on another model of the same shape (e.g. base -> instruct).
        ``engine``: generate for ``gen_acc``/``parse_fail`` with this engine instead of
        `generate` (e.g. a `liref_lens.backends.vllm.VLLMEngine` on the same checkpoint: the
        baseline and every cell still to compute in one batch); it is part of the identity.
        ``control_activations``: the ``(pos, neg)`` activations the direction was fitted on,
        needed by the ``shuffled`` and ``covariance`` controls (`liref_lens.controls`)."""
        self._position_rule = rule
        self.engine = engine
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
        check_direction_rows(directions, model)
        self._random: dict[int, torch.Tensor] = {}
        self._norms: dict[int, float] | None = None
        if engine is not None and (evalset.task is None or self.config.max_new_tokens == 0):
            raise ValueError(
                "engine= only generates for gen_acc/parse_fail: give an eval set made by "
                "EvalSet.from_task and max_new_tokens > 0, or leave engine out"
            )
        if engine is not None:
            engine.check_matches(model, evalset.prompts[0])
        self._drawn = self._draw_controls(control_activations)
        self.identity = self._identity()  # also raises early on a layer without a vector

    def _identity(self) -> dict[str, str]:
        """Every input that decides a cell's numbers, by content (saved as ``inputs.json``)."""
        ev, cfg = self.evalset, self.config
        # the fingerprint is independent of dtype, device and attention path; the numbers
        # are not (bfloat16 greedy tokens differ between fused and eager attention)
        out = {
            "model": self.model.fingerprint,
            "model dtype": str(self.model.dtype),
            "device": self.model.device.type,
            "attention": self.model.attention_path,
        }
        for layer in cfg.layers:
            out[f"direction for layer {layer}"] = _hash(layer_vector(self.directions, layer, None))
        for kind, vectors in self._drawn.items():
            for layer in cfg.layers:
                out[f"{kind} controls for layer {layer}"] = _hash(vectors[layer])
        out["positions"] = _hash(_rule_identity(self._rule()))
        out["prompts"] = _hash(list(ev.prompts))
        out["prompt tokens"] = _hash(self._prompt_ids)
        out["subsets"] = _hash(list(ev.subsets))
        if ev.candidates:
            out["candidates"] = _hash(
                [list(c) for c in ev.candidates], list(ev.correct), list(ev.candidate_names)
            )
            out["candidate tokens"] = _hash(self._candidate_ids.tolist())
        if self.engine is not None:
            # only with an engine, so folders written without one keep their identity
            out["generation engine"] = _hash(self.engine.identity, self.engine.fingerprint)
        if ev.task is not None and cfg.max_new_tokens > 0:
            task = ev.task
            out["task"] = _hash(
                getattr(task, "name", ""),
                repr(getattr(task, "items", task)),
                repr(getattr(task, "stop", None)),
            )
        return out

    # ----- directions ----------------------------------------------------------------------
    def _draw_controls(
        self, acts: tuple[Activations, Activations] | None
    ) -> dict[str, dict[int, torch.Tensor]]:
        """The ``shuffled`` / ``covariance`` control vectors (unit, per layer) of the config."""
        kinds = [k for k in self.config.controls if k != "random"]
        if not kinds or self.config.n_random == 0:
            return {}
        if acts is None:
            raise ValueError(
                f"controls {kinds} are drawn from the activations the direction was fitted on; "
                "pass control_activations=(pos, neg)"
            )
        pos, neg = acts
        fps = {a.model_fingerprint for a in acts} - {""}
        if fps - {self.model.fingerprint}:
            raise ValueError(
                f"control_activations come from model {sorted(fps)}, not this model "
                f"({self.model.fingerprint}); pass the activations of this model"
            )
        site = getattr(self.directions, "site", "") or self.config.sites[0]
        layers, n = list(self.config.layers), self.config.n_random
        return {
            k: control_directions(k, pos, neg, layers, n, seed=self.config.seed, site=site)
            for k in kinds
        }

    def _fitted(self, layer: int) -> torch.Tensor:
        return layer_vector(self.directions, layer, None).detach().float().cpu()

    def vector(self, layer: int, control: int) -> torch.Tensor:
        """The vector of ``control`` at ``layer`` (-1: the fitted direction); controls are
        rescaled to the fitted direction's norm at that layer."""
        fitted = self._fitted(layer)
        if control < 0:
            return fitted
        kind, index = self.config.control_kind(control), control % self.config.n_random
        if kind != "random":
            unit = self._drawn[kind][layer][index]
            return (unit * fitted.double().norm()).float()
        control = index
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
        """Last-position logits ``[n_prompts, vocab]`` (float32, on the model's device), run
        in length-sorted batches and returned in prompt order."""
        ids = self._prompt_ids
        out: torch.Tensor | None = None
        with torch.no_grad():
            for rows in length_batches(ids, self.config.batch_size):
                batch = self.model.pad([ids[i] for i in rows])
                with intervene(self.model, *ops) if ops else nullcontext():
                    logits = self.model.forward(batch, row_ids=rows, last_only=True)[:, -1]
                if out is None:
                    out = logits.new_empty((len(ids), logits.shape[-1]), dtype=torch.float32)
                out[torch.tensor(rows, device=out.device)] = logits.float()
        assert out is not None  # an EvalSet has at least one prompt
        return out

    def _finite(self, logits: torch.Tensor, cell: tuple[str, int, float, int]) -> torch.Tensor:
        """``logits``, or one line saying which cell overflowed and what to change."""
        bad = ~torch.isfinite(logits).all(dim=-1)
        if not bool(bad.any()):
            return logits
        dtype = self.model.dtype_name
        where = f"prompt {int(bad.nonzero()[0, 0])} of {len(logits)}"
        half = dtype in ("float16", "bfloat16")
        op, layer, alpha, control = cell
        if op == "baseline":
            fix = "load the model in float32" if half else "its weights are broken"
            raise ValueError(
                f"the unsteered model's logits contain NaN or inf ({where}, model dtype "
                f"{dtype}); {fix}"
            )
        which = "the fitted direction" if control < 0 else f"random control {control}"
        fix = "use a smaller |alpha|" + (" or load the model in float32" if half else "")
        raise ValueError(
            f"{op} at layer {layer} with alpha {alpha:g} ({which}) made the logits NaN or inf "
            f"({where}, model dtype {dtype}): the edit pushed the residual stream past the "
            f"range of the numbers; {fix}"
        )

    def _metrics(
        self,
        ops: Sequence[Op],
        logits: torch.Tensor,
        base: torch.Tensor,
        texts: list[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        out = {"kl": kl_divergence(base, logits), "entropy": entropy(logits)}
        if self.evalset.candidates:
            cand = self._candidate_ids.to(logits.device)
            correct = torch.tensor(self.evalset.correct, device=logits.device)
            choice = candidate_choice(logits, cand)
            out["p_correct"] = answer_probability(logits, cand, correct)
            out["acc"] = (choice == correct).double()
            out["flip"] = (choice != candidate_choice(base, cand)).double()
            for k, name in enumerate(self.evalset.candidate_names):
                out[f"choose_{name}"] = (choice == k).double()
        if self.config.max_new_tokens > 0 and self.evalset.task is not None:
            if texts is None:
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

    def _engine_texts(self, todo: list[tuple[str, int, float, int]]) -> dict[Any, list[str]]:
        """With an engine: the baseline's (key None) and each cell's generated texts, all in
        one engine batch; without one: nothing (each cell calls `generate`)."""
        if self.engine is None:
            return {}
        gens = self.engine.sweep(
            self._prompt_ids,
            [(), *([self.op(*cell)] for cell in todo)],
            self.config.max_new_tokens,
        )
        return dict(zip([None, *todo], (g.texts for g in gens), strict=True))

    def _frame(self, cell: tuple[str, int, float, int], values: dict[str, torch.Tensor]) -> Any:
        op, layer, alpha, control = cell
        rows = []
        for metric, vals in values.items():
            for i, v in enumerate(vals.tolist()):
                rows.append((op, layer, alpha, control, i, self.evalset.subsets[i], metric, v))
        cols = ["op", "layer", "alpha", "control", "prompt", "subset", "metric", "value"]
        return pd.DataFrame(rows, columns=cols)

    def _check_folder(self, out: Path, overwrite: bool) -> None:
        """Prepare ``out``: refuse results of another experiment, or clear them (overwrite)."""
        cfg_path, ids_path, cells = out / "config.json", out / "inputs.json", out / "cells"
        if overwrite:
            for name in ("config.json", "inputs.json", *_RESULT_FILES):
                (out / name).unlink(missing_ok=True)
            for cell in cells.glob("*.parquet") if cells.is_dir() else ():
                cell.unlink()
        fix = "use a new folder or pass overwrite=True to recompute it"
        if cfg_path.exists():
            if not ids_path.exists():
                raise ValueError(
                    f"{out} records no input identity (written by an older liref_lens, which "
                    f"named directions and spans only by label); its cells cannot be trusted: {fix}"
                )
            changes = _changes(
                json.loads(ids_path.read_text()),
                self.identity,
                ExperimentConfig.from_json(cfg_path.read_text()),
                self.config,
            )
            if changes:
                raise ValueError(
                    f"{out} holds results of a different experiment: {'; '.join(changes)}; {fix}"
                )
            return
        if cells.is_dir() and any(cells.glob("*.parquet")):
            raise ValueError(f"{out}/cells holds cells of an unknown experiment; {fix}")
        atomic_write_text(ids_path, json.dumps(self.identity, indent=2, sort_keys=True))
        atomic_write_text(cfg_path, self.config.to_json())

    def run(
        self,
        out_dir: str | Path,
        *,
        progress: bool = True,
        on_cell: Callable[[tuple[str, int, float, int]], None] | None = None,
        overwrite: bool = False,
    ) -> Results:
        """Evaluate the baseline and every cell not already in ``out_dir``; return `Results`.

        A folder holding an experiment that differs in any input (the model, a layer's
        direction vector, positions and span ranges, prompts, candidates, tokenization, the
        task, or a config field) is refused with a message naming what changed; with
        ``overwrite=True`` its results are deleted and everything is recomputed.
        ``on_cell`` is called after each newly computed cell (for logging, or to stop a run).
        """
        out = Path(out_dir)
        self.identity = self._identity()  # the model's settings may have changed since __init__
        self._check_folder(out, overwrite)
        cells = self.config.cells()
        texts = self._engine_texts([c for c in cells if not _cell_path(out, c).exists()])
        base = self._finite(self._logits(()), ("baseline", -1, 0.0, -1))
        frames = [
            self._frame(("baseline", -1, 0.0, -1), self._metrics((), base, base, texts.get(None)))
        ]
        self.computed = 0
        for cell in tqdm(cells, desc="experiment", disable=not progress, unit="cell"):
            path = _cell_path(out, cell)
            if path.exists():
                frames.append(pd.read_parquet(path))
                continue
            ops = [self.op(*cell)]
            logits = self._finite(self._logits(ops), cell)
            frame = self._frame(cell, self._metrics(ops, logits, base, texts.pop(cell, None)))
            atomic_write(path, partial(frame.to_parquet, index=False))
            self.computed += 1
            frames.append(frame)
            if on_cell is not None:
                on_cell(cell)
        results = Results(pd.concat(frames, ignore_index=True), self.config)
        results.save(out)
        return results


def _cell_path(out: Path, cell: tuple[str, int, float, int]) -> Path:
    return out / "cells" / f"{hashlib.sha256(repr(cell).encode()).hexdigest()[:20]}.parquet"


_RESULT_FILES = ("per_prompt.parquet", "results.parquet", "results.csv")
# config fields derived from the inputs, which inputs.json identifies by content
_DERIVED = ("model_name", "model_fingerprint", "directions", "evalset")


def _changes(
    old_ids: dict[str, str],
    new_ids: dict[str, str],
    old_cfg: ExperimentConfig,
    new_cfg: ExperimentConfig,
) -> list[str]:
    """What differs between a saved experiment and this one, in words."""
    out = []
    for key in [*new_ids, *(k for k in old_ids if k not in new_ids)]:
        a, b = old_ids.get(key, "none"), new_ids.get(key, "none")
        if a != b:
            if key in ("model dtype", "device", "attention"):
                out.append(f"the {key} changed ({a} -> {b})")
                continue
            what = {"model": "fingerprint"}.get(
                key, "vector hash" if "direction" in key else "hash"
            )
            out.append(f"the {key} changed ({what} {a[:8]} -> {b[:8]})")
    old_d, new_d = json.loads(old_cfg.to_json()), json.loads(new_cfg.to_json())
    defaults = json.loads(ExperimentConfig(layers=(0,)).to_json())  # for fields added later
    for name in new_d:
        if name not in _DERIVED and old_d.get(name, defaults.get(name)) != new_d[name]:
            out.append(f"config field {name!r} changed ({old_d.get(name)} -> {new_d[name]})")
    return out


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
            direction = "none" if op == "baseline" else self.config.control_kind(control)
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
