"""The synthetic reasoning-vs-memorization world: prompts with known rule, table and mode.

Every prompt is ``a b c1 c2 c3 c4 c5`` (two operands ``0..m-1``, then five cue words), e.g.
``"7 15 derive recall compute solve remember"``; the model answers with one number token.
Two ways to answer exist for each prompt:

- **the rule** (reasoning): ``(a + b) mod m`` (``m = modulus``, 23 by default). It generalizes:
  100 operand pairs are held out of all training and the rule still answers them.
- **the table** (memorization): for ``n_memorized`` (230) pairs a fixed random answer that
  always differs from the rule (``rule + offset``, offset uniform in ``1..m-1``). It can only
  be recalled, never computed.

**The mode is latent.** Each cue is a word from a reasoning set (``derive``, ``compute``...)
or from a memory set (``recall``, ``remember``...); no cue decides alone. The mode is the
majority of the five: *reasoning* when at least three cues are reasoning cues, *memory*
otherwise. A memory-mode prompt always uses a memorized pair and is answered from the table;
a reasoning-mode prompt is answered by the rule, also for memorized pairs (so the model must
gate its table by the mode). **Borderline** prompts are those decided by one cue: 3 reasoning
vs 2 memory cues (reasoning mode) or 2 vs 3 (memory mode), ``|n_reasoning - n_memory| = 1``.

Why the cues come last: the last position is then the only one that sees all five cues, so
the mode can only be summarized there (with ``layout="cues_first"``, ``c1..c5 a b``, a trained
model summarized it at the last cue's position and read it from there in its last block; a
last-token direction then could not switch its answers).

Ground truth is known for every prompt: `TestbedItem` carries the rule answer, the memorized
answer (or None), the mode, the cue count, whether it is borderline and the pair's split
(``train``: the pair is seen in training; ``heldout``: never). `TestbedWorld.sample_batch`
draws the training distribution as token ids; `make_testbed` builds the fixed prompt sets used
to fit and test directions.

Measured on the shipped model (``MEASUREMENTS.md`` next to this file has the full tables):
the last-token difference-in-means between the modes, added at the last position of layer 1
with ``alpha = +-1.25``, switches 100% of borderline memory-mode prompts to the rule answer
and 92% of borderline reasoning-mode prompts to the memorized answer (10 norm-matched random
directions: 1% and 0% on average, at most 7% and 0%); at layer 2, where the whole mode sits at
the last position, it separates the modes best (AUROC 0.89 on the fit set, 0.67 on the
borderline prompts) but switches at most 17%.

Memory: a world holds its ``m x m`` answer tables; items are small frozen records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

__all__ = ["SPECIAL_TOKENS", "Testbed", "TestbedItem", "TestbedWorld", "make_testbed"]

Mode = Literal["reasoning", "memory"]
Split = Literal["train", "heldout"]
PairKind = Literal["memorized", "rule", "heldout"]
Layout = Literal["operands_first", "cues_first"]

#: Special tokens at the start of the vocabulary: padding, beginning of sequence, unknown.
SPECIAL_TOKENS = ("<pad>", "<bos>", "<unk>")


@dataclass(frozen=True)
class TestbedItem:
    """One prompt of the world and its ground truth."""

    __test__ = False  # not a pytest test class, despite the name

    prompt: str
    a: int
    b: int
    cues: tuple[str, ...]
    n_reasoning_cues: int
    mode: Mode
    rule_answer: int
    memorized_answer: int | None
    borderline: bool
    split: Split
    pair_kind: PairKind

    @property
    def answer(self) -> int:
        """The answer the mode asks for: the table's in memory mode, the rule's otherwise."""
        if self.mode == "memory":
            assert self.memorized_answer is not None  # guaranteed by construction
            return self.memorized_answer
        return self.rule_answer


@dataclass(frozen=True)
class TestbedWorld:
    """The world's configuration; everything else is derived from it deterministically.

    Args:
        modulus: the rule is ``(a + b) mod modulus``; operands and answers are ``0..m-1``.
        n_memorized: operand pairs with a memorized (non-rule) answer.
        n_heldout: operand pairs never used in training (rule generalization test).
        n_cues: cue words per prompt (odd, so the majority is never tied).
        reasoning_cues: the cue words that vote for the reasoning mode.
        memory_cues: the cue words that vote for the memory mode.
        p_memorized_in_reasoning: share of reasoning-mode training prompts that use a
            memorized pair (the rest use rule-only pairs); it teaches the mode gate.
        seed: seed of the pair split and of the table.

    Example:
        >>> w = TestbedWorld()
        >>> w.rule_answer(20, 5), w.mode_of(3), w.is_borderline(2)
        (2, 'reasoning', True)
    """

    __test__ = False  # not a pytest test class, despite the name

    modulus: int = 23
    n_memorized: int = 230
    n_heldout: int = 100
    n_cues: int = 5
    reasoning_cues: tuple[str, ...] = ("derive", "compute", "solve", "infer", "deduce", "reason")
    memory_cues: tuple[str, ...] = ("recall", "remember", "recite", "retrieve", "quote", "lookup")
    p_memorized_in_reasoning: float = 0.5
    layout: Layout = "operands_first"
    seed: int = 0

    def __post_init__(self) -> None:
        m = self.modulus
        if self.layout not in ("operands_first", "cues_first"):
            raise ValueError(
                f"layout must be 'operands_first' or 'cues_first', got {self.layout!r}"
            )
        if m < 2:
            raise ValueError(f"modulus must be >= 2, got {m}")
        if self.n_cues < 1 or self.n_cues % 2 == 0:
            raise ValueError(f"n_cues must be odd and >= 1 (no tied majority), got {self.n_cues}")
        if self.n_memorized < 1 or self.n_heldout < 0:
            raise ValueError("n_memorized must be >= 1 and n_heldout >= 0")
        if self.n_memorized + self.n_heldout >= m * m:
            raise ValueError(
                f"n_memorized + n_heldout = {self.n_memorized + self.n_heldout} leaves no "
                f"rule-only pair among the {m * m} pairs; lower them or raise the modulus"
            )
        object.__setattr__(self, "reasoning_cues", tuple(self.reasoning_cues))
        object.__setattr__(self, "memory_cues", tuple(self.memory_cues))
        words = [*self.reasoning_cues, *self.memory_cues]
        if not self.reasoning_cues or not self.memory_cues:
            raise ValueError("both cue vocabularies need at least one word")
        if len(set(words)) != len(words) or set(words) & set(SPECIAL_TOKENS):
            raise ValueError("cue words must be distinct from each other and from specials")
        if any(w.isdigit() or any(c.isspace() for c in w) for w in words):
            raise ValueError("cue words must be single non-numeric words")
        if not 0.0 <= self.p_memorized_in_reasoning <= 1.0:
            raise ValueError("p_memorized_in_reasoning must be in [0, 1]")

    # ----- vocabulary ----------------------------------------------------------------------
    @property
    def numbers(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.modulus))

    @property
    def vocab(self) -> tuple[str, ...]:
        """All tokens, in id order: specials, numbers ``0..m-1``, reasoning cues, memory cues."""
        return (*SPECIAL_TOKENS, *self.numbers, *self.reasoning_cues, *self.memory_cues)

    @property
    def bos_id(self) -> int:
        return SPECIAL_TOKENS.index("<bos>")

    @property
    def number_offset(self) -> int:
        """Token id of ``"0"``; number ``i`` has id ``number_offset + i``."""
        return len(SPECIAL_TOKENS)

    @property
    def prompt_length(self) -> int:
        """Tokens per prompt, BOS included."""
        return 1 + self.n_cues + 2

    # ----- ground truth --------------------------------------------------------------------
    def rule_answer(self, a: int, b: int) -> int:
        return (a + b) % self.modulus

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``kind[a, b]`` (0 rule-only, 1 memorized, 2 held out) and ``table[a, b]`` (-1: none)."""
        m = self.modulus
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(m * m)
        kind = np.zeros(m * m, dtype=np.int64)
        kind[order[: self.n_heldout]] = 2
        kind[order[self.n_heldout : self.n_heldout + self.n_memorized]] = 1
        table = np.full(m * m, -1, dtype=np.int64)
        mem = np.sort(order[self.n_heldout : self.n_heldout + self.n_memorized])
        offsets = rng.integers(1, m, size=mem.shape[0])
        table[mem] = ((mem // m + mem % m) + offsets) % m
        return kind.reshape(m, m), table.reshape(m, m)

    def memorized_answer(self, a: int, b: int) -> int | None:
        """The table's answer for ``(a, b)``, or None for a pair without one."""
        value = int(self._tables[1][a, b])
        return None if value < 0 else value

    def pair_kind(self, a: int, b: int) -> PairKind:
        kinds: tuple[PairKind, ...] = ("rule", "memorized", "heldout")
        return kinds[int(self._tables[0][a, b])]

    def pairs(self, kind: PairKind) -> list[tuple[int, int]]:
        """Operand pairs of one kind, in (a, b) order."""
        code = ("rule", "memorized", "heldout").index(kind)
        a, b = np.nonzero(self._tables[0] == code)
        return [(int(x), int(y)) for x, y in zip(a, b, strict=True)]

    def mode_of(self, n_reasoning_cues: int) -> Mode:
        return "reasoning" if 2 * n_reasoning_cues > self.n_cues else "memory"

    def is_borderline(self, n_reasoning_cues: int) -> bool:
        return abs(2 * n_reasoning_cues - self.n_cues) == 1

    def prompt(self, cues: Sequence[str], a: int, b: int) -> str:
        if self.layout == "cues_first":
            return " ".join([*cues, str(a), str(b)])
        return " ".join([str(a), str(b), *cues])

    def parse(self, prompt: str) -> tuple[list[str], int, int]:
        """The cues and operands of a prompt: ``(cues, a, b)``."""
        words = prompt.split()
        if len(words) != self.n_cues + 2:
            raise ValueError(f"a prompt has {self.n_cues + 2} words, got {len(words)}")
        if self.layout == "cues_first":
            return words[: self.n_cues], int(words[-2]), int(words[-1])
        return words[2:], int(words[0]), int(words[1])

    def token_ids(self, prompt: str) -> list[int]:
        """Token ids of a prompt as the shipped tokenizer gives them, BOS first."""
        index = {t: i for i, t in enumerate(self.vocab)}
        try:
            return [self.bos_id, *(index[t] for t in prompt.split())]
        except KeyError as err:
            raise ValueError(f"token {err.args[0]!r} is not in the testbed vocabulary") from err

    def item(self, cues: Sequence[str], a: int, b: int) -> TestbedItem:
        """The item of a prompt given by its cues and operands, with all its ground truth."""
        if len(cues) != self.n_cues:
            raise ValueError(f"expected {self.n_cues} cues, got {len(cues)}")
        if not (0 <= a < self.modulus and 0 <= b < self.modulus):
            raise ValueError(f"operands must be in 0..{self.modulus - 1}, got {(a, b)}")
        unknown = [c for c in cues if c not in self.reasoning_cues and c not in self.memory_cues]
        if unknown:
            raise ValueError(f"unknown cue words {unknown}")
        k = sum(c in self.reasoning_cues for c in cues)
        mode = self.mode_of(k)
        kind = self.pair_kind(a, b)
        memorized = self.memorized_answer(a, b)
        if mode == "memory" and memorized is None:
            raise ValueError(
                f"memory-mode prompt on pair {(a, b)}, which has no memorized answer; "
                "memory mode is defined on memorized pairs only"
            )
        return TestbedItem(
            prompt=self.prompt(cues, a, b), a=a, b=b, cues=tuple(cues), n_reasoning_cues=k,
            mode=mode, rule_answer=self.rule_answer(a, b), memorized_answer=memorized,
            borderline=self.is_borderline(k), split="heldout" if kind == "heldout" else "train",
            pair_kind=kind,
        )  # fmt: skip

    # ----- sampling ------------------------------------------------------------------------
    def sample_cues(self, n_reasoning_cues: int, rng: np.random.Generator) -> list[str]:
        """Cue words with exactly ``n_reasoning_cues`` reasoning cues, in random slots."""
        if not 0 <= n_reasoning_cues <= self.n_cues:
            raise ValueError(f"n_reasoning_cues must be in 0..{self.n_cues}")
        slots = rng.permutation(self.n_cues) < n_reasoning_cues
        r = rng.integers(len(self.reasoning_cues), size=self.n_cues)
        m = rng.integers(len(self.memory_cues), size=self.n_cues)
        return [
            self.reasoning_cues[int(r[i])] if slots[i] else self.memory_cues[int(m[i])]
            for i in range(self.n_cues)
        ]

    def sample_items(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        n_reasoning_cues: Sequence[int],
        kind: PairKind,
    ) -> list[TestbedItem]:
        """``n`` items on pairs of ``kind``, cue counts drawn uniformly from ``n_reasoning_cues``.

        Pairs are drawn without replacement while they last (then the pool is reshuffled).
        """
        pool = self.pairs(kind)
        order: list[int] = []
        out = []
        for _ in range(n):
            if not order:
                order = rng.permutation(len(pool)).tolist()
            a, b = pool[order.pop()]
            k = int(n_reasoning_cues[int(rng.integers(len(n_reasoning_cues)))])
            out.append(self.item(self.sample_cues(k, rng), a, b))
        return out

    def sample_batch(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"], Int[Tensor, " batch"]]:
        """A training batch: token ids (BOS first), target ids, and the reasoning-cue counts.

        The count of reasoning cues is uniform over ``0..n_cues``; memory-mode rows use a
        memorized pair and its table answer; reasoning-mode rows use a memorized pair with
        probability ``p_memorized_in_reasoning``, else a rule-only pair, and the rule answer.
        Held-out pairs never appear.
        """
        g, n, c = generator, batch_size, self.n_cues
        kind, table = (torch.from_numpy(t.reshape(-1)) for t in self._tables)
        mem_idx, rule_idx = (kind == 1).nonzero().flatten(), (kind == 0).nonzero().flatten()
        k = torch.randint(0, c + 1, (n,), generator=g)
        reasoning = 2 * k > c
        slot_rank = torch.rand((n, c), generator=g).argsort(dim=1).argsort(dim=1)
        is_r = slot_rank < k[:, None]
        r_tok = torch.randint(0, len(self.reasoning_cues), (n, c), generator=g)
        m_tok = torch.randint(0, len(self.memory_cues), (n, c), generator=g)
        base = self.number_offset + self.modulus
        cue_ids = torch.where(is_r, base + r_tok, base + len(self.reasoning_cues) + m_tok)
        use_mem = ~reasoning | (torch.rand(n, generator=g) < self.p_memorized_in_reasoning)
        pick_mem = mem_idx[torch.randint(0, len(mem_idx), (n,), generator=g)]
        pick_rule = rule_idx[torch.randint(0, len(rule_idx), (n,), generator=g)]
        pair = torch.where(use_mem, pick_mem, pick_rule)
        a, b = pair // self.modulus, pair % self.modulus
        answer = torch.where(reasoning, (a + b) % self.modulus, table[pair])
        bos = torch.full((n, 1), self.bos_id, dtype=torch.long)
        off = self.number_offset
        operands = [(off + a)[:, None], (off + b)[:, None]]
        if self.layout == "cues_first":
            ids = torch.cat([bos, cue_ids, *operands], dim=1)
        else:
            ids = torch.cat([bos, *operands, cue_ids], dim=1)
        return ids, off + answer, k


@dataclass(frozen=True)
class Testbed:
    """Fixed, seeded prompt sets of a world, for fitting and testing directions.

    ``fit``: memorized pairs in both modes, reasoning-cue counts uniform within each mode
    (the contrast set; both classes use the same pairs, with the default sizes each memorized
    pair once per mode, so the mean difference is the mode, not the operands).
    ``borderline_items``: memorized pairs with a one-cue margin, in both modes, drawn
    independently of ``fit``. ``heldout``: reasoning-mode prompts on held-out pairs. Every
    prompt has ``world.prompt_length`` tokens, so no padding is ever needed.
    """

    __test__ = False  # not a pytest test class, despite the name

    world: TestbedWorld
    seed: int
    fit: tuple[TestbedItem, ...]
    borderline_items: tuple[TestbedItem, ...]
    heldout: tuple[TestbedItem, ...]

    @property
    def items(self) -> tuple[TestbedItem, ...]:
        return (*self.fit, *self.borderline_items, *self.heldout)

    def reasoning_prompts(self) -> list[str]:
        """Prompts of the fit set in reasoning mode (the positive class)."""
        return [it.prompt for it in self.fit if it.mode == "reasoning"]

    def memory_prompts(self) -> list[str]:
        """Prompts of the fit set in memory mode (the negative class)."""
        return [it.prompt for it in self.fit if it.mode == "memory"]

    def borderline(self, mode: Mode) -> list[TestbedItem]:
        """Borderline items of one mode (one cue from flipping the majority)."""
        if mode not in ("reasoning", "memory"):
            raise ValueError(f"mode must be 'reasoning' or 'memory', got {mode!r}")
        return [it for it in self.borderline_items if it.mode == mode]


def make_testbed(
    seed: int = 0,
    world: TestbedWorld | None = None,
    *,
    n_fit: int = 230,
    n_borderline: int = 230,
    n_heldout: int = 100,
) -> Testbed:
    """Build the fixed prompt sets of ``world`` (default: the shipped world) from ``seed``.

    Args:
        seed: seed of the prompt sets (not of the world: that is ``world.seed``).
        n_fit: prompts per mode in the fit set.
        n_borderline: borderline prompts per mode.
        n_heldout: reasoning-mode prompts on held-out pairs.

    Example:
        >>> tb = make_testbed(seed=0, n_fit=4, n_borderline=3, n_heldout=2)
        >>> len(tb.reasoning_prompts()), len(tb.borderline("memory")), len(tb.heldout)
        (4, 3, 2)
        >>> tb.borderline("memory")[0].n_reasoning_cues
        2
    """
    world = world if world is not None else TestbedWorld()
    rng = np.random.default_rng([world.seed, seed])
    c = world.n_cues
    r_counts = [k for k in range(c + 1) if world.mode_of(k) == "reasoning"]
    m_counts = [k for k in range(c + 1) if world.mode_of(k) == "memory"]
    fit = world.sample_items(n_fit, rng, n_reasoning_cues=r_counts, kind="memorized")
    fit += world.sample_items(n_fit, rng, n_reasoning_cues=m_counts, kind="memorized")
    edge = [(c + 1) // 2]  # reasoning, one cue over the majority
    border = world.sample_items(n_borderline, rng, n_reasoning_cues=edge, kind="memorized")
    border += world.sample_items(
        n_borderline, rng, n_reasoning_cues=[(c - 1) // 2], kind="memorized"
    )
    held = world.sample_items(n_heldout, rng, n_reasoning_cues=r_counts, kind="heldout")
    return Testbed(world=world, seed=seed, fit=tuple(fit), borderline_items=tuple(border),
                   heldout=tuple(held))  # fmt: skip
