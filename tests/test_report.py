from __future__ import annotations

import re
import subprocess

import pandas as pd
import plotly.graph_objects as go
import pytest
from tests.needs import browser

from liref_lens.report import Report


def _report() -> Report:
    r = Report("Test <report>", config={"seed": 3, "layers": [1, 2]})
    r.findings(["AUROC 0.98 [0.97, 0.99] at layer 2 & more."])
    r.figure("Scores", go.Figure(go.Scatter(x=[0, 1, 2], y=[0.5, 0.8, 0.98])), caption="cap")
    r.figure("Second", go.Figure(go.Bar(x=["a", "b"], y=[1, 2])))
    r.table("Table", pd.DataFrame({"layer": [1, 2], "auroc": [0.81234, 0.98]}))
    return r


def test_report_is_self_contained_and_escaped(tmp_path) -> None:
    path = _report().write(tmp_path / "r" / "report.html")
    text = path.read_text()
    assert "<title>Test &lt;report&gt;</title>" in text
    assert "layer 2 &amp; more." in text
    assert not re.search(r"<script[^>]+src=", text)  # nothing loaded from the network
    assert text.count("plotly.js v") == 1  # the library is embedded once
    assert text.count('class="plotly-graph-div"') == 2
    assert "<td>0.812</td>" in text
    # the configuration is a table of its keys, not escaped JSON
    assert '<table class="config"><tr><th>layers</th><td>1, 2</td></tr>' in text
    assert "<tr><th>seed</th><td>3</td></tr>" in text and "&quot;seed&quot;" not in text
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temp file left


def test_long_tables_are_sorted_best_first_and_folded() -> None:
    r = Report("T")
    df = pd.DataFrame({"layer": range(20), "auroc": [(7 * i) % 20 / 20 for i in range(20)]})
    r.table("Scores", df, sort_by="auroc", show=5)
    html = r.html()
    shown, folded = html.split("<details>")
    want = df.sort_values("auroc", ascending=False)
    first = [int(x) for x in re.findall(r"<tr>\s*<td>(\d+)</td>", shown)]
    rest = [int(x) for x in re.findall(r"<tr>\s*<td>(\d+)</td>", folded)]
    assert first == want["layer"].head(5).tolist()
    assert rest == want["layer"].iloc[5:].tolist()
    assert "<summary>Show the other 15 rows</summary>" in folded
    short = Report("T")
    short.table("Scores", df.head(3), sort_by="auroc", show=5)
    assert "<details>" not in short.html()


@pytest.mark.browser  # deselected, with the reason printed, where Chromium is missing
def test_report_renders_in_headless_chromium_without_console_errors(tmp_path) -> None:
    found = browser()
    if found is None:
        pytest.fail("no Chromium found: install it (Debian/Ubuntu: apt-get install chromium)")
    path = _report().write(tmp_path / "report.html")
    proc = subprocess.run(
        [
            found,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    dom = proc.stdout
    assert dom.count('class="main-svg"') >= 2  # plotly ran and drew both figures
