"""The likelihood reader and labels scored as token sequences (``judgments/likelihood.py``,
``RaterCore.rate_sequences``, ``TransformersRater.loglikelihood_ids``), on the tiny random
Llama."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmhni_local.backends import make_rating_backend
from llmhni_local.core.errors import UserError
from llmhni_local.engine.api import LoglikelihoodRequest, Rater, unserved
from llmhni_local.engine.prompts import load_template
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.judgments.likelihood import pmi_scores
from llmhni_local.judgments.plan import WorkItem

REPO = Path(__file__).resolve().parents[2]


def _settings(folder: Path, **kw) -> RaterSettings:
    return RaterSettings(**{"backend": "transformers", "model": str(folder), "dtype": "float32",
                            "max_model_len": 512, **kw})


@pytest.fixture(scope="module")
def hf(tiny_llama):
    rater = make_rating_backend(_settings(tiny_llama, batch_size=3))
    yield rater
    rater.close()


def _naive(model, ctx: list[int], cont: list[int]) -> float:
    """log p(cont | ctx) from one full forward pass over ctx + cont (no cache)."""
    import torch

    ids = torch.tensor([ctx + cont])
    with torch.inference_mode():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return float(sum(lp[len(ctx) - 1 + t, tok] for t, tok in enumerate(cont)))


def test_cached_context_gives_the_full_pass_loglikelihood(hf):
    texts = [(c, k) for c in ("user liked Toy Story and Fargo", "the film")
             for k in (" Star Wars", " Heat", " Casablanca 1995 Drama", " a")]
    reqs = [(hf.context_ids(c), hf.continuation_ids(k)) for c, k in texts]
    got = hf.loglikelihood_ids(reqs)  # batch_size 3: a context's 4 continuations in 2 chunks
    want = [_naive(hf.model, c, k) for c, k in reqs]
    assert np.allclose(got, want, atol=1e-4), (got, want)
    assert len({round(g, 3) for g in got}) > 4  # not a constant
    # the request type: texts, tokenised by the backend (context with special tokens)
    tok = hf.tokenizer
    assert reqs[0][0] == tok("user liked Toy Story and Fargo")["input_ids"]
    assert reqs[0][1] == tok(" Star Wars", add_special_tokens=False)["input_ids"]
    assert hf.loglikelihood([LoglikelihoodRequest(c, k) for c, k in texts]) == got


class _Fake(Rater):
    """A backend whose log-likelihood is a known function of the request's texts."""

    judge = unserved("judge")

    def __init__(self):
        self.calls = []

    def loglikelihood(self, requests):
        self.calls.append(list(requests))
        return [-(len(r.context) + 0.5 * len(r.continuation)) for r in requests]


class _Profiles:
    users = ["a user who likes Heat", "another user"]
    items = ["Heat (1995)", "Fargo (1996)", "Alien (1979)"]
    item_names = ["Heat (1995)", "Fargo (1996)", "Alien (1979)"]
    liked = [np.array([1, 2]), np.array([0])]


def test_pmi_is_view_minus_neutral_with_one_neutral_request_per_item():
    tpl = load_template("likelihood")
    fake = _Fake()
    work = [WorkItem(0, 0, "user", "observed"), WorkItem(0, 0, "item", "observed"),
            WorkItem(1, 0, "user", "observed"), WorkItem(1, 2, "item", "unobserved")]
    scores = pmi_scores(fake, work, _Profiles(), tpl, max_liked=5)
    reqs = fake.calls[0]
    assert len(reqs) == len(work) + 2  # items 0 and 2: one neutral request each
    neutral = tpl.render("neutral_context", {})
    assert all(r.context == neutral and r.view is None for r in reqs[len(work):])
    assert [r.item for r in reqs[len(work):]] == [0, 2]
    for k, s in enumerate(scores):
        assert (reqs[k].view, reqs[k].user, reqs[k].item) == (work[k].view, work[k].user,
                                                              work[k].item)
        assert s == pytest.approx(-(len(reqs[k].context) - len(neutral)))
    # the item-centric context of (0, 0) lists items 1 and 2, not 0 itself
    assert "Fargo" in reqs[1].context and "Heat" not in reqs[1].context
    assert reqs[1].continuation == tpl.render("continuation", {"item_name": "Heat (1995)"})


def test_a_non_finite_loglikelihood_is_a_failure_not_a_score():
    class Bad(_Fake):
        def loglikelihood(self, requests):
            return [float("nan")] + [-1.0] * (len(requests) - 1)

    scores = pmi_scores(Bad(), [WorkItem(0, 1, "user", "observed"),
                                WorkItem(1, 1, "user", "observed")],
                        _Profiles(), load_template("likelihood"), max_liked=5)
    assert scores[0] is None and scores[1] == 0.0


@pytest.mark.parametrize("edit, message", [
    ('neutral_context = """\n"""', "neutral context is empty"),
    ('neutral_context = "{user_profile}"', "takes no placeholders"),
    ('continuation = "{item_name}"', "must start with a space"),
    ('continuation = " {item_name} {user_profile}"', "takes only"),
    ('user_context = "{user_profile} {item_name}"', "belongs in the continuation"),
])
def test_bad_likelihood_templates_are_one_line_errors(tmp_path, edit, message):
    src = (REPO / "prompts" / "likelihood.toml").read_text()
    key = edit.split(" = ")[0]
    lines = [ln for ln in src.splitlines()]
    out, skip = [], False
    for ln in lines:  # replace the part named by `edit` (it may span lines)
        if ln.startswith(key + " = "):
            out.append(edit)
            skip = ln.count('"""') == 1
            continue
        if skip:
            skip = '"""' not in ln
            continue
        out.append(ln)
    (tmp_path / "likelihood.toml").write_text("\n".join(out) + "\n")
    with pytest.raises(UserError, match=message):
        load_template("likelihood", tmp_path)


# ---------------------------------------------------------------------------- multi-token labels
@pytest.fixture(scope="module")
def split_llama(tiny_llama, tmp_path_factory):
    """The tiny Llama with a tokenizer trained without the word "Medium", so " Medium" is
    several tokens after the cue (the model's vocabulary is large enough for it)."""
    import importlib.util

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = importlib.util.spec_from_file_location("tiny_for_split", Path(__file__).resolve().parents[1] / "helpers" / "tiny.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)

    folder = tmp_path_factory.mktemp("split") / "model"
    shutil.copytree(tiny_llama, folder)
    words = [w for w in tiny._WORDS if w.lower() != "medium"]
    corpus = [" ".join(words[(k * 7) % len(words):][:12]) for k in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=400, special_tokens=tiny.SPECIAL, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   unk_token="<|endoftext|>")
    fast.chat_template = tiny.CHAT_TEMPLATE
    for f in folder.glob("tokenizer*"):
        f.unlink()
    fast.save_pretrained(str(folder))
    return folder


def test_a_split_label_is_scored_as_the_sum_of_its_tokens(split_llama, tiny_prompts):
    rater = make_rating_backend(_settings(split_llama, batch_size=4))
    try:
        seqs = rater.sequences_for([tiny_prompts(1)[0] + [{"role": "assistant",
                                                           "content": "Relevance:"}]])[0]
        assert len(seqs["Medium"]) > 1 and len(seqs["High"]) >= 1
        prompts = [p + [{"role": "assistant", "content": "Relevance:"}] for p in tiny_prompts(4)]
        judgments = rater.rate(prompts)
        ids = rater.prompt_ids(rater.prompt_texts(prompts))
        for j, row in zip(judgments, ids):
            lls = {lab: _naive(rater.model, row, list(s)) for lab, s in seqs.items()}
            top = max(lls.values())
            z = sum(math.exp(v - top) for v in lls.values())
            for lab, v in lls.items():
                assert j.probs[lab] == pytest.approx(math.exp(v - top) / z, abs=1e-4)
            assert j.label == max(lls, key=lls.get)
            assert j.label_mass == pytest.approx(min(1.0, math.exp(top) * z), rel=1e-3)
    finally:
        rater.close()


def test_labels_that_tokenise_alike_are_refused(tiny_llama):
    from llmhni_local.engine.chat import load_tokenizer
    from llmhni_local.engine.labels import label_sequences

    tok = load_tokenizer(tiny_llama)

    class Lowering:  # a tokenizer that folds case: "High" and "HIGH" are one sequence
        chat_template = tok.chat_template
        name_or_path = "lowering"

        def __call__(self, text, **kw):
            return tok(text.lower(), **kw)

        def apply_chat_template(self, *a, **kw):
            return tok.apply_chat_template(*a, **kw)

        def convert_ids_to_tokens(self, ids):
            return tok.convert_ids_to_tokens(ids)

    assert len(label_sequences(tok, ("High", "HIGH", "Low"), cue="Relevance:")) == 3
    with pytest.raises(UserError, match="same sequence"):
        label_sequences(Lowering(), ("High", "HIGH", "Low"), cue="Relevance:")


# ---------------------------------------------------------------------------- the rate loop
def test_likelihood_mode_rates_resumes_and_feeds_the_threshold_rule(tiny_llama, tmp_path):
    import importlib.util

    from llmhni_local.judgments.plan import RateSettings, read_rating_manifest
    from llmhni_local.judgments.run import rate_candidates
    from llmhni_local.judgments.store import JudgmentStore
    from llmhni_local.verdicts.decide import Audits, write_verdicts
    from llmhni_local.verdicts.rules import VerdictSettings

    spec = importlib.util.spec_from_file_location("rating_fixture_l",
                                                  Path(__file__).resolve().parents[1] / "helpers" / "rating_fixture.py")
    rf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rf)
    run = rf.make_run(tmp_path / "run", n_users=6, n_items=12, per_user=4, k_neg=2, k_pos=2)
    settings = _settings(tiny_llama, batch_size=8)
    starts = []

    def make():
        starts.append(1)
        return make_rating_backend(settings)

    from llmhni_local.judgments.run import checked_rater_id

    mid, _ = checked_rater_id(settings, mode="likelihood")
    rs = RateSettings(mode="likelihood", batch_size=10)
    rep = rate_candidates(run, make, model_id=mid, settings=rs, progress=False)
    assert rep.rated == 2 * 6 * 4 and rep.failures == 0
    with JudgmentStore(run, create=False) as store:
        frame = store.frame()
    assert frame["label"].isna().all() and frame["score"].notna().all()
    assert frame["score"].std() > 0  # scores differ between pairs
    manifest = read_rating_manifest(run)
    assert manifest["mode"] == "likelihood" and manifest["views"]["user"]["template"] == "likelihood"
    # the judge's rows of the same pairs are kept apart by the prompt hash
    assert manifest["views"]["user"]["prompt_hash"] != manifest["views"]["item"]["prompt_hash"]
    again = rate_candidates(run, make, model_id=mid, settings=rs, progress=False)
    assert again.rated == 0 and len(starts) == 1  # resumed: nothing left, no engine
    counts = write_verdicts(run, VerdictSettings(rule="threshold", tau_source="share",
                                                 target_share=0.5), audits=Audits.empty())
    observed = counts["observed"]
    assert observed["hard"] + observed["noisy"] == observed["total"] > 0
    assert 0 < observed["hard"] < observed["total"]
    with pytest.raises(UserError, match="rate.mode = 'likelihood' stores scores"):
        write_verdicts(run, VerdictSettings(), audits=Audits.empty())


def test_likelihood_mode_settings_are_checked_before_any_engine():
    from llmhni_local.core.config import ConfigError
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.stages.settings import load_run_config

    with pytest.raises(ConfigError, match="rate.mode"):
        RateSettings(mode="guess")
    with pytest.raises(ConfigError, match="inprocess"):
        RateSettings(mode="likelihood", engine="ray")
    with pytest.raises(UserError, match="verdicts.rule"):
        load_run_config(None, {"rate.mode": "likelihood", "verdicts.rule": "argmax"})
    with pytest.raises(UserError, match="tune.kind"):
        load_run_config(None, {"rate.mode": "likelihood", "verdicts.rule": "threshold",
                               "tune.kind": "probe"})


def test_a_model_without_a_chat_template_is_refused_as_a_judge_not_as_a_reader(base_llama):
    from llmhni_local.judgments.run import checked_rater_id

    with pytest.raises(UserError, match="no chat template"):
        checked_rater_id(_settings(base_llama), mode="judge")
    mid, _ = checked_rater_id(_settings(base_llama), mode="likelihood")
    assert mid
