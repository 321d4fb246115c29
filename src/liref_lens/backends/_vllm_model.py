"""What a vLLM-served checkpoint is, in the terms ops and directions ask of a model.

`ModelFacts` reads a Hugging Face checkpoint folder (``config.json``, tokenizer, safetensors) and
answers what `Op.check` and `DirectionSet.check_compatible` ask of a `LensModel`: sizes,
``width(site)``, ``resolve_layer``, ``hook_name`` (here: where the site is inside vLLM, or one
line saying why vLLM has no such place) and a ``fingerprint``. It needs no vLLM, so its checks
run (and are tested) anywhere; `liref_lens.backends.vllm.VLLMEngine` builds on it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..model import SITES, encode_prompts
from ._vllm_hooks import KNOWN_LAYERS, SITE_PLACES

__all__ = ["ModelFacts", "check_layout"]

_ATTENTION_INTERNALS = ("q", "k", "v", "z", "pattern", "attn_scores", "rot_q", "rot_k")
_FINGERPRINT_SAMPLES = 4096


def check_layout(info: dict[str, Any]) -> None:
    """Raise unless the decoder layers vLLM built (``info`` from the workers) have a known
    layout and the model is not split into pipeline stages.

    Example:
        >>> check_layout({"known": False, "layer_classes": ["x.Qwen3DecoderLayer"]})
        Traceback (most recent call last):
        ...
        TypeError: vLLM built this model with decoder layers ['x.Qwen3DecoderLayer']; ...
    """
    if not info["known"]:
        raise TypeError(
            f"vLLM built this model with decoder layers {info['layer_classes']}; the "
            f"liref_lens vLLM backend knows the layout of {', '.join(KNOWN_LAYERS)} "
            f"({'; '.join(KNOWN_LAYERS.values())}) only"
        )
    if info.get("pipeline_parallel_size", 1) != 1:
        raise ValueError(
            "pipeline_parallel_size > 1 is not supported by the liref_lens vLLM backend; "
            "use tensor_parallel_size to split the model"
        )


class ModelFacts:
    """A checkpoint folder's sizes, sites, fingerprint and tokenization (no vLLM needed).

    Args:
        path: the Hugging Face checkpoint folder.
        name: the name recorded in provenance (default: the path).
        prepend_bos: put BOS first in every prompt, as TransformerLens does.

    Example:
        >>> facts = ModelFacts(tiny_dir)
        >>> facts.hook_name(-1, "resid_post")
        'model.layers[2] output: hidden_states + residual'
    """

    backend = "vllm"

    def __init__(self, path: str | Path, *, name: str | None = None, prepend_bos: bool = True):
        from transformers import AutoTokenizer

        self.path = Path(path)
        self.name = str(path) if name is None else name
        self.config: dict[str, Any] = json.loads((self.path / "config.json").read_text())
        self.n_layers = int(self.config["num_hidden_layers"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.default_prepend_bos = prepend_bos

    # ----- what ops and directions ask of a model ----------------------------------------
    @property
    def d_model(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def d_mlp(self) -> int:
        return int(self.config["intermediate_size"])

    @property
    def architecture(self) -> str:
        return str((self.config.get("architectures") or ["?"])[0])

    def width(self, site: str) -> int:
        if site not in SITES:
            raise KeyError(f"unknown hook site {site!r}; use one of {', '.join(SITES)}")
        return self.d_mlp if site == "mlp_post" else self.d_model

    def resolve_layer(self, layer: int) -> int:
        """A checked layer index; negative indices count from the end."""
        if isinstance(layer, bool):
            raise TypeError(f"layer must be an integer, got {layer!r}")
        layer = operator.index(layer)
        if not -self.n_layers <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer} is out of range for a {self.n_layers}-layer model; "
                f"use 0..{self.n_layers - 1} (or negative indices from the end)"
            )
        return layer % self.n_layers

    def hook_name(self, layer: int, site: str) -> str:
        """Where ``site`` of block ``layer`` is inside vLLM (raises for a site it lacks)."""
        if site in _ATTENTION_INTERNALS or site.startswith(("attn.", "hook_")):
            raise KeyError(
                f"site {site!r} is inside attention, which vLLM runs as one fused kernel with no "
                "hook; read attention internals with liref_lens on a LensModel"
            )
        if site == "mlp_post":
            raise KeyError(
                "site 'mlp_post' has no place in vLLM (the MLP's hidden units live inside the "
                "fused gate_up_proj, split over tensor-parallel ranks); use a LensModel for "
                f"neuron ops. vLLM sites: {', '.join(SITE_PLACES)}"
            )
        if site not in SITE_PLACES:
            raise KeyError(f"unknown hook site {site!r}; vLLM sites: {', '.join(SITE_PLACES)}")
        return SITE_PLACES[site].replace("[L]", f"[{self.resolve_layer(layer)}]")

    @functools.cached_property
    def fingerprint(self) -> str:
        """A stable id of the checkpoint: config sizes and a strided bfloat16 sample of every
        weight tensor, read from the folder's safetensors files."""
        from safetensors import safe_open

        keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads")
        summary = {k: self.config.get(k) for k in (*keys, "num_key_value_heads", "vocab_size")}
        summary.update(architecture=self.architecture, backend=self.backend)
        h = hashlib.sha256(json.dumps(summary, sort_keys=True).encode())
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{self.path} has no .safetensors weights to fingerprint")
        handles = [safe_open(str(f), "pt") for f in files]
        names = sorted((n, i) for i, f in enumerate(handles) for n in f.keys())
        for name, i in names:
            flat = handles[i].get_tensor(name).reshape(-1)
            n = flat.numel()
            k = min(n, _FINGERPRINT_SAMPLES)
            idx = torch.arange(k) * (n - 1) // max(k - 1, 1)
            h.update(f"{name}:{n}".encode())
            h.update(flat[idx].to(torch.bfloat16).view(torch.int16).numpy().tobytes())
        return h.hexdigest()[:16]

    # ----- prompts ------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str], *, prepend_bos: bool | None = None) -> list[list[int]]:
        """Token ids as `LensModel.encode` makes them (BOS first by default)."""
        bos = self.default_prepend_bos if prepend_bos is None else prepend_bos
        return encode_prompts(self.tokenizer, prompts, prepend_bos=bos)

    def _ids(self, prompts: Sequence[Any], prepend_bos: bool | None) -> list[list[int]]:
        if len(prompts) and all(not isinstance(p, str) for p in prompts):
            return [[int(t) for t in p] for p in prompts]
        return self.encode(list(prompts), prepend_bos=prepend_bos)
