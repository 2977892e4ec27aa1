"""Extension points are tables: the factory, the allowed values and the help text agree."""

from __future__ import annotations

import typing

import pytest

from llmhni_local.core.config import DataSettings
from llmhni_local.core.errors import ConfigError


def test_backend_tables_match_the_settings_values():
    from llmhni_local.backends import EMBEDDING_BACKENDS, RATING_BACKENDS, backend_help
    from llmhni_local.engine.settings import EmbedderSettings, RaterSettings

    for table, cls in ((RATING_BACKENDS, RaterSettings), (EMBEDDING_BACKENDS, EmbedderSettings)):
        allowed = typing.get_args(typing.get_type_hints(cls)["backend"])
        assert set(allowed) == set(table)
        assert all(name in backend_help(table) for name in table)


def test_unknown_backend_names_the_known_ones():
    from llmhni_local.backends import rating_backend_class

    with pytest.raises(ConfigError, match="known: vllm, transformers, openai"):
        rating_backend_class("llamacpp")


def test_data_sources_table_drives_load_and_errors(monkeypatch):
    from llmhni_local import data

    seen = []
    monkeypatch.setitem(data.DATA_SOURCES, "toy", data.DataSource(
        lambda arg, s: seen.append(arg) or data.load_data(DataSettings(max_users=5)), True, "toy"))
    assert data.load_data(DataSettings(source="toy:x/y")).n_users == 5 and seen == ["x/y"]
    assert "'toy:PATH'" in data.source_help()
    with pytest.raises(ConfigError, match="'toy:PATH'"):
        data.load_data(DataSettings(source="toy"))  # a path is required


def test_registry_entries_carry_their_locator_and_prepare_step():
    from llmhni_local.weights.registry import KNOWN

    for entry in KNOWN.values():
        assert callable(entry.locate)
        assert entry.needs_prepare == (entry.prepare is not None) == (entry.prepared_dir is not None)
