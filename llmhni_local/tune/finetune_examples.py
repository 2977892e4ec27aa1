"""Fine-tuning examples: the labels' split, and prompts tokenised as the rating stage builds them.

Both views' chat messages come from ``prompts/`` (:func:`llmhni_local.judgments.run.view_messages`,
same L), rendered by the model's chat template (``engine/chat.py``) and tokenised without added
special tokens; the target is the label's answer tokens (:func:`answer_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.engine.api import LABELS
from llmhni_local.engine.chat import encode_prompts, render_prompt
from llmhni_local.engine.labels import label_token_ids
from llmhni_local.engine.prompts import VIEW_TEMPLATES
from llmhni_local.judgments.plan import view_messages


# ---------------------------------------------------------------------------- split
def split_labels(users: Sequence[int], val_share: float, *, by: str = "user",
                 min_val_users: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """``(train_idx, val_idx, how)``: row indices of the training and validation labels.

    By user: users in a seeded random order are moved to validation until their labels reach
    ``val_share`` of all; no user is on both sides. When that would hold out fewer than
    ``min_val_users`` users (or leave no training user), the split is by pair instead (a
    seeded random ``val_share`` of the rows); ``how`` says which was done.

    >>> tr, va, how = split_labels([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5], 0.34, min_val_users=2)
    >>> how, len(va), sorted(set([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5][k] for k in va)) != []
    ('user', 4, True)
    """
    users = np.asarray(users, dtype=np.int64)
    n = len(users)
    rng = np.random.default_rng(seed)
    if val_share <= 0 or n < 2:
        return np.arange(n), np.zeros(0, dtype=np.int64), "none"
    target = int(round(val_share * n))
    if by == "user":
        uniq = np.unique(users)
        order = rng.permutation(uniq)
        counts = {int(u): int(c) for u, c in zip(*np.unique(users, return_counts=True))}
        chosen, total = [], 0
        for u in order:
            if total >= target:
                break
            chosen.append(int(u))
            total += counts[int(u)]
        if len(chosen) >= min_val_users and len(chosen) < len(uniq):
            mask = np.isin(users, chosen)
            return np.flatnonzero(~mask), np.flatnonzero(mask), "user"
    elif by != "pair":
        raise ConfigError(f"finetune.split must be 'user' or 'pair', got {by!r}")
    perm = rng.permutation(n)
    target = min(max(target, 1), n - 1)
    return np.sort(perm[target:]), np.sort(perm[:target]), "pair"


# ---------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Examples:
    """Tokenised prompts and their label targets.

    ``ids`` is the prompt followed by all but the last answer token, so the model's outputs at
    the last ``len(answer[k])`` positions predict ``answer[k]``; ``answer[k][0]`` is the
    label's first token (the one the backends score)."""

    ids: list[list[int]]
    answer: list[list[int]]
    target: np.ndarray  # label index into LABELS
    view: np.ndarray  # "user" / "item"
    pair: np.ndarray  # (n, 2) user, item


def answer_tokens(tokenizer, how: str = "label") -> dict[str, list[int]]:
    """Per label, the tokens the model should write after a rating prompt.

    ``first_token``: the label's first token (:func:`~llmhni_local.engine.labels.label_token_ids`).
    ``label``: the label's tokens and the end-of-turn token, as the chat template writes an
    assistant turn holding just the label (cut after the first special token).
    """
    first = label_token_ids(tokenizer)
    if how == "first_token":
        return {lab: [tid] for lab, tid in first.items()}
    user = [{"role": "user", "content": "Rate."}]
    prefix = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    base = enc(prefix)
    special = set(tokenizer.all_special_ids)
    out = {}
    for lab in LABELS:
        turn = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": lab}],
                                             tokenize=False)
        full = enc(turn)
        rest = full[len(base):] if full[:len(base)] == base else []
        stop = next((k for k, t in enumerate(rest) if t in special), None)
        if stop is not None:
            rest = rest[:stop + 1]
        elif tokenizer.eos_token_id is not None:
            rest = enc(lab) if not rest else rest
            rest = rest + [tokenizer.eos_token_id]
        if not rest or rest[0] != first[lab]:
            raise UserError(f"the chat template writes the answer {lab!r} as tokens {rest[:4]} "
                            f"that do not start with its scored token {first[lab]}; use "
                            "finetune.answer = \"first_token\"")
        out[lab] = rest
    return out


def build_examples(pairs: Sequence[tuple[int, int]], labels: Sequence[str], profiles, templates,
                   tokenizer, views: Sequence[str], max_liked: int, max_tokens: int,
                   answers: dict[str, list[int]] | None = None) -> Examples:
    """One example per (pair, view): the rating prompt's token ids (then all but the last of
    the answer's tokens) and the answer to learn (default: the label's first token only)."""
    texts, target, view_of, pair_of = [], [], [], []
    for (u, i), lab in zip(pairs, labels):
        for view in views:
            msgs = view_messages(view, int(u), int(i), profiles, templates[VIEW_TEMPLATES[view]],
                                 max_liked)
            texts.append(render_prompt(tokenizer, msgs))
            target.append(LABELS.index(lab))
            view_of.append(view)
            pair_of.append((int(u), int(i)))
    ids = encode_prompts(tokenizer, texts)
    if answers is None:
        answers = answer_tokens(tokenizer, "first_token")
    answer = [list(answers[LABELS[t]]) for t in target]
    ids = [row + a[:-1] for row, a in zip(ids, answer)]
    long = [k for k, row in enumerate(ids) if len(row) > max_tokens]
    if long:
        k = long[0]
        raise UserError(f"{len(long)} prompts are longer than {max_tokens} tokens (first: user "
                        f"{pair_of[k][0]}, item {pair_of[k][1]}, {view_of[k]} view, "
                        f"{len(ids[k])} tokens); shorten the profiles")
    return Examples(ids=ids, answer=answer, target=np.asarray(target, dtype=np.int64),
                    view=np.asarray(view_of),
                    pair=np.asarray(pair_of, dtype=np.int64).reshape(-1, 2))
