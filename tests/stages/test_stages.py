"""Stage bodies live once (llmhni_local.stages): the pipeline and the CLI give the same result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llmhni_local.core.config import DataSettings
from llmhni_local.core.errors import UserError
from llmhni_local.data.dataset import Interactions
from llmhni_local.engine.api import Rater, unserved
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.llmhni.candidates import CandidateSettings
from llmhni_local.stages.candidates import choose_candidates
from llmhni_local.stages.plan import OUTPUTS, STAGES, missing_outputs
from llmhni_local.stages.profiles import build_profiles, check_can_summarize
from llmhni_local.stages.rec_pre import score_fn_from_matrix
from llmhni_local.text.profiles import ProfileSettings, load_profiles

ROOT = Path(__file__).resolve().parents[2]


def toy() -> Interactions:
    return Interactions(
        name="toy", n_users=3, n_items=4,
        train=np.array([[0, 0], [0, 1], [1, 1], [1, 2], [2, 3]]),
        val=np.array([[0, 2]]), test=np.array([[1, 3]]),
        user_ids=["a", "b", "c"], item_ids=["w", "x", "y", "z"],
        item_meta=[{"title": t, "genres": "Drama"} for t in ("W", "X", "Y", "Z")])


class FakeRater(Rater):
    """A rating backend that only generates: every summary names its input's length."""

    model_id = "fake-rater"
    judge = unserved("judge")
    loglikelihood = unserved("loglikelihood")

    def __init__(self) -> None:
        self.closed = False

    def generate(self, prompts, max_tokens):
        return [f"summary {len(p[-1]['content'])}" for p in prompts]

    def close(self) -> None:
        self.closed = True


def test_build_profiles_summarizes_when_the_setting_says_so(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr("llmhni_local.stages.profiles.make_rating_backend",
                        lambda settings: made.append(FakeRater()) or made[-1])
    settings = ProfileSettings(summarize=True)
    prof = build_profiles(tmp_path, toy(), data_settings=DataSettings(max_users=3),
                                 settings=settings, rater=RaterSettings(backend="transformers"))
    assert made and made[0].closed
    saved = load_profiles(tmp_path)
    assert saved.info["summarized"] is True and saved.users[0].startswith("summary ")
    assert saved.info["data_settings"]["max_users"] == 3 and saved.hash == prof.hash


def test_pipeline_profiles_stage_honours_summarize(tmp_path, monkeypatch):
    """The drift this module removes: ``run`` ignored profiles.summarize."""
    from llmhni_local.stages import profiles
    from llmhni_local.stages.context import Run
    from llmhni_local.stages.settings import load_run_config

    monkeypatch.setattr("llmhni_local.stages.profiles.make_rating_backend",
                        lambda settings: FakeRater())
    cfg = load_run_config(None, {"pipeline.out": str(tmp_path), "profiles.summarize": True,
                                 "rater.backend": "transformers"})
    run = Run(cfg, progress=False, log=lambda _: None)
    run._data = toy()
    summary = profiles.run_stage(run)
    assert summary["summarized"] is True
    assert load_profiles(tmp_path).users[1].startswith("summary ")
    assert load_profiles(tmp_path).info["data_settings"] == json.loads(
        json.dumps(cfg.data.__dict__))


def test_summarize_refused_before_work_for_a_backend_without_generate(monkeypatch):
    class NoGenerate(Rater):  # judges, reads likelihoods, does not generate
        def judge(self, requests):
            return []

        loglikelihood = unserved("loglikelihood")

    monkeypatch.setattr("llmhni_local.stages.profiles.rating_backend_class", lambda name: NoGenerate)
    with pytest.raises(UserError, match="profiles.summarize"):
        check_can_summarize(ProfileSettings(summarize=True), RaterSettings())
    check_can_summarize(ProfileSettings(summarize=False), RaterSettings())  # no check


def test_choose_candidates_writes_parquet_and_description(tmp_path):
    data = toy()
    scores = np.arange(12, dtype=np.float32).reshape(3, 4)
    info = choose_candidates(tmp_path, lambda users: scores[users], data,
                                    CandidateSettings(k_neg=1, k_pos=1), source="matrix")
    on_disk = json.loads((tmp_path / "candidates.json").read_text())
    assert on_disk == json.loads(json.dumps(info))
    assert info["pairs"] == 6 and info["counts"] == {"observed": 3, "unobserved": 3}
    assert info["data"]["n_train"] == 5 and (tmp_path / "candidates.parquet").is_file()


def test_score_matrix_of_the_wrong_shape_is_refused(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((2, 4)))
    with pytest.raises(UserError, match=r"s.npy: shape \(2, 4\)"):
        score_fn_from_matrix(tmp_path / "s.npy", toy())


def test_every_stage_declares_outputs_and_rate_needs_its_store(tmp_path):
    assert set(OUTPUTS) == set(STAGES)
    assert "judgments.sqlite" in OUTPUTS["rate"]
    assert missing_outputs(tmp_path, "rate") == ["judgments.sqlite", "rating.json"]
    assert missing_outputs(tmp_path, "rate", simulated=True) == []
    (tmp_path / "judgments.sqlite").write_bytes(b"")
    (tmp_path / "rating.json").write_text("{}")
    assert missing_outputs(tmp_path, "rate") == []


def test_no_stage_code_copied_between_cli_and_pipeline():
    import shutil

    if shutil.which("duplicates") is None:
        pytest.skip("the duplicates tool is not installed")
    out = subprocess.run(["duplicates", "--most", "200", "--repo", str(ROOT / "llmhni_local")],
                         capture_output=True, text=True, timeout=120).stdout
    pairs = [line for line in out.splitlines() if line.startswith("D")
             and "stages/" in line and "cli/" in line and "boilerplate" not in line]
    assert not pairs, pairs
