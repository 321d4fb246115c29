"""The offline testbed: a synthetic reasoning-vs-memorization world and a small model on it.

- `world`: `TestbedWorld` (the rule ``(a + b) mod 23``, a table of 230 memorized exceptions,
  100 held-out pairs, five cue words whose majority picks the mode) and `make_testbed`, the
  fixed prompt sets with their ground truth (fit set, borderline prompts, held-out prompts).
- `train`: `train_testbed`, the seeded CPU training of a 3-layer GPT-2-style model
  (d_model 128, 0.4 M parameters, about 4.5 minutes on one core), and `shipped_checkpoint`,
  the model trained by it with seed 0 and shipped in the package (1.6 MB, with its
  ``training.json`` and ``training_log.csv``). Retrain with ``python -m liref_lens.testbed DIR``.
- `measure`: `switch_rate`, the behavioural readout (share of borderline answers that move
  from the memorized to the rule answer, or back, under an intervention).

What the shipped model shows (``MEASUREMENTS.md`` has every layer, alpha and control): the
last-token difference-in-means between reasoning- and memory-mode prompts, added at the last
position of layer 1 with alpha +-1.25, switches 100% / 92% of borderline answers (10
norm-matched random directions: 1% / 0% on average); at layer 2, where the mode separates best
and patching the last position alone switches 100%, the same kind of direction switches at
most 17%: separation is not mediation.

Example:
    >>> from liref_lens import load_model
    >>> tb = make_testbed(seed=0)
    >>> model = load_model(str(shipped_checkpoint()), device="cpu")
    >>> item = tb.borderline("memory")[0]
    >>> item.mode, item.n_reasoning_cues, item.memorized_answer != item.rule_answer
    ('memory', 2, True)
    >>> logits = model.forward(model.tokenize([item.prompt]))[0, -1]
    >>> model.tokenizer.decode([int(logits.argmax())]) == str(item.memorized_answer)
    True
"""

from .measure import SwitchRate, answers, neuron_shift_vs_random, switch_rate
from .recall import (
    RECALL_CONFIG,
    RecallItem,
    RecallWorld,
    measure_truncation,
    recall_scores,
    train_recall,
)
from .train import TrainConfig, shipped_checkpoint, train_testbed
from .world import Testbed, TestbedItem, TestbedWorld, make_testbed

__all__ = [
    "RECALL_CONFIG",
    "RecallItem",
    "RecallWorld",
    "SwitchRate",
    "Testbed",
    "TestbedItem",
    "TestbedWorld",
    "TrainConfig",
    "answers",
    "make_testbed",
    "measure_truncation",
    "neuron_shift_vs_random",
    "recall_scores",
    "shipped_checkpoint",
    "switch_rate",
    "train_recall",
    "train_testbed",
]
