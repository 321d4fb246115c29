"""Steer and read with vLLM: this toolkit's ops inside vLLM's decoder layers, per request.

`load_vllm` starts a vLLM ``LLM`` on the names `liref_lens.load_model` takes (a local Hugging
Face folder, a ``.gguf`` file through the de-quantized cache, ``"smollm2-135m"``) and wraps it
in a `VLLMEngine`:

- `VLLMEngine.generate` / `VLLMEngine.generate_each` / `VLLMEngine.sweep`: generation in which
  every request carries its own ops (`Add`, `ProjectOut`, `Scale`, `paper_scale`, `Compose`, at
  "all", "prompt", "generated" or selector positions), so an alpha sweep with random controls
  is one batch; requests without ops are untouched.
- `VLLMEngine.read`: residual activations at one prompt token (default ``last()``) at prefill,
  as `Activations` with provenance, ready for `fit_directions`.

Prompts go to vLLM as token ids made by `liref_lens.model.encode_prompts` (BOS first, as
`LensModel.encode`), never as text: vLLM's own tokenization drops that BOS. What each site is
inside vLLM is written once, in `liref_lens.backends._vllm_hooks`. The op math is the ops' own
``edit``; this module only decides which rows of vLLM's flattened batch each op edits.

Limits: Llama-layout decoder layers only (``LlamaDecoderLayer``; other layouts are refused with
their class name); ``enforce_eager=True`` for ops and reads (CUDA graphs and torch.compile replay
a recorded forward that hooks cannot steer per request); prefix caching off (it would reuse keys
and values computed under another request's ops); sites ``resid_pre``, ``resid_post``,
``attn_out``, ``mlp_out``; no pipeline parallelism. Needs ``pip install "liref-lens[vllm]"``.

Memory: vLLM's own (weights, KV cache: ``VLLM_CPU_KVCACHE_SPACE`` GiB on a CPU, else
``gpu_memory_utilization``); a read holds ``batch_size x layers x sites x d_model`` floats.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..cache import Activations
from ..generation import Generation
from ..interventions import Op
from ..positions import Position
from ._vllm_hooks import Plan
from ._vllm_model import ModelFacts, check_layout
from ._vllm_plan import build_plan
from ._vllm_run import run_plan

__all__ = ["VLLMEngine", "load_vllm"]

_INSTALL = 'pip install "liref-lens[vllm]" (a CPU-only machine: see docs/how-to/vllm.md)'
_EXTENSION = "liref_lens.backends._vllm_hooks.WorkerExtension"


def load_vllm(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype | None = None,
    tensor_parallel_size: int = 1,
    max_model_len: int | None = None,
    enforce_eager: bool = True,
    gguf_file: str | None = None,
    prepend_bos: bool = True,
    **llm_kwargs: Any,
) -> VLLMEngine:
    """Start vLLM on a model and wrap it (call it under ``if __name__ == "__main__":`` in a
    script: vLLM starts its workers with spawn).

    Args:
        name_or_path: a local Hugging Face folder, a ``.gguf`` file, or ``"smollm2-135m"``.
        dtype: parameter dtype (default float32 without CUDA, bfloat16 with it).
        tensor_parallel_size: split every layer over this many workers (on a CPU, set
            ``VLLM_CPU_OMP_THREADS_BIND``, e.g. ``"0|1"`` for two workers on cores 0 and 1).
        enforce_eager: keep True for ops and reads (see the module docstring).
        prepend_bos: put BOS first in every prompt, as TransformerLens does.
        **llm_kwargs: passed to ``vllm.LLM`` (``gpu_memory_utilization``, ``seed``, ...).

    Example:
        In a script (``docs/how-to/vllm.md``): ``engine = load_vllm("smollm2-135m",
        max_model_len=512)``. What it refuses, before starting anything:

        >>> load_vllm("smollm2-135m", enable_prefix_caching=True)
        Traceback (most recent call last):
        ...
        ValueError: enable_prefix_caching=True would reuse keys and values computed under ...
    """
    if llm_kwargs.get("enable_prefix_caching"):
        raise ValueError(
            "enable_prefix_caching=True would reuse keys and values computed under another "
            "request's ops; the vLLM backend turns prefix caching off, leave it out"
        )
    try:
        from vllm import LLM
    except ImportError as err:
        raise ImportError(f"the vLLM backend needs vLLM: {_INSTALL}") from err
    from ..gguf import resolve_model_path

    path = Path(resolve_model_path(name_or_path, gguf_file=gguf_file)).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"no Hugging Face checkpoint folder at {str(path)!r}; the vLLM backend loads local "
            "folders (huggingface-cli download NAME --local-dir DIR), .gguf files or smollm2-135m"
        )
    if dtype is None:
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    llm = LLM(
        model=str(path),
        dtype=str(dtype).removeprefix("torch."),
        tensor_parallel_size=tensor_parallel_size,
        max_model_len=max_model_len,
        enforce_eager=enforce_eager,
        enable_prefix_caching=False,
        worker_extension_cls=_EXTENSION,
        **llm_kwargs,
    )
    try:
        return VLLMEngine(llm, path, name=os.fspath(name_or_path), prepend_bos=prepend_bos)
    except BaseException:
        llm.llm_engine.engine_core.shutdown()
        raise


class VLLMEngine(ModelFacts):
    """A vLLM ``LLM`` that applies this toolkit's ops per request and reads activations.

    It answers what `Op.check` and `DirectionSet.check_compatible` ask of a model
    (``n_layers``, ``d_model``, ``width``, ``resolve_layer``, ``hook_name``, ``fingerprint``),
    so ops are checked against it as against a `LensModel`. Its fingerprint hashes the
    checkpoint's weights (dtype and tensor parallelism do not change it) and differs from a
    `LensModel`'s of the same checkpoint, as the two TransformerLens backends' do: apply
    directions fitted there with ``allow_transfer=True``, or fit them here with `read`.
    """

    def __init__(self, llm: Any, path: str | Path, *, name: str, prepend_bos: bool = True):
        super().__init__(path, name=name, prepend_bos=prepend_bos)
        self.llm = llm
        info = llm.collective_rpc("liref_lens_layout")[0]
        check_layout(info)
        self.eager: bool = info["eager"]
        self.n_layers = int(info["n_layers"])
        self._plan_ids = itertools.count(1)

    @property
    def dtype_name(self) -> str:
        return str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")

    @property
    def tensor_parallel_size(self) -> int:
        return int(self.llm.llm_engine.vllm_config.parallel_config.tensor_parallel_size)

    @property
    def identity(self) -> str:
        """What decides this engine's numbers besides the weights (for experiment records)."""
        import vllm

        return f"vllm {vllm.__version__}, {self.dtype_name}, tp={self.tensor_parallel_size}"

    def close(self) -> None:
        """Stop vLLM's engine and worker processes (the engine is unusable afterwards)."""
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None:
            core.shutdown()

    def _run(
        self, ids: list[list[int]], plan: Plan, max_new_tokens: int, **kwargs: Any
    ) -> tuple[list[list[int]], dict[str, Any]]:
        return run_plan(self, ids, plan, max_new_tokens, **kwargs)

    def _generation(self, tokens: list[list[int]]) -> Generation:
        texts = [str(self.tokenizer.decode(t, skip_special_tokens=True)) for t in tokens]
        return Generation(tokens=tokens, texts=texts)

    # ----- public API ---------------------------------------------------------------------
    def generate_each(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        ops: Sequence[Sequence[Op]],
        max_new_tokens: int = 16,
        *,
        prepend_bos: bool | None = None,
        **kwargs: Any,
    ) -> Generation:
        """Generate with ops per request: prompt ``i`` under ``ops[i]`` (empty: untouched).

        Prompts are strings or token id lists. Keywords: ``do_sample``, ``temperature``,
        ``seed`` (request ``i`` samples with ``seed + i``), ``stop_at_eos`` (stop after the
        tokenizer's EOS, kept in the tokens, as `liref_lens.generate`), ``progress``.

        Example:
            ``engine.generate_each(["Q: 2 + 3 = ? A:"] * 2, [[], [add_op]], 8)``: the first
            request unsteered, the second under ``add_op``, in one batch.
        """
        ids = self._ids(prompts, prepend_bos)
        if len(ops) != len(ids):
            raise ValueError(f"got {len(ops)} op lists for {len(ids)} prompts; pass one per prompt")
        rows = list(range(len(ids)))
        plan = build_plan(self, next(self._plan_ids), [len(r) for r in ids], ops, rows)
        tokens, _ = self._run(ids, plan, max_new_tokens, **kwargs)
        return self._generation(tokens)

    def generate(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        max_new_tokens: int = 16,
        *,
        ops: Sequence[Op] = (),
        **kwargs: Any,
    ) -> Generation:
        """Like `liref_lens.generate`: every prompt under the same ``ops``."""
        return self.sweep(prompts, [ops], max_new_tokens, **kwargs)[0]

    def sweep(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        op_sets: Sequence[Sequence[Op]],
        max_new_tokens: int = 16,
        *,
        prepend_bos: bool | None = None,
        **kwargs: Any,
    ) -> list[Generation]:
        """Every prompt under every op set, in one vLLM batch; one `Generation` per op set.

        An alpha sweep with random controls is ``op_sets = [[], [Add(alpha=a1)], ...]``.
        """
        ids = self._ids(prompts, prepend_bos)
        n = len(ids)
        all_ids = [row for _ in op_sets for row in ids]
        all_ops = [tuple(s) for s in op_sets for _ in range(n)]
        rows = [i for _ in op_sets for i in range(n)]
        plan = build_plan(self, next(self._plan_ids), [len(r) for r in all_ids], all_ops, rows)
        tokens, _ = self._run(all_ids, plan, max_new_tokens, **kwargs)
        return [self._generation(tokens[j * n : (j + 1) * n]) for j in range(len(op_sets))]

    def read(
        self,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        layers: int | Sequence[int] | None = None,
        sites: Sequence[str] | str = ("resid_pre",),
        position: Position | None = None,
        **kwargs: Any,
    ) -> Activations:
        """Activations at one token of each prompt (default: the last) at prefill, like
        `cache_activations` (same shapes; provenance with this engine's fingerprint).

        Keywords: ``batch_size`` (prompts per vLLM call, default 256), ``prepend_bos``,
        ``progress``. See `liref_lens.backends._vllm_read.read_activations`.

        Example:
            ``acts = engine.read(prompts, layers=[1, 2])``, then ``fit_directions(acts.subset(
            pos), acts.subset(neg), model=engine)`` fits directions that carry this engine's
            fingerprint.
        """
        from ._vllm_read import read_activations

        return read_activations(self, prompts, layers, sites, position, **kwargs)

    def check_matches(self, model: Any, prompt: str) -> None:
        """Raise unless ``model`` (a `LensModel`) is the checkpoint this engine serves: same
        sizes, same tokens for ``prompt``, and the same last-layer residual stream at its last
        token (relative difference below 1e-3 in float32, 5e-2 otherwise)."""
        from ..cache import cache_activations

        if (model.n_layers, model.d_model) != (self.n_layers, self.d_model):
            raise ValueError(
                f"the vLLM engine serves a {self.n_layers}-layer, d_model {self.d_model} model "
                f"but the model has {model.n_layers} layers, d_model {model.d_model}"
            )
        ids = model.encode([prompt])
        if self.encode([prompt]) != ids:
            raise ValueError("the vLLM engine's tokenizer encodes the prompt differently")
        mine = self.read(ids, layers=[-1], sites="resid_post").tensor[0, 0].double()
        ref = cache_activations(model, [prompt], layers=[-1], sites="resid_post", progress=False)
        theirs = ref.tensor[0, 0].double()
        rel = float((mine - theirs).norm() / theirs.norm().clamp_min(1e-12))
        tol = 1e-3 if self.dtype_name == model.dtype_name == "float32" else 5e-2
        if rel > tol:
            raise ValueError(
                f"the vLLM engine ({self.name}) and the model ({model.name}) disagree on the "
                f"last layer's residual stream (relative difference {rel:.1e} > {tol:g}): they "
                "do not serve the same checkpoint; load both from the same folder"
            )

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VLLMEngine({self.name!r}, n_layers={self.n_layers}, d_model={self.d_model}, "
            f"dtype={self.dtype_name}, tp={self.tensor_parallel_size})"
        )
