"""One self-contained HTML report of a run: config, findings, figures and tables.

The plotly.js library is embedded once, inline, so the file opens offline and can be mailed or
archived as is (about 5 MB with the library). Text is HTML-escaped; tables come from pandas,
sorted best first by their metric when asked, with rows past the first few folded into a
``<details>`` element; the run configuration is a table of its (flattened) keys. The file is
written atomically.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ._io import atomic_write_text

__all__ = ["Report"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
h2 { margin-top: 2em; color: #1f3f6f; }
table { border-collapse: collapse; font-size: 0.9em; margin: .5em 0 1em; }
.wide { overflow-x: auto; }
table.wrap th, table.wrap td { white-space: normal; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; white-space: nowrap; }
th { background: #f0f4f8; }
table.config th { text-align: left; font-family: ui-monospace, monospace; font-weight: normal; }
table.config td { text-align: left; font-family: ui-monospace, monospace; max-width: 52em;
                  white-space: normal; overflow-wrap: anywhere; }
details > summary { cursor: pointer; color: #1f3f6f; margin: .3em 0; }
.findings li { margin: .4em 0; }
.caption { color: #555; font-size: .9em; margin-top: -.2em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
"""


def _flatten(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, value as text)`` rows of a nested config, keys sorted; a JSON object
    held as a string (e.g. ``ExperimentConfig.to_json()``) is unfolded too.

    Example:
        >>> _flatten({"b": {"y": [1, 2], "x": None}, "a": '{"k": 1.5}'})
        [('a.k', '1.5'), ('b.x', 'None'), ('b.y', '1, 2')]
    """
    rows: list[tuple[str, str]] = []
    for key in sorted(config, key=str):
        value = config[key]
        name = f"{prefix}{key}"
        if isinstance(value, str) and value.startswith("{"):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        if isinstance(value, Mapping) and value:
            rows += _flatten(value, f"{name}.")
        elif isinstance(value, list | tuple):
            rows.append((name, ", ".join(str(v) for v in value)))
        else:
            rows.append((name, str(value)))
    return rows


@dataclass
class Report:
    """An HTML report built block by block, then written with `write`.

    Example:
        >>> import plotly.graph_objects as go
        >>> r = Report("Demo", config={"seed": 0})
        >>> r.findings(["The direction separates the groups."])
        >>> r.figure("Scores", go.Figure(), caption="An empty figure.")
        >>> "<h2>Scores</h2>" in r.html()
        True
    """

    title: str
    config: dict[str, Any] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)
    _n_figures: int = field(default=0, repr=False)

    def heading(self, text: str) -> None:
        self.blocks.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, paragraph: str) -> None:
        self.blocks.append(f"<p>{html.escape(paragraph)}</p>")

    def findings(self, items: list[str], heading: str = "Findings") -> None:
        lis = "".join(f"<li>{html.escape(i)}</li>" for i in items)
        self.blocks.append(f'<h2>{html.escape(heading)}</h2><ul class="findings">{lis}</ul>')

    def figure(self, heading: str, fig: go.Figure, caption: str = "") -> None:
        self.heading(heading)
        include = "inline" if self._n_figures == 0 else False
        self._n_figures += 1
        self.blocks.append(
            fig.to_html(full_html=False, include_plotlyjs=include, div_id=f"fig{self._n_figures}")
        )
        if caption:
            self.blocks.append(f'<p class="caption">{html.escape(caption)}</p>')

    def table(
        self,
        heading: str,
        df: pd.DataFrame,
        caption: str = "",
        digits: int = 3,
        *,
        sort_by: str | Sequence[str] | None = None,
        ascending: bool = False,
        show: int = 12,
        wrap: bool = False,
    ) -> None:
        """A table; sorted by ``sort_by`` (best first: descending unless ``ascending``), with
        the rows after the first ``show`` folded into a ``<details>`` element. ``wrap``: cells
        may break their text over lines (for long labels), instead of one line each.

        Example:
            >>> import pandas as pd
            >>> r = Report("T")
            >>> r.table("AUROC", pd.DataFrame({"layer": range(20), "auroc": range(20)}),
            ...         sort_by="auroc", show=3)
            >>> "<summary>Show the other 17 rows</summary>" in r.html()
            True
        """
        self.heading(heading)
        if sort_by is not None:
            df = df.sort_values(sort_by, ascending=ascending, kind="stable")
        fmt: dict[str, Any] = {
            "index": False,
            "float_format": lambda v: f"{v:.{digits}f}",
            "na_rep": "–",
            "classes": "wrap" if wrap else None,
        }
        # a table wider than the page scrolls inside its own box, so no column is out of reach
        self.blocks.append(f'<div class="wide">{df.head(show).to_html(**fmt)}</div>')
        if len(df) > show:
            rest = len(df) - show
            self.blocks.append(
                f"<details><summary>Show the other {rest} rows</summary>"
                f'<div class="wide">{df.iloc[show:].to_html(**fmt)}</div></details>'
            )
        if caption:
            self.blocks.append(f'<p class="caption">{html.escape(caption)}</p>')

    def _config_table(self) -> str:
        rows = "".join(
            f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>"
            for key, value in _flatten(self.config)
        )
        return f'<table class="config">{rows}</table>'

    def html(self) -> str:
        body = "\n".join(self.blocks)
        config = f"<h2>Run configuration</h2>{self._config_table()}" if self.config else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{body}{config}</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the report atomically and return its path."""
        return atomic_write_text(path, self.html())
