"""Offline switches and the base-URL guard."""

from __future__ import annotations

import os

import pytest

from llmhni_local.core.errors import ConfigError
from llmhni_local.core.offline import (
    DEFAULT_BASE_URL,
    OFFLINE_ENV,
    check_base_url,
    enforce_offline,
    is_loopback,
)


def test_enforce_offline_sets_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in OFFLINE_ENV:
        monkeypatch.setenv(key, "0")
    enforce_offline()
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE",
                "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        assert os.environ[key] == "1"


def test_enforce_offline_after_hub_import() -> None:
    import huggingface_hub.constants as constants

    enforce_offline()
    assert constants.HF_HUB_OFFLINE is True


@pytest.mark.parametrize("url,expected", [
    (None, DEFAULT_BASE_URL),
    ("", DEFAULT_BASE_URL),
    ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
    ("https://gpu-box.lan:8443/v1", "https://gpu-box.lan:8443/v1"),
    ("http://[::1]:9000/v1", "http://[::1]:9000/v1"),
])
def test_base_url_accepted(url, expected) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize("url,match", [
    ("ftp://127.0.0.1/v1", "http"),
    ("127.0.0.1:8000", "http"),
    ("http:///v1", "no host"),
    ("http://user:pw@127.0.0.1:8000/v1", "credentials"),
    ("http://127.0.0.1:8000/v1?redirect=http://x", "query"),
    ("http://127.0.0.1:99999/v1", "port"),
])
def test_base_url_rejected(url, match) -> None:
    with pytest.raises(ConfigError, match=match):
        check_base_url(url)


def test_is_loopback() -> None:
    assert is_loopback("http://127.0.0.1:8000/v1") and is_loopback("http://localhost/v1")
    assert not is_loopback("http://10.0.0.2:8000/v1")
