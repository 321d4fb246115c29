"""End to end through the command line: fit -> sweep -> report on a tiny model, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from liref_lens.cli import _layers, main
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
    assert set(scores["score"]) == {"auroc", "probe_acc", "cohens_d"}
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
    out = capsys.readouterr().out
    assert "report.html" in out


def test_cli_errors_are_messages(tmp_path, capsys) -> None:
    rc = main(
        [
            "fit",
            "--model",
            str(tmp_path / "no" / "model"),
            "--out",
            str(tmp_path),
            "--reasoning-task",
            "gsm8k",
            "--memory-task",
            "popqa",
        ]
    )
    assert rc == 2
    assert "no model directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["sweep"])


def test_layer_ranges() -> None:
    assert _layers("0-3,7") == [0, 1, 2, 3, 7]
    assert _layers("-1") == [-1]


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
    assert main([*args, "--no-progress"]) == 0
    assert "not a like-for-like check" in capsys.readouterr().out.splitlines()[-1]
