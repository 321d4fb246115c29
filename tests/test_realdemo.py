from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liref_lens import load_model
from liref_lens.realdemo import (
    MEMORY_CATEGORIES,
    REASONING_CATEGORIES,
    _pick,
    _steer_evalset,
    run_real_demo,
)
from liref_lens.tasks import Item


def _write_data(root: Path, n: int = 30) -> Path:
    """Question files in the layout of /work/shared/data, written in the tiny vocabulary."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    gsm = [
        {"question": f"w{i % 20} + w{(i * 3) % 20} = ? " + "w1 " * int(rng.integers(2, 8)),
         "answer": f"so #### {i % 10}"}
        for i in range(n)
    ]  # fmt: skip
    nq = [
        {"question": f"w{20 + i % 15} w{(i * 7) % 40} ?", "answer": [f"w{(i * 11) % 40}"]}
        for i in range(n)
    ]
    (root / "gsm8k_test.jsonl").write_text("\n".join(json.dumps(r) for r in gsm))
    (root / "nq_open_dev.jsonl").write_text("\n".join(json.dumps(r) for r in nq))
    cats = [*REASONING_CATEGORIES, *MEMORY_CATEGORIES]
    mmlu = [
        {"question_id": i * 10 + k, "options": ["w1", "w2"], "answer": "A", "answer_index": 0,
         "question": f"w{i % 30} w{(i * 5) % 30} " + ("+ 2" if k < 4 else "w9"),
         "category": cats[k], "src": "x"}
        for i in range(n) for k in range(len(cats))
    ]  # fmt: skip
    with zipfile.ZipFile(root / "mmlu_pro_questions_with_llama3_8b_outputs.zip", "w") as z:
        z.writestr("questions.json", json.dumps(mmlu))
    return root


@pytest.fixture(scope="module")
def demo(model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("realdemo")
    data = _write_data(root / "data")
    result = run_real_demo(
        root / "out", model=str(model_dirs["llama"]), n=10, n_eval=6, n_random=2, n_boot=50,
        max_tokens=30, data_dir=data, progress=False,
    )  # fmt: skip
    return result


def test_writes_report_and_tables(demo) -> None:
    for name in ("report.html", "scores.csv", "baselines.csv", "steering.csv"):
        assert (demo.out_dir / name).is_file()
    html = demo.report.read_text()
    assert "gsm8k_vs_nq" in html and "mmlu_pro_categories" in html
    scores = pd.read_csv(demo.out_dir / "scores.csv")
    assert set(scores["contrast"]) == {"gsm8k_vs_nq", "mmlu_pro_categories"}
    assert set(scores["score"]) == {"auroc", "cohens_d", "cv_auroc"}
    assert sorted(scores["layer"].unique().tolist()) == [1, 2]  # resid_pre of layers 1..n-1
    base = pd.read_csv(demo.out_dir / "baselines.csv")
    assert len(base) == 4 and set(base["feature"]) == {"length", "bag_of_tokens"}


def test_verdict_column_agrees_with_the_baselines(demo) -> None:
    s = demo.scores[demo.scores["score"] == "cv_auroc"]
    for name, g in s.groupby("contrast"):
        best = demo.baselines[demo.baselines["contrast"] == name]["auroc"].max()
        assert (g["baseline_auroc"] == best).all()
        # paired verdict: the bootstrap interval of the AUROC difference lies above 0
        assert (g["beats_baseline"] == (g["diff_low"] > 0)).all()
        assert ((g["value"] - g["baseline_auroc"] - g["diff"]).abs() < 1e-12).all()
        assert (g["diff_low"] <= g["diff"] + 1e-12).all()


def test_steering_table_matches_the_experiment_results(demo) -> None:
    table = pd.read_csv(demo.out_dir / "experiment" / "results.csv")
    for row in demo.steering.itertuples():
        g = table[
            (table["op"] == "add") & (table["alpha"] == row.alpha)
            & (table["subset"] == row.subset) & (table["metric"] == row.metric)
        ]  # fmt: skip
        rand = g[g["control"] >= 0]["value"]
        assert row.fitted == pytest.approx(g[g["control"] == -1]["value"].iloc[0])
        assert row.random_mean == pytest.approx(rand.mean())
        assert row.random_max == pytest.approx(rand.max()) and row.n_random == 2
        assert g["layer"].iloc[0] == demo.steer_layer
    assert {"gsm8k", "nq_open"} <= set(demo.steering["subset"])
    assert {"p_correct", "kl", "entropy"} <= set(demo.steering["metric"])


def test_pick_is_seeded_and_respects_the_token_cap(model_dirs: dict[str, Path]) -> None:
    lm = load_model(str(model_dirs["llama"]), device="cpu")
    rows = [Item(" ".join(["w1"] * k), 1.0) for k in range(1, 30)]
    a = _pick(lm, rows, 5, np.random.default_rng(3), max_tokens=10)
    b = _pick(lm, rows, 5, np.random.default_rng(3), max_tokens=10)
    assert a == b and all(len(r.question.split()) <= 10 for r in a)
    with pytest.raises(ValueError, match="lower n"):
        _pick(lm, rows, 20, np.random.default_rng(3), max_tokens=10)


def test_distractors_start_with_another_token(model_dirs: dict[str, Path]) -> None:
    lm = load_model(str(model_dirs["llama"]), device="cpu")
    gsm = [Item("w1 + w2", float(k)) for k in (3, 3, 5, 7)]
    nq = [Item("w3 ?", (a,)) for a in ("w4", "w5", "w4")]
    ev = _steer_evalset(lm, gsm, nq)
    ids = ev.candidate_ids(lm)
    assert len(ev.prompts) == 7 and (ids[:, 0] != ids[:, 1]).all()
    assert set(ev.correct) == {0} and ev.candidates[0] == ("3", "5")


def test_missing_data_is_named(tmp_path: Path, model_dirs: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError, match="lacks"):
        run_real_demo(tmp_path / "o", model=str(model_dirs["llama"]), data_dir=tmp_path,
                      progress=False)  # fmt: skip


def test_cli_demo_with_a_model_runs_the_real_protocol(
    model_dirs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from liref_lens.cli import main

    data = _write_data(tmp_path / "data", n=80)
    out = tmp_path / "out"
    tiny = str(model_dirs["llama"])
    assert main(["demo", "--model", tiny, "--data", str(data), "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "torch threads: 1 (auto: small model" in err
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["contrast"]) == {"gsm8k_vs_nq", "mmlu_pro_categories"}
    assert sorted(scores["layer"].unique()) == [1, 2]  # every layer of the tiny model but 0
    assert (out / "report.html").stat().st_size > 100_000
    # the same run through the library gives the same numbers (the CLI passes seed and data)
    run_real_demo(tmp_path / "lib", model=tiny, data_dir=data, progress=False)
    pd.testing.assert_frame_equal(scores, pd.read_csv(tmp_path / "lib" / "scores.csv"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--retrain"], "--retrain trains the testbed model; it cannot be used with --model"),
        (["--data", "nowhere"], "--data nowhere: no such folder"),
    ],
)
def test_cli_demo_model_argument_errors(
    model_dirs: dict[str, Path], tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    from liref_lens.cli import main

    argv = ["demo", "--model", str(model_dirs["llama"]), "--out", str(tmp_path / "o"), *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_demo_data_needs_a_model(tmp_path: Path, capsys) -> None:
    from liref_lens.cli import main

    assert main(["demo", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "--data is for a real model: give --model too" in capsys.readouterr().err
