"""Keep every model engine off the network.

The toolkit never reaches a model hub or a telemetry endpoint: :func:`enforce_offline` sets the
offline switches of Hugging Face and vLLM before any engine (or ``transformers``) starts, and
:func:`check_base_url` vets the one URL an HTTP backend may talk to, which must be one the user
named (the default is the loopback address).
"""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit, urlunsplit

from llmhni_local.core.errors import ConfigError

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"

# Set (not merely defaulted): the toolkit has no business with a hub, whatever the shell says.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: never resolve a repo id online
    "TRANSFORMERS_OFFLINE": "1",  # older transformers releases read this one
    "HF_DATASETS_OFFLINE": "1",  # datasets: no hub look-ups
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",  # vLLM: no usage report
    "DO_NOT_TRACK": "1",  # vLLM (and others) honour this too
}


def enforce_offline() -> None:
    """Switch Hugging Face and vLLM to offline mode in this process and its children.

    Call before importing ``transformers`` / ``vllm`` where possible. ``huggingface_hub`` reads
    ``HF_HUB_OFFLINE`` once, at import, so when it is already imported its constant is set too.
    """
    os.environ.update(OFFLINE_ENV)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
        if hasattr(constants, "HF_HUB_DISABLE_TELEMETRY"):
            constants.HF_HUB_DISABLE_TELEMETRY = True


def check_base_url(url: str | None) -> str:
    """Vet the base URL of an OpenAI-compatible server and return it without a trailing slash.

    Only the URL the user named is ever contacted (no redirects, no proxies: see the openai
    backend); ``None`` or ``""`` means the default, ``http://127.0.0.1:8000/v1``. A URL must be
    plain ``http``/``https`` with a host, and carry no credentials, query or fragment (an API
    key goes in ``OPENAI_API_KEY``, never in the URL, so it is not written to manifests).
    """
    if not url:
        return DEFAULT_BASE_URL
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"rater.base_url: {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"rater.base_url: {url!r} names no host")
    if parts.username or parts.password:
        raise ConfigError("rater.base_url: put no credentials in the URL (use OPENAI_API_KEY)")
    if parts.query or parts.fragment:
        raise ConfigError(f"rater.base_url: {url!r} must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"rater.base_url: {url!r} has a bad port") from None
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (used to warn before remote calls)."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")
