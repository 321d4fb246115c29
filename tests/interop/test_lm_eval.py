"""lm-evaluation-harness (the real CLI): ``lm_eval --model steered`` with a file of `to_lm_eval`
scores the same log-likelihoods as this toolkit's own steered forward pass.

The run is offline: two local tasks built from the samples shipped in ``liref_lens/tasks/data``
(GSM8K: the log-likelihood of the final answer; MMLU-Pro: multiple choice over its ten
options), SmolLM2 de-quantized to float32 as the checkpoint folder, an `Add` at ``resid_pre``
12 (hookpoint ``layers.11``, action ``add``) and a `ProjectOut` at ``resid_pre`` 20
(``layers.19``, action ``clamp`` to 0). Every request lm-eval logged (context, continuation,
log-likelihood) is recomputed here with the same tokens (the checkpoint's own tokenizer, as
lm-eval loads it): they agree to 5e-4 on sums of up to ~200 nats (float32), and differ from the
unsteered model's by far more (measured: steered max |diff| 6.1e-05; unsteered 138).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

import liref_lens
from liref_lens import Add, ProjectOut, intervene
from liref_lens.export import to_lm_eval

DATA = Path(liref_lens.__file__).parent / "tasks" / "data"
TASKS = {
    "liref_gsm8k_sample": f"""task: liref_gsm8k_sample
dataset_path: json
dataset_kwargs:
  data_files:
    test: {DATA / "gsm8k_test_sample.jsonl"}
test_split: test
output_type: loglikelihood
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: " {{{{answer.split('####')[-1].strip()}}}}"
metric_list:
  - metric: acc
""",
    "liref_mmlu_pro_sample": f"""task: liref_mmlu_pro_sample
dataset_path: json
dataset_kwargs:
  data_files:
    test: {DATA / "mmlu_pro_sample.json"}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: options
doc_to_target: answer_index
metric_list:
  - metric: acc
""",
}


def _requests(out: Path) -> list[tuple[str, str, float]]:
    """(context, continuation, log-likelihood) of every request in lm-eval's sample logs."""
    rows = []
    for path in sorted(out.rglob("samples_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            sample = json.loads(line)
            args = sample["arguments"]
            for key in sorted(args, key=lambda k: int(k.rsplit("_", 1)[1])):
                resp = sample["resps"][int(key.rsplit("_", 1)[1])][0]
                rows.append((args[key]["arg_0"], args[key]["arg_1"], float(resp[0])))
    return rows


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The tokens lm-eval scores: trailing spaces of the context move to the continuation, the
    whole text is encoded and split after the context's tokens (lm-eval 0.4.13)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx) :]


def _loglikelihood(lm, ctx: list[int], cont: list[int]) -> float:
    with torch.no_grad():
        logits = lm.forward(lm.pad([ctx + cont]))[0]
    logp = torch.log_softmax(logits.float(), -1)[len(ctx) - 1 : -1]
    return float(logp.gather(1, torch.tensor(cont)[:, None]).sum())


def test_lm_eval_steered_equals_our_steered_loglikelihoods(
    smollm2, smollm2_dir: str, smollm2_directions, tmp_path: Path
) -> None:
    ds = smollm2_directions
    ops = [Add(layers=[12], direction=ds, alpha=4.0), ProjectOut(layers=[20], direction=ds)]
    steer = to_lm_eval(ops[0] + ops[1], tmp_path / "steer.pt", model=smollm2_dir)
    assert {k: v["action"] for k, v in torch.load(steer, weights_only=True).items()} == {
        "layers.11": "add",
        "layers.19": "clamp",
    }
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, text in TASKS.items():
        (tasks / f"{name}.yaml").write_text(text, encoding="utf-8")
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "datasets"),
        "OMP_NUM_THREADS": "1",
    }
    cli = Path(sys.executable).parent / "lm_eval"
    args = [
        str(cli), "--model", "steered",
        "--model_args", f"pretrained={smollm2_dir},steer_path={steer},dtype=float32",
        "--tasks", ",".join(TASKS), "--include_path", str(tasks), "--limit", "2",
        "--device", "cpu", "--batch_size", "1", "--log_samples",
        "--output_path", str(tmp_path / "out"),
    ]  # fmt: skip
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    requests = _requests(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)  # lm-eval's (the bridge adds a BOS)
    assert len(requests) == 2 + 2 * 10  # two GSM8K answers, two MMLU-Pro questions x 10 options
    steered_gap, unsteered_gap = 0.0, 0.0
    for context, continuation, theirs in requests:
        ctx, cont = _encode_pair(tokenizer, context, continuation)
        with intervene(smollm2, *ops):
            ours = _loglikelihood(smollm2, ctx, cont)
        steered_gap = max(steered_gap, abs(ours - theirs))
        unsteered_gap = max(unsteered_gap, abs(_loglikelihood(smollm2, ctx, cont) - theirs))
    print(f"lm-eval vs liref: steered max |diff| {steered_gap:.2e}, unsteered {unsteered_gap:.2f}")
    assert steered_gap < 5e-4
    assert unsteered_gap > 1.0  # the file steered lm-eval's model
