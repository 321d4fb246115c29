"""Third-party deprecations are filtered by category and message; our own warnings stay errors."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import tomllib

from liref_lens._kvcache import KVCacheFallbackWarning
from liref_lens._warnings import THIRD_PARTY_MESSAGES, quiet_third_party_warnings

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# what transformers 5.24 warns (deprecate_kwarg, stacklevel=2: attributed to torch's caller)
PKV = (
    "`past_key_values` is deprecated and will be removed in version 5.40.0 for `forward`. "
    "Use `cache` instead."
)


def _warn(message: str, category: type[Warning], module: str) -> None:
    warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)


def test_pyproject_lists_every_message_filter_of_the_package() -> None:
    ini = tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]
    filters = ini["filterwarnings"]
    assert filters[0] == "error"
    for category, message, why in THIRD_PARTY_MESSAGES:
        assert f"ignore:{message}:{category.__name__}" in filters, message
        assert why
    by_message = [f for f in filters if f.startswith("ignore:") and not f.startswith("ignore::")]
    assert len(by_message) == len(THIRD_PARTY_MESSAGES)


def test_the_kv_cache_deprecation_is_ignored_wherever_it_is_attributed() -> None:
    # under the suite's filters (pyproject), raised from torch's Module.__call__ frame
    _warn(PKV, FutureWarning, "torch.nn.modules.module")
    _warn("HookedTransformer is deprecated; use TransformerBridge", DeprecationWarning, "x.y")


def test_other_warnings_from_the_same_frame_stay_errors() -> None:
    with pytest.raises(FutureWarning, match="something else"):
        _warn("something else is deprecated", FutureWarning, "torch.nn.modules.module")
    with pytest.raises(DeprecationWarning):
        _warn("`past_key_values` is deprecated", DeprecationWarning, "torch.nn.modules.module")


def test_our_own_warnings_stay_errors() -> None:
    with pytest.raises(KVCacheFallbackWarning):
        warnings.warn("falling back", KVCacheFallbackWarning, stacklevel=1)


def test_the_command_line_filters_hide_the_known_ones_and_keep_ours() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party_warnings()
        _warn(PKV, FutureWarning, "torch.nn.modules.module")
        _warn("old API", DeprecationWarning, "transformer_lens.loading")
        _warn("a note", UserWarning, "torch.nn.modules.module")
        warnings.warn("falling back", KVCacheFallbackWarning, stacklevel=1)
    got = [(type(w.message).__name__, str(w.message)) for w in seen]
    assert got == [("UserWarning", "a note"), ("KVCacheFallbackWarning", "falling back")]


def test_each_message_filter_matches_the_text_it_names() -> None:
    samples = {
        r"`past_key_values` is deprecated": PKV,
        r".*HookedTransformer is deprecated": "The HookedTransformer is deprecated",
        r".*\btransformers\b": "This is deprecated in transformers v6",
    }
    assert set(samples) == {m for _, m, _ in THIRD_PARTY_MESSAGES}
    for pattern, text in samples.items():
        assert re.compile(pattern, re.I).match(text), pattern
    assert not re.compile(r".*\btransformers\b", re.I).match("sentence-transformers_x")
