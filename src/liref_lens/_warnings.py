"""The third-party warnings liref-lens hides, each by category and message, with the reason.

Our own warnings (`liref_lens._kvcache.KVCacheFallbackWarning`, ...) are never hidden; the
test suite turns them into errors. The message filters below are also listed, in the same
words, under ``filterwarnings`` in ``pyproject.toml`` (``tests/test_warnings.py`` checks that
the two lists agree). A message filter matches wherever the warning is attributed: transformers
reports a deprecated keyword from its caller's frame, which is torch's ``Module.__call__``, so
a filter by module (``transformers.*``) does not catch it.
"""

from __future__ import annotations

import warnings

__all__ = ["THIRD_PARTY_MESSAGES", "THIRD_PARTY_PACKAGES", "quiet_third_party_warnings"]

#: ``(category, message regex, why)``: deprecations we know and cannot act on.
THIRD_PARTY_MESSAGES: tuple[tuple[type[Warning], str, str], ...] = (
    (
        FutureWarning,
        r"`past_key_values` is deprecated",
        "transformers 5.24 renamed the KV-cache keyword to `cache`; the TransformerLens 4 "
        "bridge still passes `past_key_values` to the Hugging Face layers (liref-lens hands "
        "the cache over under both names and checks that it grows)",
    ),
    (
        DeprecationWarning,
        r".*HookedTransformer is deprecated",
        "TransformerLens 3.x deprecates its legacy class, which users choose on purpose",
    ),
    (
        FutureWarning,
        r".*\btransformers\b",
        "transformers' own deprecation notices that name the package, some reported from the "
        "caller's frame",
    ),
)

#: Packages whose DeprecationWarning/FutureWarning the command line hides (by module).
THIRD_PARTY_PACKAGES = (
    "transformers",
    "transformer_lens",
    "torch",
    "datasets",
    "huggingface_hub",
    "accelerate",
    "sklearn",
    "scipy",
    "pandas",
    "numpy",
    "plotly",
    "safetensors",
    "tokenizers",
    "jaxtyping",
    "typeguard",
    "einops",
    "tqdm",
    "gguf",
)


def quiet_third_party_warnings() -> None:
    """Hide the known third-party deprecations (call inside ``warnings.catch_warnings()``).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     quiet_third_party_warnings()
        ...     warnings.warn_explicit(
        ...         "`past_key_values` is deprecated and will be removed in version 5.40.0",
        ...         FutureWarning, "module.py", 1, module="torch.nn.modules.module")
        ...     warnings.warn("our own", UserWarning)
        >>> [str(w.message) for w in seen]
        ['our own']
    """
    deprecations: tuple[type[Warning], ...] = (DeprecationWarning, FutureWarning)
    for package in THIRD_PARTY_PACKAGES:
        for kind in deprecations:
            warnings.filterwarnings("ignore", category=kind, module=rf"{package}(\.|$)")
    for category, message, _ in THIRD_PARTY_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=category)
