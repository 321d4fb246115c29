"""A hub id while offline: decide once whether the hub can be reached, and fail at once if not.

Left to itself, ``huggingface_hub`` retries a failed connection five times with back-off
(1 + 2 + 4 + 8 + 8 s) for each file transformers asks for, and only then does transformers
give up: 27 s measured here for a model that is not in the local cache. It skips the network
only in offline mode (``HF_HUB_OFFLINE=1``, read when ``huggingface_hub`` is imported).

`hub_source` asks once: offline mode, else one request to the hub's address with no retry
(the hub's own metadata timeout, ``HF_HUB_ETAG_TIMEOUT``, 10 s by default). If the hub cannot be
reached, a model in the local hub cache is loaded from its snapshot folder, and any other
model is an error at once, in one line that says how to get the files onto this machine.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HubUnreachableError", "hub_source", "unreachable_reason"]


class HubUnreachableError(ConnectionError):
    """The Hugging Face hub cannot be reached and the model is not in the local hub cache."""


def unreachable_reason() -> str | None:
    """Why the hub cannot be reached (offline mode, or the one request failed), else ``None``."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.is_offline_mode():
        return "offline mode is on (HF_HUB_OFFLINE)"
    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as err:  # any failure to get an answer; an HTTP status is an answer
        text = " ".join(str(err).split()) or "no answer"
        return f"{constants.ENDPOINT} cannot be reached: {type(err).__name__}: {text}"
    return None


def hub_source(name: str, **kwargs: Any) -> str:
    """``name`` itself if the hub can be reached, else the cached snapshot folder of ``name``.

    Args:
        name: a hub id, ``"owner/name"`` or ``"name"``.
        **kwargs: the loader's keyword arguments (``revision`` is honoured).

    Raises:
        HubUnreachableError: the hub cannot be reached and ``name`` is not cached (one line,
            with the way to get the model onto this machine).
    """
    reason = unreachable_reason()
    if reason is None:
        return name
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    revision = kwargs.get("revision")
    try:
        return str(snapshot_download(name, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        pass
    raise HubUnreachableError(
        f"cannot load {name!r}: there is no folder of that name here, the Hugging Face hub is "
        f"out of reach ({reason}) and the model is not in the local hub cache "
        f"({constants.HF_HUB_CACHE}); on a machine with network run `hf download {name} "
        "--local-dir DIR`, copy DIR here and pass load_model(DIR)"
    )
