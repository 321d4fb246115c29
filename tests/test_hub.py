"""A hub id while the hub is out of reach: one clear line at once, or the local hub cache.

No test touches the network: the hub's address is pointed at a local port that refuses
connections (a bound socket that does not listen), and the hub cache at a temporary folder.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.utils._http as hub_http
import pytest
import torch
from huggingface_hub import constants

from liref_lens import load_model
from liref_lens._hub import HubUnreachableError, unreachable_reason


@pytest.fixture
def refused_endpoint() -> Iterator[str]:
    """An http address on this machine where every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connect() gets ECONNREFUSED
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def offline_hub(
    refused_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[float]:
    """The hub out of reach, an empty hub cache; returns the back-off sleeps the hub makes."""
    monkeypatch.setattr(constants, "ENDPOINT", refused_endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    sleeps: list[float] = []
    monkeypatch.setattr(hub_http.time, "sleep", sleeps.append)  # the retry loop's back-off
    return sleeps


def test_unreachable_hub_fails_at_once_in_one_line(offline_hub: list[float]) -> None:
    with pytest.raises(HubUnreachableError) as info:
        load_model("liref-lens-tests/no-such-model", device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "cannot load 'liref-lens-tests/no-such-model': there is no folder" in message
    assert "cannot be reached: ConnectError" in message
    assert "not in the local hub cache" in message
    assert "hf download liref-lens-tests/no-such-model --local-dir DIR" in message
    assert offline_hub == []  # no retry loop ran
    assert isinstance(info.value, OSError)  # the command line prints it as one line


def test_offline_mode_fails_at_once_without_a_request(
    offline_hub: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_request(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request was made in offline mode")

    monkeypatch.setattr(hub_http, "get_session", no_request)
    assert unreachable_reason() == "offline mode is on (HF_HUB_OFFLINE)"
    with pytest.raises(HubUnreachableError, match=r"out of reach \(offline mode is on"):
        load_model("liref-lens-tests/no-such-model", device="cpu")
    assert offline_hub == []


def test_unreachable_hub_loads_a_cached_model(
    offline_hub: list[float], model_dirs: dict[str, Path], make_tiny
) -> None:
    """A model in the local hub cache loads from its snapshot, without the network."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(constants.HF_HUB_CACHE) / "models--liref-lens-tests--tiny-llama"
    shutil.copytree(model_dirs["llama"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    lm = load_model("liref-lens-tests/tiny-llama", device="cpu")
    assert lm.name == "liref-lens-tests/tiny-llama"
    ref = load_model(str(model_dirs["llama"]), device="cpu")
    batch = ref.tokenize(["w1 w2 w3", "w4"])
    with torch.no_grad():
        torch.testing.assert_close(lm.forward(batch), ref.forward(batch), atol=0, rtol=0)
    assert offline_hub == []
