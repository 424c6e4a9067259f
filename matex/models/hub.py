"""open_clip models whose weights come from the Hugging Face Hub (a pretrained tag or ``hf-hub:``),
failing in seconds, not after a minute of retries, when the Hub cannot be reached.

Before any download, one TCP connection to the Hub endpoint (``HF_ENDPOINT``) is tried with a short
timeout. When it fails, the model is built from the local cache only (Hugging Face offline mode);
when the cache lacks it, a :class:`ConfigError` names the ways out: a local weights file,
``HF_HUB_OFFLINE=1`` with a filled cache, or the demo model."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

from ..errors import ConfigError

PROBE_TIMEOUT_S = 2.0


def needs_hub(name: str, pretrained: str | None) -> bool:
    """Whether building ``name`` with ``pretrained`` downloads anything."""
    if name.startswith("hf-hub:"):
        return True
    return bool(pretrained) and not os.path.isfile(str(pretrained))


def hub_endpoint() -> str:
    import huggingface_hub.constants as hf

    return str(getattr(hf, "ENDPOINT", None) or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")


def hub_reachable(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the Hub endpoint opens within ``timeout`` seconds."""
    url = urlparse(endpoint or hub_endpoint())
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_env() -> bool:
    import huggingface_hub.constants as hf

    return bool(getattr(hf, "HF_HUB_OFFLINE", False))


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face offline mode for the duration: downloads resolve from the cache or fail at once."""
    import huggingface_hub.constants as hf

    old = hf.HF_HUB_OFFLINE
    hf.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf.HF_HUB_OFFLINE = old


def ways_out(what: str) -> str:
    return (
        f"{what}. Ways out: pass a local weights file (pretrained='/path/to/weights.bin' or a "
        "checkpoint path as the model), run once with network access so the Hugging Face cache holds "
        "the weights and then set HF_HUB_OFFLINE=1, or use the demo model (load_model('demo'))"
    )


def create_from_hub(name: str, pretrained: str | None, arg: str, arch_arg: str | None = None):
    """``open_clip.create_model_and_transforms(name, pretrained)`` with a fast offline failure.

    ``arg`` names the argument or config key that chose the weights, ``arch_arg`` the one that named
    the architecture (default ``arg``), for the messages."""
    import open_clip

    def create():
        return open_clip.create_model_and_transforms(name, pretrained=pretrained, device="cpu")[0]

    args = (name, pretrained, arg, arch_arg or arg)
    if not needs_hub(name, pretrained):
        return _wrapped(create, *args)
    if offline_env():
        return _wrapped(create, *args, offline="HF_HUB_OFFLINE is set and the cache lacks them")
    if hub_reachable():
        return _wrapped(create, *args)
    with hub_offline():
        return _wrapped(
            create,
            *args,
            offline=f"the Hugging Face Hub ({hub_endpoint()}) cannot be reached and the local cache lacks them",
        )


def _wrapped(create, name: str, pretrained: str | None, arg: str, arch_arg: str, offline: str | None = None):
    """Run ``create``; open_clip's errors become one-line ConfigErrors naming ``arg``."""
    try:
        return create()
    except Exception as e:  # noqa: BLE001 - open_clip/hub raise many kinds; all mean "cannot load"
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "not found in built-ins" in msg or "Unknown model" in msg:
            raise ConfigError(
                f"{arch_arg}: unknown open_clip architecture {name!r}; see open_clip.list_models()"
            ) from None
        what = f"cannot load the weights of open_clip model {name!r} (pretrained={pretrained!r})"
        if offline:
            raise ConfigError(f"{arg}: " + ways_out(f"{what}: {offline}")) from None
        raise ConfigError(f"{arg}: {what}: {msg[:500]}") from None
