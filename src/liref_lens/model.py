"""The model wrapper: one object around a TransformerLens hooked model of either generation.

`LensModel` wraps a TransformerLens 4 ``TransformerBridge`` (the default install) or a legacy
``HookedTransformer`` (TransformerLens 2.x/3.x) and gives the rest of the toolkit one surface:
sizes (``n_layers``, ``d_model``, ``d_mlp``), ``device``, ``tokenizer``, a stable
``fingerprint``, padding-aware tokenization, and **the single place** where a ``(layer, site)``
pair becomes a TransformerLens hook name. Every other module speaks of ``(layer, site)`` only.

Memory: the wrapper holds no activations; it only references the wrapped model.
`LensModel.forward` and `LensModel.step` run the bridge's unhooked attention layers with
PyTorch's SDPA (`liref_lens.attention.fused_attention`) and its unhooked norm layers with the
Hugging Face module (`liref_lens._fusednorm`; ``sdpa=False`` keeps the bridge's own path
everywhere), so a forward pass needs no ``[batch, head, pos, pos]`` tensor where no attention
hook reads one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from ._fusednorm import fused_norms
from ._kvcache import bridge_cache_adapter as _bridge_cache_adapter
from ._kvcache import check_cache_grew as _check_cache_grew
from ._kvcache import forward_parameters as _forward_parameters
from .attention import align_eager_attention, fused_attention
from .positions import StepInfo, step_info

__all__ = ["SITES", "Batch", "LensModel", "available_backends", "load_model"]

#: The hook sites the toolkit reads and writes, with what each one is.
SITES: dict[str, str] = {
    "resid_pre": "residual stream entering block `layer` [d_model]",
    "resid_post": "residual stream leaving block `layer` [d_model]",
    "attn_out": "attention output added to the residual stream in block `layer` [d_model]",
    "mlp_out": "MLP output added to the residual stream in block `layer` [d_model]",
    "mlp_post": "MLP hidden activations after the non-linearity in block `layer` [d_mlp]",
}

# The one mapping from (layer, site) to a hook name, per model generation. TransformerLens 4's
# bridge exposes the legacy names as aliases of its own hook points, so the templates agree
# today; they are kept per backend so a future rename is a one-line change here.
_HOOK_TEMPLATES: dict[str, dict[str, str]] = {
    "bridge": {
        "resid_pre": "blocks.{layer}.hook_resid_pre",
        "resid_post": "blocks.{layer}.hook_resid_post",
        "attn_out": "blocks.{layer}.hook_attn_out",
        "mlp_out": "blocks.{layer}.hook_mlp_out",
        "mlp_post": "blocks.{layer}.mlp.hook_post",
    },
    "hooked_transformer": {
        "resid_pre": "blocks.{layer}.hook_resid_pre",
        "resid_post": "blocks.{layer}.hook_resid_post",
        "attn_out": "blocks.{layer}.hook_attn_out",
        "mlp_out": "blocks.{layer}.hook_mlp_out",
        "mlp_post": "blocks.{layer}.mlp.hook_post",
    },
}

_FINGERPRINT_SAMPLES = 4096
_CONFIG_KEYS = (
    "n_layers",
    "d_model",
    "n_heads",
    "d_head",
    "d_mlp",
    "d_vocab",
    "n_ctx",
    "act_fn",
    "normalization_type",
    "positional_embedding_type",
    "n_key_value_heads",
)


def _bridge_class() -> type | None:
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    return TransformerBridge


def _hooked_class() -> type | None:
    # TransformerLens 4 raises ImportError (with a migration note) for HookedTransformer.
    try:
        from transformer_lens import HookedTransformer
    except ImportError:
        return None
    return HookedTransformer


def available_backends() -> list[str]:
    """The TransformerLens model generations importable in this environment.

    Example:
        >>> set(available_backends()) <= {"bridge", "hooked_transformer"}
        True
    """
    found = []
    if _bridge_class() is not None:
        found.append("bridge")
    if _hooked_class() is not None:
        found.append("hooked_transformer")
    return found


def _backend_of(model: Any) -> str:
    bridge, hooked = _bridge_class(), _hooked_class()
    if bridge is not None and isinstance(model, bridge):
        return "bridge"
    if hooked is not None and isinstance(model, hooked):
        return "hooked_transformer"
    raise TypeError(
        f"expected a TransformerLens TransformerBridge or HookedTransformer, got "
        f"{type(model).__name__}; load one with liref_lens.load_model(name_or_path)"
    )


@dataclass(frozen=True)
class Batch:
    """Token ids and the attention mask of a padded batch (1 = real token, 0 = padding)."""

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device))


class LensModel:
    """A TransformerLens hooked model with the toolkit's single hook-name mapping.

    Args:
        model: a ``transformer_lens.model_bridge.TransformerBridge`` or a legacy
            ``transformer_lens.HookedTransformer``.
        name: optional model id recorded in metadata (hub name or local path).
        sdpa: in `forward` and `step`, run bridge attention layers that no hook reads inside with
            PyTorch's fused attention (see `liref_lens.attention`), and such norm layers with
            the Hugging Face module; ``False`` keeps the bridge's eager attention and its own
            norms everywhere (and `liref_lens.generate` on the bridge). Settable later as
            ``lm.sdpa``.

    Example:
        >>> wrapped = LensModel(lm.model)  # any TransformerBridge / HookedTransformer
        >>> wrapped.hook_name(1, "resid_pre")
        'blocks.1.hook_resid_pre'
    """

    def __init__(self, model: Any, *, name: str | None = None, sdpa: bool = True) -> None:
        if isinstance(model, LensModel):
            raise TypeError("model is already a LensModel; use it directly")
        self.backend = _backend_of(model)
        self.model: Any = model
        self.name = name if name is not None else str(getattr(model.cfg, "model_name", "model"))
        self.sdpa = sdpa
        align_eager_attention(model)  # where the bridge's eager attention is known to be off

    # ----- sizes and placement -------------------------------------------------------------
    @property
    def cfg(self) -> Any:
        return self.model.cfg

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.cfg.d_model)

    @property
    def d_mlp(self) -> int:
        return int(self.model.cfg.d_mlp)

    @property
    def device(self) -> torch.device:
        """Device of the input embedding: where token ids must live (also under a device map)."""
        return next(iter(self.model.parameters())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.model.parameters())).dtype

    @property
    def dtype_name(self) -> str:
        """The parameters' dtype as recorded in artifacts, e.g. ``"float32"``."""
        return str(self.dtype).removeprefix("torch.")

    @property
    def attention_path(self) -> str:
        """``"sdpa"`` where `forward` and `step` run some attention layers fused
        (`liref_lens.attention`), else ``"eager"``. The two paths agree to float rounding in
        float32 but can change greedy tokens in bfloat16, so results record which one ran."""
        from .attention import fusable_layers

        return "sdpa" if self.sdpa and fusable_layers(self.model) else "eager"

    @property
    def tokenizer(self) -> Any:
        tok = getattr(self.model, "tokenizer", None)
        if tok is None:
            raise ValueError(
                "this model has no tokenizer; pass one when loading "
                "(TransformerBridge.boot_transformers(..., tokenizer=tok))"
            )
        return tok

    @property
    def architecture(self) -> str:
        cfg = self.model.cfg
        arch = getattr(cfg, "architecture", None) or getattr(cfg, "original_architecture", None)
        return str(arch) if arch is not None else type(self.model).__name__

    def width(self, site: str) -> int:
        """Vector width at a site: ``d_mlp`` for ``mlp_post``, ``d_model`` otherwise."""
        self._check_site(site)
        return self.d_mlp if site == "mlp_post" else self.d_model

    # ----- the one (layer, site) -> hook name mapping ------------------------------------
    def _check_site(self, site: str) -> None:
        if site not in SITES:
            raise KeyError(f"unknown hook site {site!r}; use one of {', '.join(SITES)}")

    def resolve_layer(self, layer: int) -> int:
        """A layer index checked against the model; negative indices count from the end."""
        try:
            if isinstance(layer, bool):
                raise TypeError
            layer = operator.index(layer)  # ints, numpy and 0-d torch integers; not 1.5 or "1"
        except TypeError:
            raise TypeError(
                f"layer must be an integer, got {layer!r} ({type(layer).__name__})"
            ) from None
        if not -self.n_layers <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer} is out of range for a {self.n_layers}-layer model; "
                f"use 0..{self.n_layers - 1} (or negative indices from the end)"
            )
        return layer % self.n_layers

    def resolve_layers(self, layers: int | Sequence[int] | None) -> list[int]:
        """Checked, de-duplicated layer indices in the order given (None = every layer)."""
        if layers is None:
            return list(range(self.n_layers))
        if isinstance(layers, int):
            layers = [layers]
        resolved = [self.resolve_layer(layer) for layer in layers]
        if not resolved:
            raise ValueError("layers is empty; pass at least one layer or None for all")
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"layers {list(layers)} name the same layer twice")
        return resolved

    def hook_name(self, layer: int, site: str) -> str:
        """The TransformerLens hook name of ``site`` in block ``layer``.

        Example:
            >>> from liref_lens.model import _HOOK_TEMPLATES
            >>> _HOOK_TEMPLATES["bridge"]["mlp_post"].format(layer=3)
            'blocks.3.mlp.hook_post'
        """
        self._check_site(site)
        name = _HOOK_TEMPLATES[self.backend][site].format(layer=self.resolve_layer(layer))
        if not self._has_hook(name):
            raise KeyError(
                f"this {self.architecture} model has no hook {name!r} for site {site!r}; "
                f"sites it offers: {', '.join(s for s in SITES if self._has_site(s))}"
            )
        return name

    def _has_site(self, site: str) -> bool:
        return self._has_hook(_HOOK_TEMPLATES[self.backend][site].format(layer=0))

    def _has_hook(self, name: str) -> bool:
        """Whether the model has hook point ``name``, from a set of names read once.

        The bridge's ``hook_dict`` builds a fresh dictionary with every alias on each access
        (about 1 ms on a 30-layer model), so it is read again only for a name not seen.
        """
        names = self.__dict__.get("_hook_names")
        if names is None or name not in names:
            names = self.__dict__["_hook_names"] = frozenset(self.model.hook_dict)
        return name in names

    # ----- hooks and forward ---------------------------------------------------------------
    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, Callable[..., Any]]]) -> Iterator[None]:
        """Register forward hooks through TransformerLens; they are removed on exit, always."""
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            yield

    @contextmanager
    def prepared(self) -> Iterator[None]:
        """Install, once for the whole block, what every bridge forward and `step` needs.

        That is the fused attention (`liref_lens.attention.fused_attention`, where
        ``self.sdpa``) and the KV-cache argument adapter (`liref_lens._kvcache`). `forward`
        and `step` enter this themselves; a caller running many of them (generation: one
        `step` per token) enters it once around all, so the model's modules are walked once
        instead of on every step. Nested blocks are no-ops; on exit everything is undone.

        Example:
            >>> with lm.prepared():
            ...     logits = lm.forward(lm.tokenize(["w1 w2"]))
        """
        if self.backend != "bridge" or self.__dict__.get("_prepared", False):
            yield
            return
        self.__dict__["_prepared"] = True
        try:
            with (
                _bridge_cache_adapter(self.model, enabled=self._cache_kwarg == "cache"),
                fused_attention(self.model, enabled=self.sdpa),
                fused_norms(self.model, enabled=self.sdpa),
            ):
                yield
        finally:
            self.__dict__["_prepared"] = False

    def forward(
        self,
        batch: Batch,
        *,
        row_ids: Sequence[int] | None = None,
        last_only: bool = False,
        prompt_width: int | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Logits for a padded batch; padding is handled by the attention mask.

        ``row_ids`` (which prompts the rows are) lets per-prompt position selectors resolve;
        ``prompt_width`` (default: the whole batch) is where generated columns start, for the
        intervention rules "prompt" and "generated".
        ``last_only``: return ``[batch, 1, vocab]``, the last position's logits (the last
        real token of every row under left padding); on the bridge the unembedding then runs
        on that position alone (``logits_to_keep=1``), which saves a ``[batch, seq, vocab]``
        product and its memory. On the bridge no KV cache is built (``use_cache=False``
        unless passed) and unhooked attention layers run fused (``self.sdpa``).
        """
        batch = batch.to(self.device)
        rows = tuple(int(r) for r in row_ids) if row_ids is not None else None
        width = int(batch.input_ids.shape[1]) if prompt_width is None else prompt_width
        info = StepInfo(batch.attention_mask, 0, width, rows)
        if last_only and self.backend == "bridge" and self._keeps_logits:
            kwargs["logits_to_keep"] = 1
        if self.backend == "bridge":  # else Hugging Face builds a KV cache nobody reads
            kwargs.setdefault("use_cache", False)
        with (
            step_info(info),
            fused_attention(self.model, enabled=self.sdpa),
            fused_norms(self.model, enabled=self.sdpa),
        ):
            logits = self.model(batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
        return logits[:, -1:] if last_only else logits

    def step(
        self,
        input_ids: Int[Tensor, "batch new"],
        attention_mask: Int[Tensor, "batch total"],
        past: Any = None,
        *,
        last_only: bool = False,
    ) -> tuple[Tensor, Any]:
        """One incremental forward with a key-value cache (for generation).

        Args:
            input_ids: the new tokens (the whole padded prompt on the first call).
            attention_mask: mask over the whole sequence so far, cached past included.
            past: the cache returned by the previous call (None on the first).
            last_only: only the last new token's logits are wanted. Where the Hugging Face
                model can (``logits_to_keep``), the unembedding then runs on that position
                alone, which saves a ``[batch, prompt, vocab]`` product on the first call.

        Returns:
            ``(logits of the new tokens, cache)``; with ``last_only``, ``[batch, 1, vocab]``.
        """
        input_ids = input_ids.to(self.device)
        attention_mask = attention_mask.to(self.device)
        if self.backend == "bridge":
            extra: dict[str, Any] = {}
            if last_only and self._keeps_logits:
                extra["logits_to_keep"] = 1
            # transformers >= 5.24 names the cache ``cache`` (``past_key_values`` is deprecated
            # and the layers pass ``cache=`` to attention, which the bridge does not read).
            extra[self._cache_kwarg] = past
            with self.prepared():
                out = self.model(
                    input_ids,
                    attention_mask=attention_mask,
                    use_cache=True,
                    return_type="logits_and_cache",
                    **extra,
                )
            logits, past = out[0], out[1]
        else:
            if past is None:
                from transformer_lens import TransformerLensKeyValueCache

                past = TransformerLensKeyValueCache.init_cache(
                    self.model.cfg, self.model.cfg.device, input_ids.shape[0]
                )
            new_mask = attention_mask[:, -input_ids.shape[1] :]
            logits = self.model(input_ids, attention_mask=new_mask, past_kv_cache=past)
        _check_cache_grew(past, int(attention_mask.shape[1]))
        return (logits[:, -1:] if last_only else logits), past

    @functools.cached_property
    def _cache_kwarg(self) -> str:
        """The Hugging Face forward's name for the KV cache: ``cache`` (5.24+) or the old one."""
        params = _forward_parameters(getattr(self.model, "original_model", None))
        return "cache" if "cache" in params else "past_key_values"

    @functools.cached_property
    def _keeps_logits(self) -> bool:
        """Whether the bridged Hugging Face model's forward takes ``logits_to_keep``."""
        return "logits_to_keep" in _forward_parameters(getattr(self.model, "original_model", None))

    # ----- tokenization --------------------------------------------------------------------
    @property
    def default_prepend_bos(self) -> bool:
        return bool(getattr(self.model.cfg, "default_prepend_bos", True))

    def encode(self, prompts: Sequence[str], *, prepend_bos: bool | None = None) -> list[list[int]]:
        """Token ids of each prompt, unpadded. BOS follows the model's default unless given."""
        bos = self.default_prepend_bos if prepend_bos is None else prepend_bos
        return encode_prompts(self.tokenizer, prompts, prepend_bos=bos)

    def pad(self, ids: Sequence[Sequence[int]], *, padding_side: str = "left") -> Batch:
        """Pad token id lists into a batch with an attention mask."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        tok = self.tokenizer
        pad_id = tok.pad_token_id
        if pad_id is None:
            pad_id = tok.eos_token_id if tok.eos_token_id is not None else 0
        width = max(len(row) for row in ids)
        self.check_length(width, what="prompt")
        input_ids = torch.full((len(ids), width), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        return Batch(input_ids, mask)

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the model can embed, else None.

        A learned absolute position table has ``n_ctx`` rows. The legacy `HookedTransformer`
        (TransformerLens 3.x) also precomputes its rotary sines and cosines for ``n_ctx``
        positions and cannot extend them further. Otherwise (rotary through the bridge, which
        computes them per call, and other relative schemes) there is no hard limit; a longer
        sequence only leaves the trained range, which the caller may intend.
        """
        kind = getattr(self.model.cfg, "positional_embedding_type", None)
        n_ctx = getattr(self.model.cfg, "n_ctx", None)
        if not isinstance(n_ctx, int):
            return None
        if kind == "standard" or (kind == "rotary" and self.backend == "hooked_transformer"):
            return int(n_ctx)
        return None

    def check_length(self, n_tokens: int, *, what: str = "sequence") -> None:
        """Raise a clear error if ``n_tokens`` positions exceed the model's position table."""
        limit = self.max_positions
        if limit is not None and n_tokens > limit:
            raise ValueError(
                f"the longest {what} has {n_tokens} tokens, but this model embeds at most "
                f"{limit} positions (its position table, n_ctx={limit}); shorten the "
                "prompts (fewer few-shot examples, a shorter template), generate fewer tokens, "
                "or use a model with a longer context"
            )

    def tokenize(
        self,
        prompts: Sequence[str],
        *,
        padding_side: str = "left",
        prepend_bos: bool | None = None,
    ) -> Batch:
        """Tokenize and pad prompts (left padding by default) with an attention mask.

        Example:
            >>> batch = lm.tokenize(["w1 w2 w3", "w1"])
            >>> batch.attention_mask.tolist()
            [[1, 1, 1, 1], [0, 0, 1, 1]]
        """
        return self.pad(self.encode(prompts, prepend_bos=prepend_bos), padding_side=padding_side)

    # ----- identity ------------------------------------------------------------------------
    def config_summary(self) -> dict[str, Any]:
        cfg = self.model.cfg
        summary: dict[str, Any] = {"architecture": self.architecture, "backend": self.backend}
        for key in _CONFIG_KEYS:
            value = getattr(cfg, key, None)
            summary[key] = value if isinstance(value, (int, float, str, bool)) else None
        return summary

    @property
    def fingerprint(self) -> str:
        """A stable id of this model: architecture, backend, config and a hash of its weights.

        The weight hash covers every parameter's name and shape and a strided sample of
        4096 of its values rounded to bfloat16, so the same checkpoint loaded in float32
        or bfloat16 has the same fingerprint, while any other checkpoint does not.
        """
        h = hashlib.sha256(json.dumps(self.config_summary(), sort_keys=True).encode())
        with torch.no_grad():
            for pname, param in sorted(self.model.named_parameters(), key=lambda kv: kv[0]):
                flat = param.detach().reshape(-1)
                n = flat.numel()
                k = min(n, _FINGERPRINT_SAMPLES)  # evenly strided, exact integer indices
                idx = torch.arange(k, device=flat.device) * (n - 1) // max(k - 1, 1)
                sample = flat[idx].to(torch.bfloat16).view(torch.int16).cpu()
                h.update(f"{pname}:{tuple(param.shape)}".encode())
                h.update(sample.numpy().tobytes())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"LensModel({self.name!r}, backend={self.backend}, n_layers={self.n_layers}, "
            f"d_model={self.d_model}, device={self.device})"
        )


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], *, prepend_bos: bool = True
) -> list[list[int]]:
    """Token ids of each prompt as `LensModel.encode` makes them: the tokenizer's ids without
    special tokens, with BOS (else EOS) first when ``prepend_bos``, as TransformerLens does.

    Other engines (`liref_lens.backends`) encode with this, so they see the same tokens.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string; wrap it: [prompt]")
    if len(prompts) == 0:
        raise ValueError("the prompt list is empty; pass at least one prompt")
    tok = tokenizer
    bos_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    if prepend_bos and bos_id is None:
        raise ValueError("the tokenizer has no BOS or EOS token; pass prepend_bos=False")
    out: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        _check_text(i, prompt)
        ids = list(tok(prompt, add_special_tokens=False)["input_ids"])
        if prepend_bos and (not ids or ids[0] != bos_id):
            ids = [bos_id, *ids]
        if not ids:
            raise ValueError(f"prompt {i} ({prompt!r}) is empty after tokenization")
        out.append(ids)
    return out


def length_batches(ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Prompt indices in batches of ``batch_size``, longest prompts first (ties keep prompt
    order), so that each left-padded batch carries little padding."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _check_text(i: int, prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"prompt {i} is a {type(prompt).__name__}, not a string: {prompt!r}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"prompt {i} is not valid Unicode text: {err.reason} at character {err.start} "
            f"({prompt[max(0, err.start - 10) : err.end + 10]!r}); a lone surrogate usually comes "
            "from decoding bytes with errors='surrogateescape' or a broken JSON escape. Clean "
            "it first, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
        ) from None


def _is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().exists()


def _looks_like_path(name_or_path: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything else is meant as a local path.
    return name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1


def _hub_error(name: str, err: Exception) -> OSError:
    text = " ".join(str(err).split())  # one line
    return OSError(
        f"could not load {name!r} from the Hugging Face hub ({type(err).__name__}: {text}). "
        "If this machine is offline, download the model elsewhere "
        f"(`hf download {name} --local-dir DIR`), copy DIR here and pass load_model(DIR)."
    )


def _load_bridge(name: str, device: Any, dtype: torch.dtype, **kwargs: Any) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(name, device=device, dtype=dtype, **kwargs)


def _load_hooked(name: str, device: Any, dtype: torch.dtype, **kwargs: Any) -> Any:
    from transformer_lens import HookedTransformer

    # No weight processing: the residual stream must equal the Hugging Face model's.
    if not _is_local(name):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "HookedTransformer", DeprecationWarning)
            return HookedTransformer.from_pretrained_no_processing(
                name, device=device, dtype=dtype, default_padding_side="left", **kwargs
            )
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = str(Path(name).expanduser().resolve())
    hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = kwargs.pop("tokenizer", None) or AutoTokenizer.from_pretrained(path)
    with tempfile.TemporaryDirectory() as tmp:
        # The legacy converter reads config.json itself (and guesses some architectures from
        # substrings of the directory name, "llama"...): give it the loaded model's config,
        # completed, under a neutral name. The weights come from `hf_model`, not from disk.
        legacy_dir = Path(tmp) / "local-model"
        legacy_dir.mkdir()
        (legacy_dir / "config.json").write_text(json.dumps(_legacy_hf_config(hf_model)))
        cfg = loading.get_pretrained_model_config(
            str(legacy_dir),
            hf_cfg=hf_model.config.to_dict(),
            fold_ln=False,
            device=device,
            dtype=dtype,
        )
        state_dict = loading.get_pretrained_state_dict(str(legacy_dir), cfg, hf_model, dtype=dtype)
    cfg = _sizes_from_weights(cfg, state_dict)
    with warnings.catch_warnings():  # the caller chose the legacy class on purpose
        warnings.filterwarnings("ignore", "HookedTransformer is deprecated", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer, move_to_device=False, default_padding_side="left")
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    model.to(device if device is not None else "cpu")
    _check_legacy_conversion(model, hf_model, path)
    return model


def _check_legacy_conversion(model: Any, hf_model: Any, path: str) -> None:
    """Refuse a legacy conversion whose logits are not the Hugging Face model's.

    The TransformerLens 3.x converters assume things about each architecture (e.g. "Llama has
    no biases": a Llama config with ``attention_bias=True`` loaded with zero biases), so a
    checkpoint they do not fully cover would give another model's numbers without a word.
    One short forward of both models settles it (the Hugging Face model on its CPU copy).
    """
    vocab = int(model.cfg.d_vocab)
    ids = (torch.arange(1, 9) * 7919 % vocab)[None]
    with torch.no_grad():
        want = hf_model(ids).logits.float()
        got = model(ids.to(model.cfg.device)).float().cpu()
    dtype = next(iter(model.parameters())).dtype
    scale = float(want.abs().max())
    tol = max(1e-3, 32 * torch.finfo(dtype).eps) * max(scale, 1.0)
    diff = float((got - want).abs().max())
    if not diff <= tol:
        raise ValueError(
            f"the legacy HookedTransformer conversion of {path} does not reproduce the model "
            f"(greatest logit difference {diff:.3g} on a test input; the TransformerLens 3.x "
            f"converter for {type(hf_model).__name__} ignores part of this config, e.g. "
            "attention or MLP biases); load it with backend='bridge'"
        )


def _legacy_hf_config(hf_model: Any) -> dict[str, Any]:
    """The Hugging Face config as the legacy TransformerLens converter expects to read it.

    The converter predates some of today's config conventions: it reads the architecture from
    ``architectures`` (which a config saved without a model lacks; the loaded class is the
    truth) and GPT-2's context length from ``n_ctx``, a key that configs saved by current
    ``transformers`` no longer carry (``n_positions``, alias ``max_position_embeddings``, is
    the size of the position table).
    """
    config = hf_model.config
    out: dict[str, Any] = config.to_dict()
    out["architectures"] = [type(hf_model).__name__]
    n_positions = getattr(config, "max_position_embeddings", None)
    if isinstance(n_positions, int):
        out["n_ctx"] = n_positions
    return out


# Sizes the legacy converter takes from its own reading of the config, with the converted
# weight that fixes each one: (state-dict key, axis). The weights are the truth; e.g.
# TransformerLens 3.9 sets a GPT-2 model's d_mlp to 4 * n_embd and ignores ``n_inner``.
_WEIGHT_SIZES: dict[str, tuple[str, int]] = {
    "d_mlp": ("blocks.0.mlp.W_in", -1),
    "d_vocab": ("embed.W_E", 0),
    "d_vocab_out": ("unembed.W_U", -1),
}


def _sizes_from_weights(cfg: Any, state_dict: dict[str, Tensor]) -> Any:
    """``cfg`` with its sizes set from the converted weights where the converter misread them."""
    fixed: dict[str, int | None] = {
        field: int(state_dict[key].shape[axis])
        for field, (key, axis) in _WEIGHT_SIZES.items()
        if key in state_dict and getattr(cfg, field, None) != state_dict[key].shape[axis]
    }
    if not fixed:
        return cfg
    fixed["n_params"] = None  # recomputed from the corrected sizes
    return replace(cfg, **fixed)


def check_device(device: str | torch.device | None) -> None:
    """Raise one clear line if ``device`` cannot be used on this machine (None: any).

    Example:
        >>> check_device("cpu")
        >>> check_device("tpu")
        Traceback (most recent call last):
        ...
        ValueError: unknown device 'tpu' ...
    """
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"unknown device {device!r} ({err}); use cpu, cuda, cuda:1 or mps"
        ) from None
    fix = "use device 'cpu' (--device cpu)"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"this torch build ({torch.__version__}) has no CUDA support"
                if torch.version.cuda is None
                else "no CUDA GPU is visible to this process"
            )
            raise ValueError(
                f"device {device!r} was asked for, but {why}; {fix}, or install a CUDA build "
                "of torch (pytorch.org) on a machine with a GPU"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} was asked for, but only {torch.cuda.device_count()} CUDA "
                f"device(s) are visible (cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was asked for, but MPS is not available here; {fix}")


def default_dtype(device: str | torch.device | None) -> torch.dtype:
    """bfloat16 where the model will sit on a CUDA device, float32 elsewhere.

    ``device=None`` means TransformerLens's choice: CUDA when available.

    Example:
        >>> default_dtype("cpu"), default_dtype("cuda:1")
        (torch.float32, torch.bfloat16)
    """
    if device is None:
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_model(
    name_or_path: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    backend: str | None = None,
    gguf_file: str | None = None,
    **kwargs: Any,
) -> LensModel:
    """Load a causal language model through TransformerLens and wrap it.

    Args:
        name_or_path: a hub id (``"EleutherAI/pythia-410m"``), a local directory holding a
            Hugging Face checkpoint (``config.json``, weights, tokenizer files), a ``.gguf``
            file, or a named GGUF model (``"smollm2-135m"``, ``"gemma3-270m"``; see
            `liref_lens.gguf.MODELS` for the packages). A GGUF file is de-quantized once into
            a checkpoint cached under the user cache folder, keyed by the file's hash, and
            checked against its manifest on every load (`liref_lens.gguf`; needs the
            ``[gguf]`` extra). A hub id with the hub out of reach (offline mode, or no answer
            to one request) loads from the local hub cache, or fails at once.
        device: where to put the model (default: TransformerLens's choice, CUDA if present).
        dtype: parameter dtype. Default: bfloat16 on a CUDA device (half the memory, the
            tensor cores' format), float32 elsewhere. Directions are fitted in float64
            whatever this is, and cast per hook.
        backend: ``"bridge"`` (TransformerLens 4 ``TransformerBridge``, the default where
            available) or ``"hooked_transformer"`` (legacy ``HookedTransformer``, loaded
            without weight processing so activations equal the Hugging Face model's).
        gguf_file: the GGUF file inside the folder ``name_or_path``.
        **kwargs: passed to the TransformerLens loader (e.g. ``device_map`` for the bridge).

    Example:
        >>> big = load_model("EleutherAI/pythia-410m", device="cuda")  # doctest: +SKIP
        >>> load_model(str(tmp / "missing"))
        Traceback (most recent call last):
        ...
        FileNotFoundError: no model directory at ...
    """
    check_device(device)
    backends = available_backends()
    if backend is None:
        backend = backends[0] if backends else "bridge"
    if backend not in ("bridge", "hooked_transformer"):
        raise ValueError(f"unknown backend {backend!r}; use 'bridge' or 'hooked_transformer'")
    if backend not in backends:
        raise ImportError(
            f"backend {backend!r} is not available with the installed TransformerLens; "
            f"available: {backends}. 'hooked_transformer' needs transformer-lens<4, "
            "'bridge' needs transformer-lens>=3"
        )
    from ._hub import hub_source
    from .gguf import check_folder, resolve_model_path

    name = os.fspath(name_or_path)
    name_or_path = resolve_model_path(name_or_path, gguf_file=gguf_file)  # checked if GGUF
    local = _is_local(name_or_path)
    if not local and _looks_like_path(name_or_path):
        raise FileNotFoundError(f"no model directory at {name_or_path!r}")
    if local and name_or_path == name:
        check_folder(name_or_path)  # a liref_lens cache folder given directly
    if not local:  # a hub id: fail at once when the hub is out of reach and it is not cached
        name_or_path = hub_source(name_or_path, **kwargs)
        local = _is_local(name_or_path)
    loader = _load_bridge if backend == "bridge" else _load_hooked
    try:
        model = loader(name_or_path, device, dtype or default_dtype(device), **kwargs)
    except OSError as err:
        if local:
            raise
        raise _hub_error(name_or_path, err) from err
    model.eval()
    return LensModel(model, name=name)
