"""Data-parallel caching: 2 gloo processes (torchrun) against 1, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from liref_lens import RunningStats, cache_activations, every, load_model, stream_activations
from liref_lens import distributed as dp

# 9 prompts in batches of 2: 5 batches, so with 2 ranks rank 1 sits out the last round.
_PROMPTS = [
    "w1 w2 w3 w4 w5",
    "w7",
    "Q: 2 + 3 = ? A:",
    "w9 w9 w10",
    "w3 w1",
    "Q: w5 w6 w7 w8 w9 w10 w11 ?",
    "w2 w4 w6 w8",
    "Q: 7 + 1 = ? A:",
    "w11",
]
_LABELS = ["reasoning" if "Q:" in p else "memory" for p in _PROMPTS]

_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from liref_lens import load_model, every, cache_activations, stream_activations
    from liref_lens import distributed as dp

    torch.set_num_threads(1)
    model_dir, out_dir, prompts_file = sys.argv[1:4]
    prompts = open(prompts_file).read().split("\\n")
    labels = ["reasoning" if "Q:" in p else "memory" for p in prompts]
    dist.init_process_group("gloo")
    rank, world = dp.rank_and_world()
    lm = load_model(model_dir, device="cpu")
    kw = dict(layers=[0, 2], batch_size=2, progress=False)
    last = dp.cache_activations(lm, prompts, sites=("resid_pre", "mlp_post"), **kw)
    tokens = dp.cache_activations(lm, prompts, position=every(), **kw)
    stats = dp.stream_activations(lm, prompts, labels, second_moments=True, **kw)
    local = cache_activations(lm, prompts, layers=[rank], progress=False)
    mine = stream_activations(lm, prompts[rank::world], labels[rank::world], layers=[1],
                              progress=False, second_moments=True)
    gathered = dp.gather_stats(mine)
    torch.save(
        {"last": dict(last.data), "last_index": last.prompt_index,
         "tokens": tokens.tensor, "tokens_index": tokens.prompt_index,
         "tokens_rank": tokens.token_rank,
         "counts": stats.counts, "means": stats.means, "m2": stats.m2,
         "gathered_means": gathered.means,
         "gathered_var": gathered.m2 / gathered.counts[:, None, None],
         "local_rank_layer": local.tensor},
        f"{out_dir}/rank{rank}-of{world}.pt",
    )
    # every rank reaches the end before any tears gloo down: a rank that exits while its
    # peer's gloo threads still talk to it can abort ("terminate called without an active
    # exception", seen once in CI)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def _torchrun(tmp: Path, model_dir: Path, nproc: int) -> None:
    script = tmp / "run_dp.py"
    script.write_text(_SCRIPT)
    prompts_file = tmp / "prompts.txt"
    prompts_file.write_text("\n".join(_PROMPTS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(script),
        str(model_dir),
        str(tmp),
        str(prompts_file),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(model_dirs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("dp")
    _torchrun(tmp, model_dirs["gpt2"], 2)
    _torchrun(tmp, model_dirs["gpt2"], 1)
    return {p.stem: torch.load(p) for p in tmp.glob("rank*.pt")}


def test_two_processes_equal_one_bit_for_bit(runs: dict[str, dict]) -> None:
    one = runs["rank0-of1"]
    for name in ("rank0-of2", "rank1-of2"):  # every rank gets the whole result
        two = runs[name]
        for key in ("last_index", "tokens", "tokens_index", "tokens_rank", "counts"):
            assert torch.equal(two[key], one[key]), key
        for site in ("resid_pre", "mlp_post"):
            assert torch.equal(two["last"][site], one["last"][site])
        for key in ("means", "m2"):  # float64 reductions, same bits
            assert two[key].dtype == torch.float64
            assert torch.equal(two[key], one[key]), key
    assert one["last_index"].tolist() == list(range(len(_PROMPTS)))
    assert one["counts"].tolist() == [_LABELS.count("memory"), _LABELS.count("reasoning")]


def test_one_process_equals_the_plain_functions(model_dirs, runs: dict[str, dict]) -> None:
    lm = load_model(str(model_dirs["gpt2"]), device="cpu")  # as the torchrun script loads it
    one = runs["rank0-of1"]
    kw = dict(layers=[0, 2], batch_size=2, progress=False)
    plain = cache_activations(lm, _PROMPTS, sites=("resid_pre", "mlp_post"), **kw)
    tokens = cache_activations(lm, _PROMPTS, position=every(), **kw)
    stats = stream_activations(lm, _PROMPTS, _LABELS, second_moments=True, **kw)
    for site in ("resid_pre", "mlp_post"):
        torch.testing.assert_close(plain[site], one["last"][site], rtol=0, atol=1e-6)
    torch.testing.assert_close(tokens.tensor, one["tokens"], rtol=0, atol=1e-6)
    torch.testing.assert_close(stats.means, one["means"], rtol=0, atol=1e-6)
    # Independent float64 check of the streamed means and variances.
    acts = cache_activations(lm, _PROMPTS, layers=[0, 2], batch_size=2, dtype=torch.float64,
                             progress=False)  # fmt: skip
    for c, cls in enumerate(("memory", "reasoning")):
        rows = torch.tensor([lab == cls for lab in _LABELS])
        want = acts.tensor[rows]
        torch.testing.assert_close(one["means"][c], want.mean(0), rtol=0, atol=1e-9)
        torch.testing.assert_close(
            one["m2"][c] / one["counts"][c], want.var(0, correction=0), rtol=0, atol=1e-9
        )


def test_gather_stats_merges_every_rank(runs: dict[str, dict]) -> None:
    two = runs["rank0-of2"]
    assert torch.equal(runs["rank1-of2"]["gathered_means"], two["gathered_means"])
    # Against an accumulator over the whole data (all prompts, one process).
    whole = runs["rank0-of1"]
    torch.testing.assert_close(two["gathered_means"], whole["gathered_means"], rtol=0, atol=1e-12)
    torch.testing.assert_close(two["gathered_var"], whole["gathered_var"], rtol=0, atol=1e-12)
    # Each rank cached a different layer with the plain function: the shards really differ.
    assert not torch.equal(two["local_rank_layer"], runs["rank1-of2"]["local_rank_layer"])


def test_single_process_without_a_process_group(lm, prompts) -> None:
    assert dp.rank_and_world() == (0, 1)
    acts = dp.cache_activations(lm, prompts, layers=[1], batch_size=4, progress=False)
    plain = cache_activations(lm, prompts, layers=[1], batch_size=4, progress=False)
    assert torch.equal(acts.tensor, plain.tensor)
    rs = RunningStats(("a",), (2,))
    assert dp.gather_stats(rs) is rs
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        dp.cache_activations(lm, prompts, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="got 1 labels for 6 prompts"):
        dp.stream_activations(lm, prompts, ["a"], progress=False)
