"""End to end through the command line: fit -> sweep -> report on a tiny model, offline."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from liref_lens.cli import _layers, build_parser, main
from liref_lens.directions import DirectionSet

DATA = Path(__file__).parent / "data"


def test_fit_sweep_report(model_dirs, tmp_path, capsys) -> None:
    model = str(model_dirs["llama"])
    run = tmp_path / "run"
    rc = main(
        [
            "fit",
            "--model",
            model,
            "--device",
            "cpu",
            "--out",
            str(run),
            "--no-progress",
            "--reasoning-task",
            f"gsm8k:{DATA / 'gsm8k_test.jsonl'}",
            "--memory-task",
            f"popqa:{DATA / 'popqa_test.csv'}",
        ]
    )
    assert rc == 0
    scores = pd.read_csv(run / "scores.csv")
    assert set(scores["score"]) == {"auroc", "probe_acc", "cohens_d", "cv_auroc"}
    assert (run / "baselines.csv").is_file()
    assert sorted(set(scores["layer"])) == [1, 2]  # resid_pre layer 0 is the embedding
    info = json.loads((run / "fit.json").read_text())
    assert info["reasoning_task"] == "gsm8k" and info["memory_task"] == "popqa"
    ds = DirectionSet.load(run / "directions.safetensors")
    assert ds.vectors.shape == (2, 32) and tuple(ds.layers) == (1, 2)

    rc = main(
        [
            "sweep",
            "--model",
            model,
            "--device",
            "cpu",
            "--out",
            str(run),
            "--no-progress",
            "--directions",
            str(run / "directions.safetensors"),
            "--task",
            f"gsm8k:{DATA / 'gsm8k_test.jsonl'}",
            "-n",
            "2",
            "--layers",
            "1-2",
            "--alphas=-1,1",
            "--ops",
            "add",
            "--n-random",
            "1",
            "--max-new-tokens",
            "3",
            "--style",
            "zero_shot",
        ]
    )
    assert rc == 0
    table = pd.read_csv(run / "sweep" / "results.csv")
    fitted = table[(table.op == "add") & (table.control == -1)]
    assert sorted(set(fitted.layer)) == [1, 2] and sorted(set(fitted.alpha)) == [-1.0, 1.0]
    assert {"gen_acc", "parse_fail", "kl"} <= set(table.metric)
    assert (table[table.direction == "random"].control == 0).all()

    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "Layer-wise separation" in html and "Dose-response" in html
    assert "Held-out AUROC against the trivial readers" in html
    out = capsys.readouterr().out
    assert "report.html" in out


def test_printed_tables_name_their_metric(model_dirs, tmp_path, capsys) -> None:
    """fit prints each layer's held-out AUROC next to the best trivial reader with the paired
    verdict, its in-sample AUROC, the readers, and the layers that beat them: the values of
    scores.csv and baselines.csv (#22: it printed the in-sample AUROC alone)."""
    run = tmp_path / "run"
    args = ["--reasoning-task", f"gsm8k:{DATA / 'gsm8k_test.jsonl'}"]
    args += ["--memory-task", f"popqa:{DATA / 'popqa_test.csv'}"]
    model = ["--model", str(model_dirs["llama"]), "--device", "cpu", "--out", str(run)]
    assert main(["fit", *model, "--no-progress", "--layers", "1", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Held-out AUROC of each layer's direction, gsm8k vs popqa")
    assert out[1].split() == [
        "layer", "insample_auroc", "heldout_auroc", "ci_low", "ci_high", "baseline",
        "baseline_auroc", "diff", "diff_low", "diff_high", "beats_baseline",
    ]  # fmt: skip
    scores = pd.read_csv(run / "scores.csv")
    held = scores[scores.score == "cv_auroc"].iloc[0]
    ins = scores[scores.score == "auroc"].iloc[0]
    row = out[2].split()
    numbers = [float(x) for x in row[:5] + row[6:10]]
    want = [1, ins["value"], held["value"], held["ci_low"], held["ci_high"],
            held["baseline_auroc"], held["diff"], held["diff_low"], held["diff_high"]]  # fmt: skip
    assert numbers == pytest.approx(want, abs=5e-4)
    assert row[5] == held["baseline"] and row[10] == str(bool(held["beats_baseline"]))
    base = pd.read_csv(run / "baselines.csv")
    assert out[3].startswith("Trivial readers (held out): length ")
    assert f"{base.set_index('feature').loc['length', 'auroc']:.3f}" in out[3]
    assert out[4].startswith("Layers that beat every trivial reader: ")


def test_cli_errors_are_messages(tmp_path, capsys) -> None:
    rc = main(
        [
            "fit",
            "--model",
            str(tmp_path / "no" / "model"),
            "--out",
            str(tmp_path),
            "--reasoning-task",
            f"gsm8k:{DATA / 'gsm8k_test.jsonl'}",
            "--memory-task",
            f"popqa:{DATA / 'popqa_test.csv'}",
        ]
    )
    assert rc == 2
    assert capsys.readouterr().err.startswith("liref-lens: error: no model directory")
    assert main(["report", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["sweep"])


def test_layer_ranges() -> None:
    assert _layers("0-3,7") == [0, 1, 2, 3, 7]
    assert _layers("-1") == [-1]
    assert _layers("-3--1") == [-3, -2, -1]
    for bad in ("abc", "1-x", "3-1", ","):
        with pytest.raises(argparse.ArgumentTypeError, match="4,8,12"):
            _layers(bad)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a command loads a model."""
    import liref_lens.model

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(liref_lens.model, "load_model", fail)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ([], "give --task (one labelled task, split by its labels) or both --reasoning-task"),
        (["--reasoning-task", "gsm8k"], "or both --reasoning-task and --memory-task"),
        (["--task", "gsm8k", "--layers", "abc"], "bad layers 'abc': expected comma-separated"),
        (["--task", "gsm9k"], "unknown task 'gsm9k'; known: ceval, gsm8k"),
        (["--task", "gsm8k", "--position", "first()"], "expected last(), mean()"),
        (["--task", "gsm8k", "--site", "resid"], "invalid choice: 'resid'"),
        (["--task", "gsm8k", "--threads", "0"], "expected 'auto' or a whole number >= 1"),
        (["--task", "gsm8k", "--memory-task", "popqa"], "not both"),
    ],
)
def test_fit_checks_its_arguments_before_loading_the_model(
    extra, says, tmp_path, capsys, no_model_load
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--model", "some/model", "--out", str(tmp_path), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: liref-lens fit") and says in err, err


def test_sweep_checks_its_inputs_before_loading_the_model(tmp_path, capsys, no_model_load) -> None:
    base = ["sweep", "--model", "m", "--out", str(tmp_path), "--task", "gsm8k", "--layers", "1"]
    with pytest.raises(SystemExit):
        main([*base, "--alphas", "x", "--directions", "d"])
    assert "not a comma-separated list of numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--alphas", "1", "--directions", "d", "--ops", "add,steer"])
    assert "unknown ops ['steer']" in capsys.readouterr().err
    rc = main([*base, "--alphas", "1", "--directions", str(tmp_path / "nope.safetensors")])
    assert rc == 2
    assert capsys.readouterr().err == (
        f"liref-lens: error: no direction-set file at {tmp_path / 'nope.safetensors'}\n"
    )


def test_a_task_file_missing_a_column_is_one_line_before_the_model_loads(
    tmp_path, capsys, no_model_load
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "1 + 1?"}) + "\n")
    args = ["fit", "--model", "m", "--out", str(tmp_path / "run"), "--task", f"gsm8k:{bad}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("liref-lens: error: ") and "answer" in err
    assert "Traceback" not in err and err != "liref-lens: error: 'answer'\n"


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ValueError("the longest prompt has 17 tokens,\n  but n_ctx=16"),
         "the longest prompt has 17 tokens, but n_ctx=16"),
        (KeyError("answer"), "missing key 'answer'"),
        (KeyError("unknown hook site 'x'; use one of resid_pre"),
         "unknown hook site 'x'; use one of resid_pre"),
        (FileNotFoundError("no such file: a.csv"), "no such file: a.csv"),
        (ConnectionError("hub unreachable"), "hub unreachable"),
    ],
)  # fmt: skip
def test_library_errors_print_one_line_and_exit_2(
    error, line, tmp_path, capsys, monkeypatch
) -> None:
    """Any ValueError/KeyError/OSError from the library during a command: one line, status 2;
    --debug re-raises it with its traceback."""
    import liref_lens.recipe

    def raise_(*args, **kwargs):
        raise error

    monkeypatch.setattr(liref_lens.recipe, "report_run", raise_)
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"liref-lens: error: {line}\n"
    with pytest.raises(type(error)):
        main(["report", str(tmp_path), "--debug"])


def test_third_party_deprecations_are_hidden_ours_are_shown(tmp_path, capsys, monkeypatch) -> None:
    import liref_lens.recipe

    def noisy(run):
        for module in ("transformers.generation.utils", "transformer_lens.model_bridge", "torch"):
            warnings.warn_explicit("x is deprecated", FutureWarning, "f.py", 1, module=module)
            warnings.warn_explicit("y is deprecated", DeprecationWarning, "f.py", 1, module=module)
        warnings.warn_explicit(
            "our own note", UserWarning, "recipe.py", 1, module="liref_lens.recipe"
        )
        warnings.warn_explicit(
            "our deprecation", FutureWarning, "recipe.py", 2, module="liref_lens.x"
        )
        return run / "report.html"

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(liref_lens.recipe, "report_run", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # Python's defaults, not pytest's "error"
        monkeypatch.setattr(warnings, "showwarning", show)
        assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "deprecated" not in err
    assert "UserWarning: our own note" in err and "FutureWarning: our deprecation" in err


def test_threads_auto_is_one_for_small_models_and_n_is_honoured(
    model_dirs, tmp_path, capsys, monkeypatch
) -> None:
    """fit runs with the chosen thread count, says it on stderr, and restores the count."""
    import torch

    import liref_lens.recipe

    seen: list[int] = []

    def fit_run(*args, **kwargs):
        seen.append(torch.get_num_threads())
        raise ValueError("stop here")

    monkeypatch.setattr(liref_lens.recipe, "fit_run", fit_run)
    before = torch.get_num_threads()
    cmd = ["fit", "--model", str(model_dirs["llama"]), "--device", "cpu", "--out", str(tmp_path)]
    cmd += ["--task", f"mmlu_pro:{DATA / 'mmlu_pro_test.parquet'}", "--no-progress"]
    try:
        torch.set_num_threads(3)
        assert main(cmd) == 2
        assert main([*cmd, "--threads", "2"]) == 2
        assert torch.get_num_threads() == 3  # restored after each command
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 2]
    err = capsys.readouterr().err.splitlines()
    assert "torch threads: 1 (auto: small model, 0.0M parameters)" in err[0]
    assert "torch threads: 2 (--threads 2)" in err[2]


def test_choose_threads() -> None:
    from liref_lens._threads import SMALL_MODEL_PARAMETERS, choose_threads

    assert choose_threads("auto", SMALL_MODEL_PARAMETERS - 1)[0] == 1
    big = SMALL_MODEL_PARAMETERS
    assert choose_threads("auto", big, cpus=2, busy=0)[0] == 2  # quiet: every usable CPU
    assert choose_threads("auto", big, cpus=2, busy=1)[0] == 1  # one busy: never oversubscribe
    assert choose_threads("auto", big, cpus=2, busy=7)[0] == 1  # at least one
    assert choose_threads("auto", big, cpus=16, busy=3)[0] == 13
    assert choose_threads(4, 10) == (4, "--threads 4")
    with pytest.raises(ValueError, match="whole number"):
        choose_threads(0, 10)


def test_usable_cpus_reads_affinity_and_the_cgroup_quota(tmp_path, monkeypatch) -> None:
    import os

    from liref_lens._threads import usable_cpus

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert usable_cpus(tmp_path / "none") == 4  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs' worth of time
    assert usable_cpus(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")  # no quota
    assert usable_cpus(tmp_path) == 4
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()  # cgroup v1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1


def test_busy_cpus_counts_other_runnable_tasks(tmp_path) -> None:
    from liref_lens._threads import busy_cpus

    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n")
    assert busy_cpus(samples=3, interval=0, stat=str(stat)) == 2  # itself not counted
    stat.write_text("procs_running 1\n")
    assert busy_cpus(samples=1, stat=str(stat)) == 0
    assert busy_cpus(samples=1, stat=str(tmp_path / "missing")) == 0


def test_busy_cpus_sees_a_busy_process(tmp_path) -> None:
    """A real busy loop in another process shows up (the machine may be busier still)."""
    import subprocess
    import sys
    import time

    from liref_lens._threads import busy_cpus

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cpus(samples=9, interval=0.01) >= 1
    finally:
        spin.kill()
        spin.wait()


def test_demo_threads_auto_runs_the_testbed_on_one_thread(tmp_path, capsys, monkeypatch) -> None:
    import torch

    import liref_lens.demo

    seen: list[int] = []
    monkeypatch.setattr(liref_lens.demo, "_run", lambda *a: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["demo", "--out", str(tmp_path), "--no-progress"]) == 0
        assert main(["demo", "--out", str(tmp_path), "--no-progress", "--threads", "3"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 3]
    assert "torch threads: 1 (auto: small model, 0." in capsys.readouterr().err


def test_every_option_says_its_default_or_that_it_is_required() -> None:
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == {"demo", "train-testbed", "fit", "sweep", "report"}
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = action.help or ""
            flag = isinstance(action, argparse._StoreTrueAction)
            ok = flag or "default" in text or "required" in text or not action.option_strings
            assert text and ok, (name, action.option_strings, text)
            if action.choices:
                assert all(str(c) in text for c in action.choices), (name, action.dest)


def test_train_testbed_prints_its_metrics_next_to_the_shipped_ones(tmp_path, capsys) -> None:
    from liref_lens.testbed import shipped_checkpoint

    out = tmp_path / "tb"
    rc = main(["train-testbed", "--out", str(out), "--steps", "20", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out.splitlines()
    record = json.loads((out / "training.json").read_text())
    shipped = json.loads((shipped_checkpoint() / "training.json").read_text())
    assert record["config"]["steps"] == 20 and record["seed"] == 0
    rows = {line.split()[0]: line.split()[1:] for line in printed if line.startswith(
        tuple(k.removeprefix("acc_") for k in record["metrics"]))}  # fmt: skip
    assert len(rows) == len(record["metrics"]) == 6
    for key, value in record["metrics"].items():
        this_run, in_shipped = rows[key.removeprefix("acc_")]
        assert float(this_run) == pytest.approx(value, abs=5e-4)
        assert float(in_shipped) == pytest.approx(shipped["metrics"][key], abs=5e-4)
    assert "not a like-for-like check" in printed[-1]  # 20 steps is not the shipped recipe
    assert main(["train-testbed", "--out", str(tmp_path / "x"), "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_testbed_says_whether_it_rebuilt_the_reference_weights(
    tmp_path, capsys, monkeypatch
) -> None:
    """Against a reference trained with the same recipe and seed here, the rerun's weights are
    bit-identical; a reference whose weights differ by one byte is reported as drifted."""
    import shutil

    import liref_lens.testbed

    ref = tmp_path / "ref"
    assert main(["train-testbed", "--out", str(ref), "--steps", "12", "--no-progress"]) == 0
    monkeypatch.setattr(liref_lens.testbed, "shipped_checkpoint", lambda: ref)
    capsys.readouterr()
    assert (
        main(["train-testbed", "--out", str(tmp_path / "a"), "--steps", "12", "--no-progress"]) == 0
    )
    assert "bit-identical" in capsys.readouterr().out.splitlines()[-1]

    other = tmp_path / "other"
    shutil.copytree(ref, other)
    blob = bytearray((other / "model.safetensors").read_bytes())
    blob[-1] ^= 1  # one bit of the last weight
    (other / "model.safetensors").write_bytes(bytes(blob))
    monkeypatch.setattr(liref_lens.testbed, "shipped_checkpoint", lambda: other)
    assert (
        main(["train-testbed", "--out", str(tmp_path / "b"), "--steps", "12", "--no-progress"]) == 0
    )
    assert "weights differ" in capsys.readouterr().out.splitlines()[-1]

    args = ["train-testbed", "--out", str(tmp_path / "c"), "--steps", "12", "--seed", "1"]
    assert main([*args, "--no-progress", "--threads", "2"]) == 0
    captured = capsys.readouterr()
    assert "not a like-for-like check" in captured.out.splitlines()[-1]
    assert "torch threads: 2 (--threads 2)" in captured.err
    assert json.loads((tmp_path / "c" / "training.json").read_text())["config"]["threads"] == 2


# ----- #21: one line, naming the value, for what a user gets wrong ---------------------------
def test_a_device_this_machine_lacks_is_one_line_before_the_model_loads(
    tmp_path, capsys, no_model_load, monkeypatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CPU build's answer
    base = ["fit", "--model", "m", "--out", str(tmp_path / "run"), "--task", "gsm8k"]
    assert main([*base, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("liref-lens: error: device 'cuda' was asked")
    assert "--device cpu" in err and "Traceback" not in err
    assert main([*base, "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_the_library_refuses_a_missing_device_before_loading(model_dirs, monkeypatch) -> None:
    import torch

    from liref_lens import load_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda:1' was asked for"):
        load_model(str(model_dirs["gpt2"]), device="cuda:1")


@pytest.mark.parametrize("command", ["fit", "sweep", "demo"])
def test_out_naming_an_existing_file_is_one_line(command, tmp_path, capsys, no_model_load) -> None:
    taken = tmp_path / "taken"
    taken.write_text("mine")
    args = {
        "fit": ["fit", "--model", "m", "--task", "gsm8k"],
        "sweep": ["sweep", "--model", "m", "--task", "gsm8k", "--layers", "1", "--alphas", "1",
                  "--directions", "d"],
        "demo": ["demo"],
    }[command]  # fmt: skip
    assert main([*args, "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"liref-lens: error: --out {taken} is an existing file; give a folder (new or a run "
        "folder)\n"
    )
    assert taken.read_text() == "mine"


@pytest.mark.parametrize(
    ("fit_json", "says"),
    [
        ("{not json", "is damaged (JSONDecodeError"),
        ("[1, 2]", "is damaged (ValueError: expected a JSON object"),
    ],
)
def test_report_of_a_broken_fit_json_names_the_file(fit_json, says, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        {"layer": [1], "score": ["auroc"], "value": [0.9], "ci_low": [0.8], "ci_high": [1.0]}
    ).to_csv(run / "scores.csv", index=False)
    (run / "fit.json").write_text(fit_json)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run / 'fit.json'} {says}" in err
    assert "rerun `liref-lens fit`" in err
    (run / "fit.json").unlink()
    assert main(["report", str(run)]) == 2
    assert f"{run / 'fit.json'} is missing from the run folder" in capsys.readouterr().err


def test_ctrl_c_exits_130_with_what_to_do(tmp_path, capsys, monkeypatch) -> None:
    import liref_lens.cli
    import liref_lens.recipe

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(liref_lens.recipe, "report_run", interrupt)
    assert main(["report", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "\nliref-lens: interrupted\n"
    parser = build_parser()  # the sweep sub-command dispatches to the patched function
    monkeypatch.setattr(liref_lens.cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["sweep"].set_defaults(func=interrupt)
    args = ["sweep", "--model", "m", "--out", str(tmp_path / "r"), "--task", "gsm8k",
            "--layers", "1", "--alphas", "1", "--directions", "d"]  # fmt: skip
    assert main(args) == 130
    err = capsys.readouterr().err
    assert err == (
        "\nliref-lens: interrupted; run the same command to resume (finished cells are kept in "
        "--out)\n"
    )
    monkeypatch.setattr(liref_lens.cli, "build_parser", interrupt)  # before any command ran
    assert main(["report", str(tmp_path)]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_fit_n_draws_a_seeded_sample_and_records_the_data(model_dirs, tmp_path) -> None:
    """``-n`` draws questions at random with ``--seed`` (not the first rows), and fit.json
    records each file's path, SHA-256 and the selection (#22)."""
    import hashlib

    from liref_lens.tasks import load_task

    gsm = tmp_path / "gsm8k.jsonl"
    rows = [{"question": f"w{i} + w{i + 1} = ?", "answer": f"#### {i}"} for i in range(12)]
    gsm.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pop = DATA / "popqa_test.csv"
    runs = {}
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        args = ["fit", "--model", str(model_dirs["llama"]), "--device", "cpu", "--out", str(run),
                "--no-progress", "--reasoning-task", f"gsm8k:{gsm}", "--memory-task",
                f"popqa:{pop}", "-n", "3", "--seed", str(seed), "--layers", "1"]  # fmt: skip
        assert main(args) == 0
        runs[seed] = json.loads((run / "fit.json").read_text())
    data = runs[0]["reasoning_data"]
    assert runs[0]["n_reasoning"] == 3
    assert data["sha256"] == hashlib.sha256(gsm.read_bytes()).hexdigest()
    assert data["source"] == str(gsm.resolve())
    assert data["selection"][-1]["sample"] == 3 and data["selection"][-1]["seed"] == 0
    assert runs[1]["reasoning_data"]["selection"][-1]["seed"] == 1
    picked = {it.question for it in load_task("gsm8k", source=gsm, sample=3, seed=0)}
    assert picked != {it.question for it in load_task("gsm8k", source=gsm, n=3)}
