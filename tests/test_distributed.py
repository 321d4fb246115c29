"""Data-parallel caching: 2 gloo processes (torchrun) against one, the input check, time limits.

What is guaranteed (see `liref_lens.distributed`), and tested here:
- bit for bit equal to the single-process functions at the same thread count and kernels: each
  rank (1 thread) compares its distributed results with the plain functions it runs itself;
- the float64 reductions equal a float64 recomputation from the same cached vectors within a
  bound derived from the number of rows and float64's epsilon (never a guessed tolerance:
  across processes with different kernels the model's float32 arithmetic may differ, so the
  recomputation reads the vectors cached in the same process as the streamed statistics);
- ranks given different inputs all raise one line naming the input and the ranks; a stalled
  rank makes the others raise within the time limit, and no process outlives the launcher.

Three torchrun launches of 2 processes (about 10 s each on a quiet machine).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from liref_lens import RunningStats, cache_activations, stream_activations
from liref_lens import distributed as dp

# 9 prompts in batches of 2: 5 batches of unequal padded length.
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

_HEAD = """
import json, os, sys, time, torch, torch.distributed as dist
from liref_lens import load_model, every, cache_activations, stream_activations, RunningStats
from liref_lens import distributed as dp

torch.set_num_threads(1)
dirs = json.loads(sys.argv[1])
out_dir = sys.argv[2]
with open(f"{out_dir}/pid{os.environ['RANK']}", "w") as f:
    f.write(str(os.getpid()))
prompts = json.loads(sys.argv[3])
labels = ["reasoning" if "Q:" in p else "memory" for p in prompts]
dist.init_process_group("gloo")
rank, world = dp.rank_and_world()
lm = load_model(dirs["gpt2"], device="cpu")
kw = dict(layers=[0, 2], batch_size=2, progress=False)
"""

_EQUAL = """
out = {}
for name, mod in (("dp", dp), ("plain", sys.modules["liref_lens"])):
    acts = mod.cache_activations(lm, prompts, sites=("resid_pre", "mlp_post"), **kw)
    tokens = mod.cache_activations(lm, prompts, position=every(), **kw)
    rows64 = mod.cache_activations(lm, prompts, dtype=torch.float64, **kw)
    stats = mod.stream_activations(lm, prompts, labels, second_moments=True, **kw)
    out[name] = {
        "resid_pre": acts["resid_pre"], "mlp_post": acts["mlp_post"],
        "index": acts.prompt_index, "tokens": tokens.tensor,
        "tokens_index": tokens.prompt_index, "tokens_rank": tokens.token_rank,
        "rows64": rows64.tensor, "counts": stats.counts, "means": stats.means, "m2": stats.m2,
    }
mine = stream_activations(lm, prompts[rank::world], labels[rank::world], layers=[1],
                          progress=False, second_moments=True, stats=RunningStats(
                              ("memory", "reasoning"), (1, 32), second_moments=True))
out["gather"] = {"means": mine.means.clone(), "m2": mine.m2.clone(), "counts": mine.counts}
gathered = dp.gather_stats(mine)
out["gathered"] = {"means": gathered.means, "m2": gathered.m2, "counts": gathered.counts}
torch.save(out, f"{out_dir}/rank{rank}.pt")

# Ranks given different inputs: each case must raise on both ranks before any other collective.
other = prompts[:-1] + ["w12"]
swapped = load_model(dirs["swapped"], device="cpu")
llama = load_model(dirs["llama"], device="cpu")
half = load_model(dirs["gpt2"], device="cpu", dtype=torch.bfloat16)
filled = RunningStats(("memory", "reasoning"), (2, 32), second_moments=True)
filled.update(torch.ones(1, 2, 32), ["memory"])
r1 = rank == 1
cases = {
    "prompts": lambda: dp.cache_activations(lm, other if r1 else prompts, **kw),
    "count": lambda: dp.stream_activations(
        lm, prompts[:-1] if r1 else prompts, labels[:-1] if r1 else labels, **kw),
    "layers": lambda: dp.cache_activations(lm, prompts, layers=[0, 1 if r1 else 2],
                                           batch_size=2, progress=False),
    "sites": lambda: dp.cache_activations(lm, prompts, sites="mlp_post" if r1 else "resid_pre",
                                          **kw),
    "position": lambda: dp.cache_activations(lm, prompts, position=every() if r1 else None, **kw),
    "batch_size": lambda: dp.cache_activations(lm, prompts, layers=[0], batch_size=2 + r1,
                                               progress=False),
    "dtype": lambda: dp.cache_activations(
        lm, prompts, dtype=torch.float64 if r1 else torch.float32, **kw),
    "padding_side": lambda: dp.cache_activations(
        lm, prompts, padding_side="right" if r1 else "left", **kw),
    "prepend_bos": lambda: dp.cache_activations(lm, prompts, prepend_bos=False if r1 else None,
                                                **kw),
    "labels": lambda: dp.stream_activations(lm, prompts, labels[::-1] if r1 else labels, **kw),
    "model": lambda: dp.cache_activations(llama if r1 else lm, prompts, **kw),
    "tokenizer": lambda: dp.cache_activations(swapped if r1 else lm, prompts, **kw),
    "model dtype": lambda: dp.cache_activations(half if r1 else lm, prompts, **kw),
    "function": lambda: (dp.stream_activations(lm, prompts, labels, **kw) if r1
                         else dp.cache_activations(lm, prompts, **kw)),
    "stats": lambda: dp.stream_activations(
        lm, prompts, labels, stats=filled if r1 else None, second_moments=True, **kw),
    "gather_stats": lambda: dp.gather_stats(
        RunningStats(("a", "b") if r1 else ("a",), (2,))),
}
messages = {}
for name, case in cases.items():
    try:
        case()
        messages[name] = None
    except ValueError as err:
        messages[name] = str(err)
lm.sdpa = not r1
try:
    dp.cache_activations(lm, prompts, **kw)
    messages["sdpa"] = None
except ValueError as err:
    messages["sdpa"] = str(err)
with open(f"{out_dir}/messages{rank}.json", "w") as f:
    json.dump(messages, f)
"""

_STALL = """
if rank == 1:  # a rank that stalls in its own forward pass, after the input check
    lm.model.blocks[0].register_forward_pre_hook(lambda *a: time.sleep(3600))
dp.cache_activations(lm, prompts, timeout=2, **kw)
"""

_END = """
# every rank reaches the end before any tears gloo down: a rank that exits while its peer's
# gloo threads still talk to it can abort ("terminate called without an active exception")
dist.barrier()
dist.destroy_process_group()
# ... and even then, 2 of 70 launches here aborted the same way (SIGABRT, exit -6) *after*
# destroy_process_group had returned on both ranks and every result was written: in the
# interpreter's own teardown (faulthandler: "<no Python frame>"; torch 2.13.0, gloo). The
# results are complete by now, so skip that teardown (docs/api/distributed.md says the same).
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


def _alive(pid: int, script: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return str(script).encode() in cmdline and state != "Z"


def _torchrun(tmp: Path, dirs: dict[str, Path], body: str, limit: float = 300) -> tuple[int, str]:
    """Run ``body`` on 2 gloo ranks; the exit status and output. No rank may outlive the
    launcher (torchrun starts each in its own session: each rank writes its process id)."""
    script = tmp / "run_dp.py"
    script.write_text(textwrap.dedent(_HEAD + body + _END))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    paths = json.dumps({k: str(v) for k, v in dirs.items()})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += [str(script), paths, str(tmp), json.dumps(_PROMPTS)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    hung = False
    try:
        output, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        hung = True
        proc.terminate()  # torchrun ends its ranks on SIGTERM
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    pids = [int(p.read_text()) for p in tmp.glob("pid*")]
    left = [pid for pid in pids if _alive(pid, script)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not hung, f"the ranks hung for more than {limit:.0f} s:\n{output[-3000:]}"
    assert not left, f"ranks {left} outlived the launcher:\n{output[-3000:]}"
    return proc.returncode, output


@pytest.fixture(scope="module")
def dirs(model_dirs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny GPT-2, the tiny Llama, and the GPT-2 with a tokenizer that swaps two words."""
    swapped = tmp_path_factory.mktemp("swapped") / "gpt2"
    shutil.copytree(model_dirs["gpt2"], swapped)
    spec = json.loads((swapped / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["w1"], vocab["w2"] = vocab["w2"], vocab["w1"]
    (swapped / "tokenizer.json").write_text(json.dumps(spec))
    return {"gpt2": model_dirs["gpt2"], "llama": model_dirs["llama"], "swapped": swapped}


@pytest.fixture(scope="module")
def runs(dirs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("dp")
    code, output = _torchrun(tmp, dirs, _EQUAL)
    assert code == 0, output[-3000:]
    out = {f"rank{r}": torch.load(tmp / f"rank{r}.pt") for r in (0, 1)}
    for r in (0, 1):
        out[f"messages{r}"] = json.loads((tmp / f"messages{r}.json").read_text())
    return out


def test_two_processes_equal_the_plain_functions_bit_for_bit(runs: dict[str, dict]) -> None:
    for rank in ("rank0", "rank1"):  # every rank gets the whole result
        two, plain = runs[rank]["dp"], runs[rank]["plain"]  # same process: same kernels
        for key, value in plain.items():
            assert torch.equal(two[key], value), (rank, key)
        for key, value in runs["rank0"]["dp"].items():  # the other process, 1 thread too
            assert torch.equal(two[key], value), (rank, key)
    one = runs["rank0"]["plain"]
    assert one["means"].dtype == torch.float64
    assert one["index"].tolist() == list(range(len(_PROMPTS)))
    assert one["counts"].tolist() == [_LABELS.count("memory"), _LABELS.count("reasoning")]


def test_streamed_stats_equal_a_float64_recomputation(runs: dict[str, dict]) -> None:
    """Means and variances of the float64 vectors cached in the same process, within float64
    rounding. Bound: summing n terms in any order errs by at most (n - 1) u sum|x| (Higham,
    Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 4.4; u = eps / 2); each of at
    most n Chan et al. merges adds a few u of the largest magnitude. So both results lie within
    3 n eps M of the exact value, M = max|x| for the means and (2 max|x|)^2 for the variances
    (squared deviations are at most (2 max|x|)^2)."""
    eps = torch.finfo(torch.float64).eps
    for rank in ("rank0", "rank1"):
        got = runs[rank]["dp"]
        rows = got["rows64"]  # [prompt, layer, width], cached by this process
        for c, cls in enumerate(("memory", "reasoning")):
            x = rows[torch.tensor([lab == cls for lab in _LABELS])]
            n, big = x.shape[0], float(x.abs().max())
            assert int(got["counts"][c]) == n
            mean_tol = 2 * 3 * n * eps * big  # both sides within 3 n eps M of the exact value
            var_tol = 2 * 3 * n * eps * (2 * big) ** 2
            torch.testing.assert_close(got["means"][c], x.mean(0), rtol=0, atol=mean_tol)
            torch.testing.assert_close(
                got["m2"][c] / n, x.var(0, correction=0), rtol=0, atol=var_tol
            )


def test_gather_stats_merges_every_rank(runs: dict[str, dict]) -> None:
    """Each rank's accumulator merged in rank order, the same on every rank: elementwise
    float64 arithmetic, so bit for bit on any CPU."""
    want = RunningStats(("memory", "reasoning"), (1, 32), second_moments=True)
    for rank in ("rank0", "rank1"):
        part = RunningStats(("memory", "reasoning"), (1, 32), second_moments=True)
        saved = runs[rank]["gather"]
        part.counts, part.means, part.m2 = saved["counts"], saved["means"], saved["m2"]
        want.merge(part)
    assert not torch.equal(runs["rank0"]["gather"]["counts"], runs["rank1"]["gather"]["counts"])
    for rank in ("rank0", "rank1"):
        got = runs[rank]["gathered"]
        assert torch.equal(got["counts"], want.counts)
        assert torch.equal(got["means"], want.means)
        assert torch.equal(got["m2"], want.m2)
    assert want.counts.tolist() == [_LABELS.count("memory"), _LABELS.count("reasoning")]


_EXPECTED = {
    "prompts": "different prompt texts on rank 0 vs rank 1",
    "count": "number of prompts: 9 on rank 0, 8 on rank 1. ",
    "layers": "different layers on rank 0 vs rank 1. ",
    "sites": "different sites on rank 0 vs rank 1. ",
    "position": "different position on rank 0 vs rank 1. ",
    "batch_size": "different batch_size on rank 0 vs rank 1. ",
    "dtype": "different dtype on rank 0 vs rank 1. ",
    "padding_side": "different padding_side on rank 0 vs rank 1. ",
    "prepend_bos": "different token ids (the prompt texts agree: different tokenizers?) on rank "
    "0 vs rank 1; different prepend_bos on rank 0 vs rank 1. ",
    "labels": "different labels on rank 0 vs rank 1. ",
    "model": "different model weights and config (fingerprint) on rank 0 vs rank 1. ",
    "tokenizer": "different token ids (the prompt texts agree: different tokenizers?) on rank "
    "0 vs rank 1. ",
    "model dtype": "different model dtype on rank 0 vs rank 1. ",
    "function": "different functions called: cache_activations on rank 0, stream_activations on "
    "rank 1. ",
    "stats": "different accumulator (stats) on rank 0 vs rank 1. ",
    "gather_stats": "different accumulator (stats) on rank 0 vs rank 1. ",
    "sdpa": "different fused attention (lm.sdpa) on rank 0 vs rank 1. ",
}


@pytest.mark.parametrize("case", sorted(_EXPECTED))
def test_ranks_given_different_inputs_all_raise(runs: dict[str, dict], case: str) -> None:
    zero, one = runs["messages0"][case], runs["messages1"][case]
    assert zero is not None, f"{case}: rank 0 returned a result"
    # the same line on every rank, after the name of the function that rank called
    assert zero.split(": ", 1)[1] == one.split(": ", 1)[1]
    assert "\n" not in zero
    assert f"the ranks were given different inputs: {_EXPECTED[case]}" in zero, zero
    assert zero.endswith("Call it on every rank with the same arguments and the same model")


def test_a_stalled_rank_makes_the_others_raise_in_time(dirs, tmp_path: Path) -> None:
    """Rank 1 stalls in its forward pass; rank 0 finishes its share and must give up after
    timeout=2 s plus 4x its own working time, and the launcher must then end rank 1 too."""
    code, output = _torchrun(tmp_path, dirs, _STALL, limit=120)
    assert code != 0
    line = next((x for x in output.splitlines() if "RuntimeError: rank 0: " in x), output[-3000:])
    assert "rank 0: the gather of cached activations failed after " in line, line
    assert "not every rank of the process group took part" in line, line


def test_single_process_without_a_process_group(lm, prompts) -> None:
    assert dp.rank_and_world() == (0, 1)
    acts = dp.cache_activations(lm, prompts, layers=[1], batch_size=4, progress=False)
    plain = cache_activations(lm, prompts, layers=[1], batch_size=4, progress=False)
    assert torch.equal(acts.tensor, plain.tensor)
    labels = ["a", "b"] * 3
    rs = dp.stream_activations(lm, prompts, labels, batch_size=4, progress=False)
    plain_rs = stream_activations(lm, prompts, labels, batch_size=4, progress=False)
    assert torch.equal(rs.means, plain_rs.means)
    rs = RunningStats(("a",), (2,))
    assert dp.gather_stats(rs) is rs
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        dp.cache_activations(lm, prompts, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="got 1 labels for 6 prompts"):
        dp.stream_activations(lm, prompts, ["a"], progress=False)
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        dp.cache_activations(lm, prompts, progress=False, timeout=0)


def test_balance_minimises_the_largest_share() -> None:
    """Longest first to the least-loaded rank, then exchanges between the largest and smallest
    share; deterministic, every index once, within Graham's 4/3 of the exact optimum."""
    assert dp.balance([8, 7, 6, 5, 4], 2) == [[2, 3, 4], [0, 1]]  # 15 + 15; LPT alone: 17
    assert dp.balance([5, 5, 5], 4) == [[0], [1], [2], []]
    gen = torch.Generator().manual_seed(0)
    for trial in range(20):
        world = 2 + trial % 2
        costs = [int(c) for c in torch.randint(1, 500, (8,), generator=gen)]
        shares = dp.balance(costs, world)
        assert shares == dp.balance(costs, world)
        assert sorted(i for s in shares for i in s) == list(range(len(costs)))
        largest = max(sum(costs[i] for i in s) for s in shares)
        best = min(  # every assignment of the 8 items to the ranks
            max(sum(c for c, r in zip(costs, assign, strict=True) if r == k) for k in range(world))
            for assign in itertools.product(range(world), repeat=len(costs))
        )
        assert largest <= best * 4 / 3
        assert largest <= sum(costs) / world + max(costs)


def test_shards_of_a_length_spread_are_balanced_by_padded_tokens(lm) -> None:
    """The split that made 2 processes only 1.23x faster (round robin over length-sorted
    batches: rank 0 always got the longer batch) against `balance`."""
    from liref_lens.model import length_batches

    words = torch.randint(1, 40, (64,), generator=torch.Generator().manual_seed(1))
    prompts = [" ".join(f"w{(i + j) % 40}" for j in range(int(n))) for i, n in enumerate(words)]
    ids = lm.encode(prompts)
    batches = length_batches(ids, 8)
    costs = [len(b) * max(len(ids[i]) for i in b) for b in batches]
    round_robin = max(sum(costs[0::2]), sum(costs[1::2]))
    loads = [sum(costs[b] for b in share) for share in dp.balance(costs, 2)]
    assert sum(costs) / max(loads) > sum(costs) / round_robin
    assert max(loads) - min(loads) <= max(costs)
