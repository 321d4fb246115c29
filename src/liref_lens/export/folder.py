"""A shareable folder: directions, a config and a model card, ready for a model hub.

`save_pretrained` writes three files into a folder:

- ``directions.safetensors``: the direction set as `DirectionSet.save` writes it (float64
  vectors, provenance JSON and sha256 checksums in the header);
- ``config.json``: the format, the SHA-256 of the float64 vector bytes, the provenance
  again (readable without safetensors), and what the card shows (layer scores, baselines,
  verdicts) as JSON records;
- ``README.md``: a model card generated from those: YAML front matter for the Hugging Face
  Hub (``library_name``, ``tags``, ``base_model`` when given), the model, site, position,
  layers, method, classes and counts, data hash, per-layer norms, and the scores, baselines
  and verdicts when given, with the lines that load and apply the directions.

`from_pretrained` reads a folder back (or downloads a hub repository first) and refuses a
folder whose ``directions.safetensors`` fails its own checksums, holds other vectors than the
SHA-256 in ``config.json`` says, or other provenance. Saving the same set twice gives the same
``config.json`` and ``README.md``; ``directions.safetensors`` holds the same tensor bytes (its
header's keys may come in another order: safetensors does not sort them).

`push_to_hub` uploads a folder with ``huggingface_hub`` (it needs network access and a token
with write access: ``huggingface-cli login`` or ``HF_TOKEN``).

Memory: the folder holds the ``[layer, d_model]`` float64 vectors once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_write_text
from ..directions import DirectionSet

if TYPE_CHECKING:
    import pandas as pd

    from ..model import LensModel

__all__ = ["CONFIG", "FORMAT", "VECTORS", "from_pretrained", "push_to_hub", "save_pretrained"]

FORMAT = "liref_lens.DirectionFolder/1"
VECTORS = "directions.safetensors"
CONFIG = "config.json"
CARD = "README.md"


def _vectors_sha256(ds: DirectionSet) -> str:
    return hashlib.sha256(ds.vectors.numpy().tobytes()).hexdigest()


def _records(table: pd.DataFrame | Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    if table is None:
        return []
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    return [{str(k): _plain(v) for k, v in row.items()} for row in rows]


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars as Python ones, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return []
    cols = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in cols) + " |" for row in rows]
    return lines + [""]


def _card(ds: DirectionSet, config: Mapping[str, Any]) -> str:
    card = config["card"]
    tags = ["liref-lens", "steering-vector", "interpretability", "residual-stream"]
    front = ["---", "library_name: liref-lens", "tags:", *[f"- {t}" for t in tags]]
    if card.get("base_model"):
        front.append(f"base_model: {card['base_model']}")
    if card.get("license"):
        front.append(f"license: {card['license']}")
    front.append("---")
    title = card.get("title") or f"{ds.classes[0]} vs {ds.classes[1]} directions" + (
        f" for {ds.model_name}" if ds.model_name else ""
    )
    params = json.dumps(dict(ds.params), sort_keys=True) if ds.params else "none"
    facts = [
        ("model", ds.model_name or "unknown"),
        ("model fingerprint (liref-lens)", ds.model_fingerprint or "not recorded"),
        ("model layers", ds.n_layers if ds.n_layers is not None else "not recorded"),
        ("model dtype when cached", ds.model_dtype or "not recorded"),
        ("site", ds.site or "not recorded"),
        ("position", ds.position or "not recorded"),
        ("layers", ", ".join(map(str, ds.layers))),
        ("width (d_model)", ds.d_model),
        ("method", f"{ds.method} (params: {params})"),
        ("classes (positive, negative)", f"{ds.classes[0]} ({ds.counts[0]} rows), "
                                         f"{ds.classes[1]} ({ds.counts[1]} rows)"),
        ("data hash (sha256)", ds.data_hash or "not recorded"),
        ("liref-lens version", ds.version),
        ("vectors sha256 (float64 bytes)", config["vectors_sha256"]),
    ]  # fmt: skip
    lines = [*front, "", f"# {title}", ""]
    if card.get("description"):
        lines += [card["description"], ""]
    lines += [
        f"One direction per layer in the residual stream of {ds.model_name or 'a model'}, "
        f"pointing from `{ds.classes[1]}` toward `{ds.classes[0]}`, fitted with "
        "liref-lens.",
        "",
        "## Provenance",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {_cell(v)} |" for k, v in facts],
        "",
        "## Norm per layer",
        "",
        *_table(
            [{"layer": lay, "norm": float(n)} for lay, n in zip(ds.layers, ds.norms(), strict=True)]
        ),
    ]
    for key, heading in (("scores", "Layer scores"), ("baselines", "Baselines")):
        if card.get(key):
            lines += [f"## {heading}", "", *_table(card[key])]
    if card.get("verdicts"):
        lines += ["## Verdicts", "", *[f"- {v}" for v in card["verdicts"]], ""]
    layer = ds.layers[-1]
    lines += [
        "## Use",
        "",
        "```python",
        "from liref_lens import Add, DirectionSet, intervene, load_model",
        "",
        'directions = DirectionSet.from_pretrained("this-folder-or-hub-repo")',
        f'lm = load_model("{ds.model_name or "the-same-model"}")',
        f'with intervene(lm, Add(layers=[{layer}], sites=["{ds.site or "resid_pre"}"], '
        "direction=directions, alpha=1.0)):",
        "    ...  # forward passes or generation here are steered",
        "```",
        "",
        "`from_pretrained` checks the file against the SHA-256 in `config.json`, and applying "
        "the directions checks the model's fingerprint. `liref_lens.export` writes them for "
        "llama.cpp (control-vector GGUF), lm-evaluation-harness (`--model steered`), "
        "steering-vectors and repeng.",
        "",
    ]
    return "\n".join(lines)


def save_pretrained(
    directions: DirectionSet,
    folder: str | os.PathLike[str],
    *,
    scores: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None,
    baselines: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None,
    verdicts: Sequence[str] = (),
    title: str | None = None,
    description: str = "",
    base_model: str | None = None,
    license: str | None = None,
) -> Path:
    """Write ``directions`` as a shareable folder (safetensors, config, model card).

    Each file is written atomically, the vectors first; a folder interrupted between two files
    fails `from_pretrained`'s checksum instead of loading stale vectors.

    Args:
        directions: the direction set.
        folder: where to write (created if missing; files of an earlier save are replaced).
        scores: per-layer scores for the card (e.g. `liref_lens.scores.separation`'s table).
        baselines: baseline results for the card (e.g. ``confound_baselines``'s table).
        verdicts: one sentence per verdict (e.g. which layers beat the trivial readers).
        title: the card's title (default: the classes and the model).
        description: a paragraph for the card.
        base_model: the Hugging Face Hub id of the model, for the card's ``base_model``.
        license: a license id for the card's front matter (e.g. "apache-2.0").

    Example:
        >>> folder = save_pretrained(directions, tmp / "dirs", verdicts=["layer 2 separates"])
        >>> sorted(p.name for p in folder.iterdir())
        ['README.md', 'config.json', 'directions.safetensors']
        >>> from_pretrained(folder).layers == directions.layers
        True
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    directions.save(out / VECTORS)
    config = {
        "format": FORMAT,
        "file": VECTORS,
        "vectors_sha256": _vectors_sha256(directions),
        "direction_set": directions._meta(),
        "card": {
            "title": title,
            "description": description,
            "base_model": base_model,
            "license": license,
            "scores": _records(scores),
            "baselines": _records(baselines),
            "verdicts": [str(v) for v in verdicts],
        },
    }
    body = json.dumps(config, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(out / CONFIG, body + "\n")
    atomic_write_text(out / CARD, _card(directions, config))
    return out


def _local(folder: str | os.PathLike[str]) -> Path:
    path = Path(folder).expanduser()
    if path.is_dir():
        return path
    text = os.fspath(folder)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"no direction folder at {text}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=[VECTORS, CONFIG, CARD]))
    except Exception as err:  # offline, unknown repository, no access: one line, both readings
        raise FileNotFoundError(
            f"no direction folder at {text}, and no Hugging Face Hub repository {text!r} could "
            f"be downloaded ({type(err).__name__}); check the path or the repository id"
        ) from err


def from_pretrained(
    folder: str | os.PathLike[str],
    model: LensModel | None = None,
    *,
    allow_transfer: bool = False,
) -> DirectionSet:
    """Read a folder written by `save_pretrained` (or a hub repository holding one).

    Args:
        folder: a local folder, or a Hugging Face Hub repository id ("user/name"), which is
            downloaded first (needs network access).
        model: if given, the directions are checked against it (`DirectionSet.check_compatible`).
        allow_transfer: passed to that check.

    Raises:
        ValueError: the vectors file fails its checksums, its vectors do not match
            ``config.json``'s SHA-256, or the provenance in ``config.json`` differs from the
            file's.
    """
    path = _local(folder)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG}; write the folder with save_pretrained")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{config_path}: format {config.get('format')!r}, expected {FORMAT!r}")
    vectors = path / str(config.get("file", VECTORS))
    ds = DirectionSet.load(vectors, model, allow_transfer=allow_transfer)
    if _vectors_sha256(ds) != config.get("vectors_sha256"):
        raise ValueError(
            f"the vectors in {vectors} do not match the sha256 in {config_path} (replaced, or "
            "an interrupted save); save the folder again with save_pretrained"
        )
    if config.get("direction_set") != ds._meta():
        raise ValueError(
            f"the provenance in {config_path} differs from the one in {vectors.name}; one was "
            "edited: save the folder again with save_pretrained"
        )
    return ds


def push_to_hub(
    source: DirectionSet | str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload liref-lens directions",
    **card: Any,
) -> str:
    """Upload a direction folder to the Hugging Face Hub; returns the commit's URL.

    ``source`` is a folder written by `save_pretrained` (verified with `from_pretrained`
    before the upload) or a `DirectionSet`, saved first to a temporary folder with ``card``
    (the keywords of `save_pretrained`). The repository is created if it does not exist.
    Needs network access and a write token (``token``, ``HF_TOKEN`` or ``huggingface-cli
    login``).

    Example:
        ```python
        push_to_hub("dirs", "me/smollm2-reasoning-directions")
        # 'https://huggingface.co/me/smollm2-reasoning-directions/commit/...'
        DirectionSet.from_pretrained("me/smollm2-reasoning-directions")  # anyone, later
        ```
    """
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(source, DirectionSet):
            folder = save_pretrained(source, Path(scratch) / "directions", **card)
        else:
            if card:
                raise ValueError("card keywords apply to a DirectionSet; this folder has its card")
            folder = Path(source)
            from_pretrained(folder)
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message,
            allow_patterns=[VECTORS, CONFIG, CARD],
        )
    return str(getattr(info, "commit_url", info))
