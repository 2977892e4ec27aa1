"""The rating stage with a deterministic fake backend: batching, resuming, failures, verdicts.

The SIGKILL test runs the stage in a subprocess, kills it once a batch is stored, reruns it,
and compares the rows with an uninterrupted run in another folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.data.dataset import Interactions
from llmhni_local.engine.api import Judgment, Rater, unserved
from llmhni_local.judgments.plan import (
    RateSettings,
    WorkItem,
    liked_text,
    plan,
    read_rating_manifest,
)
from llmhni_local.judgments.run import rate_candidates
from llmhni_local.judgments.store import JudgmentStore
from llmhni_local.llmhni.candidates import CANDIDATES_FILE, save_candidates, select_candidates
from llmhni_local.text.profiles import make_profiles, save_profiles
from llmhni_local.verdicts.decide import compute_verdicts, load_verdicts, write_verdicts

REPO = Path(__file__).resolve().parents[2]


def decide(run, *args, **kwargs):
    """``write_verdicts`` with the run's audits, as every entry point passes them."""
    from llmhni_local.audit.records import load_audits

    return write_verdicts(run, *args, audits=load_audits(run), **kwargs)


# A deterministic rater: the answer depends on the prompt alone (not on its batch), so an
# interrupted and resumed run must end with exactly the rows of an uninterrupted one. About
# one answer in eight is not a label.
FAKE_SOURCE = '''
import hashlib, json, os, sys, time
from llmhni_local.engine.api import Judgment, LABELS, Rater, unserved



class FakeRater(Rater):
    model_id = "fake@0"
    loglikelihood = unserved("loglikelihood")

    def __init__(self, delay=0.0, fail_mod=8):
        self.delay, self.fail_mod, self.calls, self.closed = delay, fail_mod, [], False

    def judge(self, requests):
        self.requests = list(requests)
        prompts = [r.messages for r in requests]
        self.calls.append(list(prompts))
        if self.delay:
            time.sleep(self.delay)
        out = []
        for messages in prompts:
            h = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
            w = [1.0 + b for b in h[:3]]
            probs = {lab: x / sum(w) for lab, x in zip(LABELS, w)}
            if self.fail_mod and h[3] % self.fail_mod == 0:
                out.append(Judgment("I am not sure.", None, probs, 0.3))
            else:
                best = max(probs, key=probs.get)
                out.append(Judgment(best + ".", best, probs, 0.5 + h[4] / 512))
        return out

    def close(self):
        self.closed = True


if __name__ == "__main__":
    from llmhni_local.judgments.run import RateSettings, rate_candidates

    run, batch, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rate_candidates(run, lambda: FakeRater(delay), model_id="fake@0",
                    settings=RateSettings(batch_size=batch, max_failure_share=1.0),
                    progress=False)
'''


@pytest.fixture(scope="module")
def fake_module(tmp_path_factory):
    path = tmp_path_factory.mktemp("fake") / "fake_rater.py"
    path.write_text(FAKE_SOURCE)
    spec = importlib.util.spec_from_file_location("fake_rater", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.PATH = path
    return mod


def synth(n_users=12, n_items=20, per_user=6, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    pairs, ratings = [], []
    for u in range(n_users):
        for i in rng.choice(n_items, per_user, replace=False):
            pairs.append((u, int(i)))
            ratings.append(float(rng.integers(1, 6)))
    genres = ["Drama", "Comedy", "Action, Thriller", "Animation"]
    return Interactions(
        name="synth", n_users=n_users, n_items=n_items, train=np.array(pairs),
        val=np.zeros((0, 2), dtype=np.int64), test=np.zeros((0, 2), dtype=np.int64),
        train_rating=np.array(ratings, dtype=np.float32),
        user_meta=[{"age": str(20 + u), "occupation": "tester"} for u in range(n_users)],
        item_meta=[{"title": f"Film {i}", "year": str(1980 + i), "genres": genres[i % 4]}
                   for i in range(n_items)])


def make_run(folder: Path, *, k_neg=3, k_pos=2, budget=0, seed=0, **synth_args) -> Path:
    data = synth(seed=seed, **synth_args)
    save_profiles(folder, make_profiles(data))
    scores = np.random.default_rng(seed + 1).normal(size=(data.n_users, data.n_items))
    c = select_candidates(lambda u: scores[u], data.user_item_lists("train"), data.n_items,
                          k_neg=k_neg, k_pos=k_pos, budget=budget, seed=seed)
    save_candidates(folder / CANDIDATES_FILE, c)
    return folder


def rows(folder: Path) -> pd.DataFrame:
    with JudgmentStore(folder, create=False) as s:
        df = s.frame()
    return df.drop(columns=["created_at"]).reset_index(drop=True)


def test_rates_every_pair_in_both_views_and_skips_on_rerun(tmp_path, fake_module):
    run = make_run(tmp_path)
    fake = fake_module.FakeRater()
    rep = rate_candidates(run, lambda: fake, model_id="fake@0", progress=False,
                          settings=RateSettings(batch_size=16, max_failure_share=1.0))
    n_pairs = 12 * 5
    assert rep.rated == 2 * n_pairs and rep.skipped == 0 and rep.engine_started
    assert rep.batches == -(-2 * n_pairs // 16) and fake.closed
    df = rows(run)
    assert len(df) == 2 * n_pairs
    assert set(df["view"]) == {"user", "item"}
    assert rep.failures == int((df["ok"] == 0).sum()) > 0
    assert df.loc[df["ok"] == 0, "label"].isna().all()  # failures never get a label
    assert set(df["kind"]) == {"observed", "unobserved"}
    manifest = read_rating_manifest(run)
    assert manifest["status"] == "done" and manifest["stored"] == 2 * n_pairs

    def never():
        raise AssertionError("no engine may start when everything is stored")

    rep2 = rate_candidates(run, never, model_id="fake@0", progress=False,
                           settings=RateSettings(max_failure_share=1.0))
    assert rep2.rated == 0 and rep2.skipped == 2 * n_pairs and not rep2.engine_started
    # another model id rates everything again, beside the first rows
    rep3 = rate_candidates(run, lambda: type("M", (fake_module.FakeRater,),
                                             {"model_id": "other@1"})(), model_id="other@1",
                           progress=False, settings=RateSettings(max_failure_share=1.0))
    assert rep3.rated == 2 * n_pairs and len(rows(run)) == 4 * n_pairs


def test_prompts_are_grouped_by_user_with_shared_part_first(tmp_path, fake_module):
    run = make_run(tmp_path)
    fake = fake_module.FakeRater(fail_mod=0)
    rate_candidates(run, lambda: fake, model_id="fake@0", progress=False,
                    settings=RateSettings(batch_size=1000))
    assert len(fake.calls) == 1  # one large batch
    sent = fake.calls[0]
    heads = [next(x["content"] for x in m if x["role"] == "user").split("Candidate item:")[0] for m in sent]
    views = ["user" if h.startswith("User profile:") else "item" for h in heads]
    # every request names its view and pair (a backend never guesses them from the prompt)
    assert [r.view for r in fake.requests] == views
    assert all(isinstance(r.user, int) and isinstance(r.item, int) for r in fake.requests)
    # per user: a block of user-centric prompts, then a block of item-centric ones
    blocks = [v for k, v in enumerate(views) if k == 0 or views[k - 1] != v]
    assert blocks == ["user", "item"] * 12
    # each user's profile is sent as one contiguous run (prefix caching)
    user_heads = [h for h, v in zip(heads, views) if v == "user"]
    runs = [h for k, h in enumerate(user_heads) if k == 0 or user_heads[k - 1] != h]
    assert len(runs) == len(set(runs)) == 12


def test_item_view_leaves_the_candidate_out_of_the_liked_list(tmp_path):
    run = make_run(tmp_path)
    from llmhni_local.text.profiles import load_profiles

    p = load_profiles(run)
    u = next(k for k, a in enumerate(p.liked) if len(a) >= 2)
    first = int(p.liked[u][0])
    text = liked_text(p, u, first, 10)
    assert p.item_names[first] not in text.splitlines()[0]
    assert text.count("\n") == len(p.liked[u]) - 2
    assert liked_text(p, u, first, 1).count("\n") == 0  # L = 1
    empty = next((k for k, a in enumerate(p.liked) if len(a) == 0), None)
    if empty is not None:
        assert liked_text(p, empty, 0, 10) == "(none)"


def test_plan_order():
    c = np.array([(1, 5, "observed", 0, 0.0), (0, 2, "unobserved", 0, 1.0),
                  (1, 3, "unobserved", 0, 1.0)],
                 dtype=[("user", "i8"), ("item", "i8"), ("kind", "U10"), ("rank", "i4"),
                        ("score", "f4")])
    todo = {"user": {(0, 2), (1, 5), (1, 3)}, "item": {(1, 3)}}
    assert plan(c, todo) == [WorkItem(0, 2, "user", "unobserved"),
                             WorkItem(1, 5, "user", "observed"),
                             WorkItem(1, 3, "user", "unobserved"),
                             WorkItem(1, 3, "item", "unobserved")]


def test_too_many_failures_stop_with_a_clear_message(tmp_path, fake_module):
    run = make_run(tmp_path)
    fake = fake_module.FakeRater(fail_mod=2)  # about half the answers are not labels
    settings = RateSettings(batch_size=8, max_failure_share=0.2, min_judgments=16)
    with pytest.raises(UserError) as err:
        rate_candidates(run, lambda: fake, model_id="fake@0", progress=False, settings=settings)
    msg = str(err.value)
    assert "were not a label" in msg and "judgments export" in msg
    df = rows(run)
    assert 16 <= len(df) < 120 and len(df) % 8 == 0  # stopped early, whole batches stored
    assert f"{int((df['ok'] == 0).sum())} of {len(df)}" in msg
    assert fake.closed
    assert read_rating_manifest(run)["status"].startswith("stopped")

    def never():
        raise AssertionError("engine started although the stored share is already too high")

    with pytest.raises(UserError, match="were not a label"):
        rate_candidates(run, never, model_id="fake@0", progress=False, settings=settings)


def test_model_id_mismatch_is_refused(tmp_path, fake_module):
    run = make_run(tmp_path)
    with pytest.raises(UserError, match="reports model id"):
        rate_candidates(run, fake_module.FakeRater, model_id="something-else", progress=False)
    assert rows(run).empty


def test_a_changed_prompt_makes_new_rows(tmp_path, fake_module):
    from llmhni_local.engine.prompts import PROMPTS_DIR

    run = make_run(tmp_path / "run", k_neg=1, k_pos=1)
    rate_candidates(run, fake_module.FakeRater, model_id="fake@0", progress=False,
                    settings=RateSettings(max_failure_share=1.0))
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    path = prompts / "rate_item_centric.toml"
    path.write_text(path.read_text().replace("Items the user liked", "Items this user liked"))
    rep = rate_candidates(run, fake_module.FakeRater, model_id="fake@0", progress=False,
                          prompts_dir=prompts, settings=RateSettings(max_failure_share=1.0))
    assert rep.rated == 24 and rep.skipped == 24  # only the item-centric view again


def test_malformed_template_fails_before_an_engine_starts(tmp_path):
    from llmhni_local.engine.prompts import PROMPTS_DIR

    run = make_run(tmp_path / "run", k_neg=1, k_pos=1)
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, prompts)
    path = prompts / "rate_user_centric.toml"
    path.write_text(path.read_text().replace("{item_profile}", "{item_profile"))

    def never():
        raise AssertionError("engine started before the templates were checked")

    with pytest.raises(UserError, match="rate_user_centric.toml.*unbalanced braces"):
        rate_candidates(run, never, model_id="m", prompts_dir=prompts, progress=False)
    assert not (run / "judgments.sqlite").exists()


def test_missing_inputs_are_named(tmp_path, fake_module):
    with pytest.raises(UserError, match="run the `profiles` stage"):
        rate_candidates(tmp_path, fake_module.FakeRater, model_id="fake@0", progress=False)
    save_profiles(tmp_path, make_profiles(synth()))
    with pytest.raises(UserError, match="run the `candidates` stage"):
        rate_candidates(tmp_path, fake_module.FakeRater, model_id="fake@0", progress=False)


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0  # table not created yet


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, fake_module):
    a = make_run(tmp_path / "a", n_users=20)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    batch = 24
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(fake_module.PATH), str(a), str(batch), "0.4"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    db = a / "judgments.sqlite"
    deadline = time.monotonic() + 60
    try:
        while _count(db) < batch:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no batch stored in 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    stored = _count(db)
    total = 2 * 20 * 5
    assert 0 < stored < total and stored % batch == 0  # whole batches only
    # rerun the killed folder, then an uninterrupted run elsewhere
    rep = rate_candidates(a, fake_module.FakeRater, model_id="fake@0", progress=False,
                          settings=RateSettings(batch_size=batch, max_failure_share=1.0))
    assert rep.skipped == stored and rep.rated == total - stored
    rate_candidates(b, fake_module.FakeRater, model_id="fake@0", progress=False,
                    settings=RateSettings(batch_size=batch, max_failure_share=1.0))
    ra, rb = rows(a), rows(b)
    assert len(ra) == total
    pd.testing.assert_frame_equal(ra, rb)


# ---------------------------------------------------------------------------- verdicts
def _judged(rows_):
    return pd.DataFrame(rows_, columns=["user", "item", "view", "label", "ok", "p_high",
                                        "p_medium", "p_low", "label_mass"])


def test_verdict_rule():
    c = np.array([(0, 1, "observed", 0, 0.0), (0, 2, "observed", 1, 0.0),
                  (0, 3, "unobserved", 0, 0.0), (0, 4, "unobserved", 1, 0.0),
                  (1, 1, "observed", 0, 0.0), (1, 2, "unobserved", 0, 0.0)],
                 dtype=[("user", "i8"), ("item", "i8"), ("kind", "U10"), ("rank", "i4"),
                        ("score", "f4")])
    j = _judged([
        (0, 1, "user", "High", 1, 0.8, 0.1, 0.1, 0.9), (0, 1, "item", "High", 1, 0.5, .3, .2, .9),
        (0, 2, "user", "High", 1, 0.8, 0.1, 0.1, 0.9), (0, 2, "item", "Medium", 1, .3, .6, .1, .9),
        (0, 3, "user", "High", 1, 0.9, 0.1, 0.0, 0.9), (0, 3, "item", "High", 1, .6, .3, .1, .9),
        (0, 4, "user", "Low", 1, 0.1, 0.1, 0.8, 0.9), (0, 4, "item", "High", 1, .7, .2, .1, .9),
        (1, 1, "user", None, 0, 0.9, 0.05, 0.05, 0.1), (1, 1, "item", "High", 1, .9, .05, .05, 1),
        (1, 2, "user", "High", 1, 0.9, 0.05, 0.05, 1),  # item view not rated yet
    ])
    v = compute_verdicts(c, j)
    assert v["verdict"].tolist() == ["hard", "noisy", "hard", "noisy", "failed", "unrated"]
    assert v["action"].tolist() == ["keep", "remove", "add", "nothing", "none", "none"]
    assert v["p_hard"].iloc[0] == pytest.approx(0.8 * 0.5)
    assert np.isnan(v["p_hard"].iloc[5])
    from llmhni_local.verdicts.decide import verdict_counts

    counts = verdict_counts(v)
    assert counts["observed"] == {"hard": 1, "noisy": 1, "failed": 1, "unrated": 0, "total": 3}
    assert counts["unobserved"]["unrated"] == 1
    assert counts["actions"] == {"keep": 1, "remove": 1, "add": 1, "nothing": 1}
    assert counts["no_verdict"] == 2


def test_write_verdicts_after_rating(tmp_path, fake_module):
    run = make_run(tmp_path)
    rate_candidates(run, fake_module.FakeRater, model_id="fake@0", progress=False,
                    settings=RateSettings(max_failure_share=1.0))
    counts = decide(run)
    v = load_verdicts(run)
    assert len(v) == 60
    assert counts["observed"]["total"] + counts["unobserved"]["total"] == 60
    assert counts["no_verdict"] == int((v["verdict"] == "failed").sum()) > 0
    df = rows(run)
    user_high = set(map(tuple, df[(df.view == "user") & (df.label == "High")][["user", "item"]]
                        .to_numpy().tolist()))
    item_high = set(map(tuple, df[(df.view == "item") & (df.label == "High")][["user", "item"]]
                        .to_numpy().tolist()))
    hard = set(map(tuple, v[v.verdict == "hard"][["user", "item"]].to_numpy().tolist()))
    assert hard == user_high & item_high


# ---------------------------------------------------------------------------- real tiny model
NETBLOCK = Path(__file__).resolve().parents[1] / "helpers" / "netblock"


def test_rate_stage_with_network_blocked_except_loopback(tmp_path, tiny_llama):
    """The whole stage (templates, profiles, tiny Llama through transformers, store) in a
    subprocess whose every non-loopback connection and name look-up is refused; the run must
    succeed without even trying, and the block must be shown active (in a spawned child too)."""
    run = make_run(tmp_path / "run", n_users=4, k_neg=2, k_pos=1)
    stage_log, probe_log = tmp_path / "stage.log", tmp_path / "probe.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(PYTHONPATH=f"{NETBLOCK}{os.pathsep}{REPO}", NETBLOCK_LOG=str(stage_log),
               LLMHNI_CACHE=str(tmp_path / "cache"))  # the toolkit must go offline by itself
    out = subprocess.run([sys.executable, str(NETBLOCK / "rate_offline.py"), str(run),
                          str(tiny_llama), "transformers", str(probe_log)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    import json

    result = json.loads(line[len("RESULT "):])
    assert result["rated"] == 2 * 4 * 3
    # the block was active: here, in a spawned child, and for name look-ups; loopback worked
    assert result["direct"] == "blocked"
    assert result["dns"] == "blocked"
    assert result["child"] == "NetworkBlocked"
    assert result["loopback"] == "ok"
    assert "10.255.255.1" in probe_log.read_text()
    # and the rate stage never even tried to reach outside
    assert not stage_log.exists() or stage_log.read_text() == "", stage_log.read_text()
    df = rows(run)
    assert len(df) == 24 and set(df["model_id"]) == {result["model_id"]}
    probs = df[["p_high", "p_medium", "p_low"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # read from the logits, renormalised
    assert ((df["label_mass"] > 0) & (df["label_mass"] <= 1)).all()
    assert (df["label"].isna() == (df["ok"] == 0)).all()


def test_cli_stages_end_to_end_with_tiny_llama(tmp_path, tiny_llama, monkeypatch):
    """profiles -> candidates -> rate (transformers) -> verdicts -> judgments, via the CLI."""
    import json

    import typer
    from typer.testing import CliRunner

    from llmhni_local.cli import llm

    app = typer.Typer()
    llm.mount(app)
    runner = CliRunner()
    run = tmp_path / "run"
    cfg = tmp_path / "llm.toml"
    cfg.write_text(f'[data]\nsource = "ml100k"\nmax_users = 5\n\n'
                   f'[rater]\nbackend = "transformers"\nmodel = "{tiny_llama}"\n'
                   f'dtype = "float32"\nmax_tokens = 2\n\n'
                   f'[candidates]\nk_neg = 2\nk_pos = 2\nbudget = 16\n\n'
                   f'[rate]\nbatch_size = 12\nmax_failure_share = 1.0\n\n'
                   f'[train]\nepochs = 3\n')  # another command's table: ignored here
    monkeypatch.setenv("LLMHNI_CACHE", str(tmp_path / "cache"))

    def call(*args):
        res = runner.invoke(app, [str(a) for a in args])
        assert res.exit_code == 0, (res.output, res.exception)
        return res.output

    assert "5 users" in call("profiles", run, "--config", cfg)
    scores = tmp_path / "scores.npy"
    np.save(scores, np.random.default_rng(0).normal(size=(5, 1682)).astype(np.float32))
    assert "16 pairs (8 unobserved, 8 observed)" in call("candidates", run, "--scores", scores,
                                                        "--config", cfg)
    assert "32 answers stored" in call("rate", run, "--config", cfg, "--quiet")
    assert "0 answers stored" in call("rate", run, "--config", cfg, "--quiet")  # resumable
    call("verdicts", "decide", run)
    counts = json.loads((run / "verdicts.json").read_text())
    assert counts["observed"]["total"] == counts["unobserved"]["total"] == 8
    stats = json.loads(call("judgments", "stats", run, "--json"))
    assert stats["rows"] == 32
    call("judgments", "export", run, "--format", "parquet")
    assert len(pd.read_parquet(run / "judgments.parquet")) == 32
    bad = tmp_path / "bad.toml"
    bad.write_text("[rater]\nbakend = 'vllm'\n")
    res = runner.invoke(app, ["rate", str(run), "--config", str(bad)])
    assert res.exit_code != 0 and "unknown setting rater.bakend" in str(res.exception)


VLLM_SOURCE = '''
import os, sys, time


def main():
    from llmhni_local.judgments.run import checked_rater_id
    from llmhni_local.backends import make_rating_backend
    from llmhni_local.judgments.run import RateSettings, rate_candidates
    from llmhni_local.engine.settings import RaterSettings

    model, runs = sys.argv[1], sys.argv[2:]
    settings = RaterSettings(backend="vllm", model=model, dtype="float32", max_tokens=2)
    mid, adapter = checked_rater_id(settings)
    backend = make_rating_backend(settings)
    close, backend.close = backend.close, lambda: None  # one engine for every run below
    pause = float(os.environ.get("BATCH_PAUSE", "0"))
    for run in runs:
        rate_candidates(run, lambda: backend, model_id=mid, adapter=adapter, progress=False,
                        settings=RateSettings(batch_size=8, max_failure_share=1.0),
                        on_batch=lambda n: time.sleep(pause))
    close()


if __name__ == "__main__":  # vLLM spawns its engine
    main()
'''


@pytest.mark.slow
def test_sigkill_then_rerun_with_vllm(tmp_path, tiny_llama):
    """The same resume check as above, with the tiny Llama through vLLM."""
    script = tmp_path / "vllm_rate.py"
    script.write_text(VLLM_SOURCE)
    a = make_run(tmp_path / "a", n_users=10, k_neg=2, k_pos=2)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    env = dict(os.environ, PYTHONPATH=str(REPO), LLMHNI_CACHE=str(tmp_path / "cache"),
               VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_NUM_OF_RESERVED_CPU="0")
    # Its own session, so the engine process it spawns can be cleaned up after the kill.
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_llama), str(a)],
                            env=dict(env, BATCH_PAUSE="1.0"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    db = a / "judgments.sqlite"
    deadline = time.monotonic() + 480
    try:
        while _count(db) < 8:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no batch stored in time"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # the main process only, as `kill -9 PID` would
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # then the orphaned engine
        except ProcessLookupError:
            pass
    stored = _count(db)
    assert 0 < stored < 80 and stored % 8 == 0
    out = subprocess.run([sys.executable, str(script), str(tiny_llama), str(b), str(a)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb) == 80
    pd.testing.assert_frame_equal(ra.drop(columns=["p_high", "p_medium", "p_low", "label_mass"]),
                                  rb.drop(columns=["p_high", "p_medium", "p_low", "label_mass"]))
    cols = ["p_high", "p_medium", "p_low", "label_mass"]
    assert np.allclose(ra[cols].to_numpy(float), rb[cols].to_numpy(float), atol=1e-4)


# ---------------------------------------------------------------------------- label mass, tokens
class _LikelihoodRater(Rater):
    """Likelihood choices with a label mass that depends on the prompt; counts tokens like the
    vLLM backend does (3 of every 4 prompt tokens 'cached')."""

    model_id = "like@0"
    dtype_choice = {"requested": "auto", "dtype": "float32", "reason": "test"}
    loglikelihood = unserved("loglikelihood")

    def __init__(self) -> None:
        self.counts = {"prompts": 0, "prompt_tokens": 0, "cached_tokens": 0}
        self.cached_known = True

    def token_stats(self):
        return dict(self.counts)

    def judge(self, requests):
        import hashlib
        import json as _json

        out = []
        for r in requests:
            h = hashlib.sha256(_json.dumps(r.messages, sort_keys=True).encode()).digest()
            mass = h[0] / 255
            out.append(Judgment(" High", "High", {"High": .5, "Medium": .3, "Low": .2}, mass,
                                decided_by="likelihood"))
            self.counts["prompt_tokens"] += 40
            self.counts["cached_tokens"] += 30
        self.counts["prompts"] += len(requests)
        return out


def test_low_label_mass_is_a_counted_failure(tmp_path) -> None:
    run = make_run(tmp_path)
    settings = RateSettings(max_failure_share=1.0, min_label_mass=0.3)
    rep = rate_candidates(run, _LikelihoodRater, model_id="like@0", progress=False,
                          settings=settings)
    with JudgmentStore(run) as store:
        df = store.frame()
    low = df["label_mass"] < 0.3
    assert low.any() and (~low).any()
    assert df.loc[low, "label"].isna().all() and (df.loc[low, "ok"] == 0).all()
    assert (df.loc[low, "text"] == " High").all()  # raw text kept
    assert (df.loc[~low, "label"] == "High").all()
    assert rep.failures == rep.low_mass == int(low.sum())
    # Token figures of this call: prompt tokens, prefix-cache share, unique tokens a judgment.
    d = rep.as_dict()
    assert d["prompt_tokens"] == 40 * rep.rated and d["cached_tokens"] == 30 * rep.rated
    assert d["cached_share"] == pytest.approx(0.75)
    assert d["unique_tokens_per_judgment"] == pytest.approx(10.0)
    manifest = read_rating_manifest(run)
    assert manifest["dtype"]["dtype"] == "float32"
    assert manifest["last_call"]["cached_share"] == pytest.approx(0.75)
    assert manifest["settings"]["min_label_mass"] == 0.3
    # Another floor is another set of rows (the prompt hash covers it).
    rep2 = rate_candidates(run, _LikelihoodRater, model_id="like@0", progress=False,
                           settings=RateSettings(max_failure_share=1.0, min_label_mass=0.0))
    assert rep2.skipped == 0 and rep2.failures == 0


def test_parse_decisions_ignore_the_mass_floor(tmp_path, fake_module) -> None:
    run = make_run(tmp_path)
    rep = rate_candidates(run, fake_module.FakeRater, model_id="fake@0", progress=False,
                          settings=RateSettings(max_failure_share=1.0, min_label_mass=0.9))
    assert rep.low_mass == 0 and rep.failures < rep.rated  # parsed labels stand
    assert rep.as_dict()["cached_tokens"] is None  # the backend does not say


def test_rate_settings_check_the_floor() -> None:
    from llmhni_local.core.errors import ConfigError

    assert RateSettings().min_label_mass == 0.05
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="rate.min_label_mass"):
            RateSettings(min_label_mass=bad)


def test_checked_rater_id_checks_label_tokens_and_keeps_parse_rows_apart(tiny_llama) -> None:
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.run import checked_rater_id

    like, _ = checked_rater_id(RaterSettings(model=str(tiny_llama)))
    parse, _ = checked_rater_id(RaterSettings(model=str(tiny_llama), decide="parse"))
    assert parse == like + "+parse"
