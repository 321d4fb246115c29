from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liref_lens import DirectionSet, load_model
from liref_lens.realdemo import (
    MEMORY_CATEGORIES,
    REASONING_CATEGORIES,
    default_contrasts,
    pick_questions,
    run_real_demo,
    steer_evalset,
    survival,
)
from liref_lens.tasks import Item, load_task

CONTRASTS = ["gsm8k_vs_nq", "mmlu_pro_categories", "mgsm_de_vs_nq", "testbed_cues"]


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
    data = _write_data(root / "data", n=40)  # NQ-open is halved between two contrasts
    result = run_real_demo(
        root / "out", model=str(model_dirs["llama"]), n=10, n_eval=6, n_random=2, n_boot=50,
        max_tokens=30, data_dir=data, progress=False,
    )  # fmt: skip
    return result


def test_writes_report_and_tables(demo) -> None:
    for name in ("report.html", "scores.csv", "baselines.csv", "designs.csv", "transfer.csv",
                 "steering.csv", "per_item.csv", "steerability.csv", "run.json"):  # fmt: skip
        assert (demo.out_dir / name).is_file(), name
    html = demo.report.read_text()
    # the title names every contrast, not only the last one
    assert "<title>liref_lens: reasoning vs memorization on " in html
    assert ", ".join(CONTRASTS) + "</title>" in html
    # the survival table puts each estimate and its interval in one cell, so the verdict column
    # fits beside them, and every table scrolls in its own box rather than off the page
    head = html[html.index("<h2>What survives the controls</h2>") :]
    head = head[: head.index("</table>")]
    assert "<th>layers beating every reader</th>" in head and "<th>ci_low</th>" not in head
    assert re.search(r"<td>[01]\.\d{3}\xa0\[[01]\.\d{3},\xa0[01]\.\d{3}\]</td>", head)
    assert html.count('<div class="wide"><table') >= 1
    scores = pd.read_csv(demo.out_dir / "scores.csv")
    assert list(dict.fromkeys(scores["contrast"])) == CONTRASTS
    assert set(scores["score"]) == {"auroc", "cohens_d", "cv_auroc"}
    assert sorted(scores["layer"].unique().tolist()) == [1, 2]  # resid_pre of layers 1..n-1
    base = pd.read_csv(demo.out_dir / "baselines.csv")
    assert len(base) == 2 * len(CONTRASTS) and set(base["feature"]) == {"length", "bag_of_tokens"}


def test_every_contrast_gets_every_design(demo) -> None:
    d = demo.designs
    for name in CONTRASTS:
        designs = set(d[d["contrast"] == name]["design"])
        assert "heldout" in designs and any(x.startswith("residualized") for x in designs)
        # matched where the lengths overlap, else a note saying why not
        assert any(x.startswith("matched") for x in designs) or any(
            n.startswith(f"{name}: no matched design") for n in demo.notes
        )
    pairs = set(zip(demo.transfer["train"], demo.transfer["test"], strict=True))
    assert pairs == {(a, b) for a in CONTRASTS for b in CONTRASTS}
    table = survival(demo.scores, demo.designs, demo.transfer, CONTRASTS[0])
    assert set(table["contrast"]) == set(CONTRASTS)
    assert "transferred from gsm8k_vs_nq" in set(table["design"])


def test_directions_and_provenance_are_saved(demo) -> None:
    record = json.loads((demo.out_dir / "run.json").read_text())
    assert list(record["contrasts"]) == CONTRASTS
    gsm = record["contrasts"]["gsm8k_vs_nq"]["reasoning"]
    path = Path(gsm["source"])
    assert path.name == "gsm8k_test.jsonl" and gsm["sha256"] == _sha256(path)
    assert record["steer_layer"] == demo.steer_layer and record["attention"] in ("sdpa", "eager")
    for name in CONTRASTS:
        ds = DirectionSet.load(demo.out_dir / "directions" / f"{name}.safetensors")
        assert tuple(ds.layers) == (1, 2) and ds.model_fingerprint == record["fingerprint"]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


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
        assert row.fitted == pytest.approx(g[g["control"] == -1]["value"].iloc[0])
        for kind in ("random", "shuffled", "covariance"):
            k = g[g["direction"] == kind]["value"]
            assert getattr(row, f"{kind}_mean") == pytest.approx(k.mean())
            assert getattr(row, f"{kind}_max") == pytest.approx(k.max())
            assert getattr(row, f"n_{kind}") == 2
        assert g["layer"].iloc[0] == demo.steer_layer
    assert {"gsm8k", "nq_open"} <= set(demo.steering["subset"])
    assert {"p_correct", "kl", "entropy"} <= set(demo.steering["metric"])
    # one row per steered cell and question in the per-item effects
    cells = table[(table["op"] == "add") & (table["subset"] == "all") & (table["metric"] == "kl")]
    assert len(demo.effects) == len(cells) * int(cells["n"].iloc[0])


def test_pick_is_seeded_and_respects_the_token_cap(model_dirs: dict[str, Path]) -> None:
    lm = load_model(str(model_dirs["llama"]), device="cpu")
    rows = [Item(" ".join(["w1"] * k), 1.0) for k in range(1, 30)]
    a = pick_questions(lm, rows, 5, np.random.default_rng(3), max_tokens=10)
    b = pick_questions(lm, rows, 5, np.random.default_rng(3), max_tokens=10)
    assert a == b and all(len(r.question.split()) <= 10 for r in a)
    with pytest.raises(ValueError, match="lower n"):
        pick_questions(lm, rows, 20, np.random.default_rng(3), max_tokens=10)


def test_distractors_start_with_another_token(model_dirs: dict[str, Path]) -> None:
    lm = load_model(str(model_dirs["llama"]), device="cpu")
    gsm = [Item("w1 + w2", float(k)) for k in (3, 3, 5, 7)]
    nq = [Item("w3 ?", (a,)) for a in ("w4", "w5", "w4")]
    ev = steer_evalset(lm, gsm, nq)
    ids = ev.candidate_ids(lm)
    assert len(ev.prompts) == 7 and (ids[:, 0] != ids[:, 1]).all()
    assert set(ev.correct) == {0} and ev.candidates[0] == ("3", "5")
    assert ev.prompts[0].endswith("The answer is ") and ev.prompts[-1].endswith("A:")


def test_data_folder_files_replace_the_samples_one_by_one(tmp_path: Path) -> None:
    data = _write_data(tmp_path / "data")
    (data / "nq_open_dev.jsonl").unlink()
    specs, sources = default_contrasts(data)
    assert sources[0] == str(data / "gsm8k_test.jsonl")
    assert sources[1] == "nq_open: the sample shipped with the package"
    assert [s.name for s in specs] == CONTRASTS
    assert len(specs[0].reasoning) == 30  # the folder's file, not the 250-question sample
    assert len(specs[0].memory) == 150  # half of the shipped NQ-open sample
    with pytest.raises(FileNotFoundError, match="no such folder"):
        default_contrasts(tmp_path / "nowhere")


def test_nq_open_halves_are_disjoint() -> None:
    specs, _ = default_contrasts()
    a = {id(it) for it in specs[0].memory.items}
    b = {id(it) for it in specs[2].memory.items}
    assert not a & b and len(a) + len(b) == len(load_task("nq_open", source="builtin"))


def test_cli_demo_with_a_model_runs_the_real_protocol(
    model_dirs: dict[str, Path], tmp_path: Path, capsys
) -> None:
    from liref_lens.cli import main

    data = _write_data(tmp_path / "data", n=80)
    out = tmp_path / "out"
    tiny = str(model_dirs["llama"])
    small = ["-n", "12", "--n-eval", "6"]
    assert main(["demo", "--model", tiny, "--data", str(data), "--out", str(out),
                 "--no-progress", *small]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "torch threads: 1 (auto: small model" in err
    scores = pd.read_csv(out / "scores.csv")
    assert list(dict.fromkeys(scores["contrast"])) == CONTRASTS
    assert sorted(scores["layer"].unique()) == [1, 2]  # every layer of the tiny model but 0
    assert (out / "report.html").stat().st_size > 100_000
    # the same run through the library gives the same numbers (the CLI passes seed and data)
    run_real_demo(tmp_path / "lib", model=tiny, data_dir=data, progress=False, n=12, n_eval=6)
    pd.testing.assert_frame_equal(scores, pd.read_csv(tmp_path / "lib" / "scores.csv"))


def test_cli_demo_takes_your_own_contrast_first(
    model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """--reasoning-task/--memory-task: any two task files; that contrast runs first and is
    the one steered; the question files are read before the model loads."""
    from liref_lens.cli import main

    data = _write_data(tmp_path / "data", n=40)
    out = tmp_path / "out"
    argv = ["demo", "--model", str(model_dirs["llama"]), "--out", str(out), "--no-progress",
            "--reasoning-task", f"gsm8k:{data / 'gsm8k_test.jsonl'}",
            "--memory-task", f"nq_open:{data / 'nq_open_dev.jsonl'}", "-n", "10",
            "--n-eval", "6"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "run.json").read_text())
    assert list(record["contrasts"])[0] == "gsm8k_vs_nq_open"
    assert (out / "directions" / "gsm8k_vs_nq_open.safetensors").is_file()
    steering = pd.read_csv(out / "steering.csv")
    assert {"gsm8k", "nq_open"} <= set(steering["subset"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--retrain"], "--retrain trains the testbed model; it cannot be used with --model"),
        (["--data", "nowhere"], "--data nowhere: no such folder"),
        (["--reasoning-task", "gsm8k"], "give both --reasoning-task and --memory-task"),
        (["--reasoning-task", "gsm8k:nowhere.jsonl", "--memory-task", "nq_open"], "nowhere"),
    ],
)
def test_cli_demo_model_argument_errors(
    model_dirs: dict[str, Path],
    tmp_path: Path,
    capsys,
    args: list[str],
    message: str,
    monkeypatch,
) -> None:
    import liref_lens.cli
    from liref_lens.cli import main

    def fail(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(liref_lens.cli, "_model", fail)
    argv = ["demo", "--model", str(model_dirs["llama"]), "--out", str(tmp_path / "o"), *args]
    try:
        assert main(argv) == 2
    except SystemExit as exit_:  # argparse's own usage errors
        assert exit_.code == 2
    assert message in capsys.readouterr().err


def test_cli_demo_data_needs_a_model(tmp_path: Path, capsys) -> None:
    from liref_lens.cli import main

    assert main(["demo", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "are for a real model: give --model too" in capsys.readouterr().err
