"""Text profiles of users and items (stage 1 of docs/METHOD.md).

* Item profiles: the data's ready-made item texts as they are, else the ``item_profile``
  template filled from the item metadata (title, year, genres, description, other fields).
* User profiles: the data's ready-made user texts (RLMRec's ``usr_prf.pkl``) as they are, else
  the ``user_profile`` template filled from the user's demographics and the user's **training**
  interactions only. Validation and test interactions are never read here.
* Liked items (the item-centric view's list): per user, the training items rated at least
  ``like_min_rating`` where the data has ratings, else every training item; highest rated
  first, ties in the order of the training array (the data object keeps no timestamps). A user
  whose ratings are all below the threshold has an empty list, shown as "(none)"; it is not
  padded with disliked items.

Profiles are saved in ``RUN/profiles/`` (``users.jsonl``, ``items.jsonl`` and
``manifest.json`` with their sha256), which the embedding and rating stages read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmhni_local.core.errors import ConfigError, DataError, UserError
from llmhni_local.core.io import atomic_path, sha256_text, write_json
from llmhni_local.core.progress import progress_bar
from llmhni_local.engine.prompts import load_template, load_templates

if TYPE_CHECKING:
    from llmhni_local.data.dataset import Interactions
    from llmhni_local.engine.prompts import Template

PROFILES_DIR = "profiles"
SUMMARIES_PARTIAL = "summaries.partial.jsonl"  # a summarising's answers so far (resumable)
_GENRE_KEYS = ("genres", "categories", "category", "genre")
_ITEM_FIELDS = ("title", "year", "genres", "description")
_YEAR_IN_TITLE = re.compile(r"\(\d{4}\)\s*$")


@dataclass(frozen=True)
class ProfileSettings:
    """How profiles are built.

    Args:
        like_min_rating: a training item rated at least this is "liked" (where the data has
            ratings; without ratings every training item is). (default: ``4.0``)
        profile_titles: liked titles named in a user profile. (default: ``5``)
        top_genres: most frequent genres of the liked items named in a user profile.
            (default: ``5``)
        name_chars: an item's short name (in lists of liked items) is cut to this many
            characters. (default: ``120``)
        summarize: rewrite each user profile with the rater LLM, RLMRec style. (default:
            ``False``)
        summary_tokens: most tokens of one summary. (default: ``96``)
        shuffle_share: a study of profile quality, not a setting to use in earnest: this
            share of the user profiles, and the same share of the item profiles, are each
            replaced by another random entity's profile after they are built (and
            summarised), so the text stays fluent and its link to the entity is broken
            (:func:`shuffle_profiles`; docs/DESIGN.md, "Profile quality"). In [0, 1].
            (default: ``0.0``)
        shuffle_seed: which profiles are replaced, and by whose. (default: ``0``)
    """

    like_min_rating: float = 4.0
    profile_titles: int = 5
    top_genres: int = 5
    name_chars: int = 120
    summarize: bool = False
    summary_tokens: int = 96
    shuffle_share: float = 0.0
    shuffle_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.shuffle_share <= 1.0:
            raise ConfigError(f"profiles.shuffle_share must be in [0, 1], got {self.shuffle_share}")
        if self.profile_titles < 0 or self.top_genres < 0:
            raise ConfigError("profiles.profile_titles and profiles.top_genres must be >= 0")
        if self.name_chars < 10:
            raise ConfigError(f"profiles.name_chars must be >= 10, got {self.name_chars}")
        if self.summary_tokens <= 0:
            raise ConfigError(f"profiles.summary_tokens must be > 0, got {self.summary_tokens}")


@dataclass(frozen=True, eq=False)
class Profiles:
    """Profiles of one data set.

    Args:
        users: profile text of each user index.
        items: profile text of each item index.
        item_names: short one-line name of each item (for lists of liked items).
        liked: per user, the liked training items, most liked first.
        hash: sha256 of all of the above.
        info: where they came from (templates, settings, data), for the manifest.
    """

    users: list[str]
    items: list[str]
    item_names: list[str]
    liked: list[np.ndarray]
    hash: str
    info: dict[str, Any]


# ---------------------------------------------------------------------------- items
def item_fields(meta: dict[str, Any]) -> dict[str, str]:
    """Template values of one item from its metadata; other fields go to ``attributes``.

    ``year`` is left empty when the title already ends with a year in brackets.
    """
    meta = {str(k): "" if v is None else str(v).strip() for k, v in (meta or {}).items()}
    genres = next((meta[k] for k in _GENRE_KEYS if meta.get(k)), "")
    used = set(_ITEM_FIELDS) | set(_GENRE_KEYS)
    extra = [f"{k.replace('_', ' ').capitalize()}: {v}" for k, v in meta.items()
             if k not in used and v]
    title, year = meta.get("title", ""), meta.get("year", "")
    if _YEAR_IN_TITLE.search(title):
        year = ""  # "Toy Story (1995)" already says it
    return {"title": title, "year": year, "genres": genres,
            "description": meta.get("description", ""), "attributes": "\n".join(extra)}


def item_profiles(data: "Interactions", template: "Template") -> list[str]:
    """Item profile texts: ready-made item texts as they are, else the template on metadata."""
    if data.item_text is not None:
        _check_len(data.item_text, data.n_items, "item_text", data.name)
        return [str(t).strip() for t in data.item_text]
    if data.item_meta is None:
        raise DataError(f"{data.name}: items have neither text nor metadata; the LLM stages "
                        "need one of them")
    _check_len(data.item_meta, data.n_items, "item_meta", data.name)
    out = []
    for i, meta in enumerate(data.item_meta):
        text = template.render("template", item_fields(meta))
        if not text:
            raise DataError(f"{data.name}: item {_id(data.item_ids, i)} has empty metadata")
        out.append(text)
    return out


def item_names(data: "Interactions", max_chars: int = 120) -> list[str]:
    """One line per item: ``Title (year); genres`` from metadata, else the text's first line."""
    names = []
    for i in range(data.n_items):
        name = ""
        if data.item_meta is not None and data.item_meta[i]:
            f = item_fields(data.item_meta[i])
            if f["title"]:
                name = f["title"] + (f" ({f['year']})" if f["year"] else "")
                name += f"; {f['genres']}" if f["genres"] else ""
        if not name and data.item_text is not None:
            name = next((ln.strip() for ln in str(data.item_text[i]).splitlines()
                         if ln.strip()), "")
        if not name:
            name = f"item {_id(data.item_ids, i)}"
        names.append(name if len(name) <= max_chars else name[:max_chars - 1].rstrip() + "…")
    return names


# ---------------------------------------------------------------------------- users
def liked_items(data: "Interactions", min_rating: float = 4.0) -> list[np.ndarray]:
    """Per user, the liked TRAINING items, highest rated first (ties: training-array order)."""
    train = data.train
    keep = np.ones(len(train), dtype=bool)
    rating = data.train_rating
    if rating is not None:
        keep = rating >= min_rating
    idx = np.flatnonzero(keep)
    users = train[idx, 0]
    # Order: user, then rating descending, then position in the training array.
    key_rating = -rating[idx] if rating is not None else np.zeros(len(idx))
    order = np.lexsort((idx, key_rating, users))
    idx = idx[order]
    users = train[idx, 0]
    bounds = np.searchsorted(users, np.arange(data.n_users + 1))
    items = train[idx, 1]
    out = []
    for u in range(data.n_users):
        seq = items[bounds[u]:bounds[u + 1]]
        _, first = np.unique(seq, return_index=True)  # a repeated interaction counts once
        out.append(seq[np.sort(first)].astype(np.int64))
    return out


def _genres(meta: dict[str, Any] | None) -> list[str]:
    if not meta:
        return []
    value = next((str(meta[k]) for k in _GENRE_KEYS if meta.get(k)), "")
    return [g.strip() for g in value.replace("|", ",").split(",") if g.strip()]


def _title(meta: dict[str, Any] | None, fallback: str) -> str:
    if meta and str(meta.get("title", "")).strip():
        return str(meta["title"]).strip()
    return fallback


def user_profiles(data: "Interactions", template: "Template", liked: list[np.ndarray],
                  names: list[str], settings: ProfileSettings) -> list[str]:
    """User profile texts: ready-made user texts as they are, else the template filled from
    demographics and the liked training items (never validation or test)."""
    if data.user_text is not None:
        _check_len(data.user_text, data.n_users, "user_text", data.name)
        return [str(t).strip() for t in data.user_text]
    if data.user_meta is not None:
        _check_len(data.user_meta, data.n_users, "user_meta", data.name)
    n_train = np.bincount(data.train[:, 0], minlength=data.n_users)
    out = []
    for u in range(data.n_users):
        meta = data.user_meta[u] if data.user_meta is not None else {}
        demo = ", ".join(f"{str(k).replace('_', ' ')}: {v}" for k, v in (meta or {}).items()
                         if str(v).strip())
        items = liked[u]
        counts: Counter[str] = Counter()
        if data.item_meta is not None:
            for i in items:
                counts.update(_genres(data.item_meta[i]))
        # most_common keeps first-seen order among ties: deterministic.
        genres = ", ".join(g for g, _ in counts.most_common(settings.top_genres))
        titles = "; ".join(
            _title(data.item_meta[i] if data.item_meta is not None else None, names[i])
            for i in items[:settings.profile_titles])
        text = template.render("template", {
            "demographics": demo, "top_genres": genres, "liked_titles": titles,
            "n_train": str(int(n_train[u])),
        })
        out.append(text)
    return out


# ---------------------------------------------------------------------------- all together
def make_profiles(data: "Interactions", settings: ProfileSettings | None = None,
                  prompts_dir: str | Path | None = None) -> Profiles:
    """Build every user and item profile (no LLM: see :func:`summarize_users`)."""
    settings = settings or ProfileSettings()
    tpl = load_templates(("user_profile", "item_profile"), prompts_dir)
    names = item_names(data, settings.name_chars)
    liked = liked_items(data, settings.like_min_rating)
    items = item_profiles(data, tpl["item_profile"])
    users = user_profiles(data, tpl["user_profile"], liked, names, settings)
    info = {
        "data": data_fingerprint(data),
        "user_source": "user_text" if data.user_text is not None else "template",
        "item_source": "item_text" if data.item_text is not None else "template",
        "templates": {n: {"version": t.version, "hash": t.hash} for n, t in tpl.items()},
        "settings": dataclasses.asdict(settings),
        "summarized": False,
    }
    return _with_hash(users, items, names, liked, info)


#: Prompts per ``generate`` call when summarising: the progress bar's step (the backend
#: batches within a call as it likes).
SUMMARY_CHUNK = 64


def summarize_users(profiles: Profiles, generate, settings: ProfileSettings,
                    prompts_dir: str | Path | None = None, model_id: str = "",
                    progress: bool = False, partial: str | Path | None = None) -> Profiles:
    """Rewrite every user profile with an LLM (RLMRec style).

    ``generate(list_of_chat_prompts, max_tokens) -> list[str]`` is the rater backend's free
    generation, called on :data:`SUMMARY_CHUNK` prompts at a time so ``progress`` can show
    how far it is (943 MovieLens users took 22 minutes with a 0.5B model on 2 cores); a call
    returning another number of answers than prompts, or an empty answer, is an error (never
    silently replaced by the input profile).

    With ``partial`` (a file), each chunk's answers are appended to it as they come, under a
    key of what produces them (model, template, input profiles, token limit), and a call with
    the same key starts after the last stored chunk: a killed summarising resumes. A file with
    another key is started over. The caller removes it once the profiles are saved.
    """
    tpl = load_template("summarize_user", prompts_dir)
    prompts = [tpl.messages({"user_profile": p}) for p in profiles.users]
    key = sha256_text(json.dumps({"model": model_id, "template": tpl.hash,
                                  "profiles": profiles.hash,
                                  "summary_tokens": settings.summary_tokens}, sort_keys=True))
    texts = _stored_summaries(partial, key, len(prompts)) if partial else []
    if texts:  # rewritten clean, so a line the kill cut short is not appended to
        _store_summaries(partial, key, texts, first=True)
    with progress_bar("summarising users", len(prompts), enabled=progress,
                      done=len(texts)) as bar:
        for start in range(len(texts), len(prompts), SUMMARY_CHUNK):
            chunk = prompts[start:start + SUMMARY_CHUNK]
            answers = [str(t).strip() for t in generate(chunk, settings.summary_tokens)]
            if len(answers) != len(chunk):  # per call: a short and a long one must not cancel
                raise UserError(f"summarize: the backend returned {len(answers)} answers for "
                                f"{len(chunk)} prompts")
            if partial:
                _store_summaries(partial, key, answers, first=not texts)
            texts += answers
            bar.advance(len(chunk))
    empty = [u for u, t in enumerate(texts) if not t]
    if empty:
        raise UserError(f"summarize: the model gave an empty summary for {len(empty)} users "
                        f"(first: user {empty[0]}); try more profiles.summary_tokens or another "
                        "model")
    info = dict(profiles.info, summarized=True, summary_model=model_id,
                templates={**profiles.info["templates"],
                           "summarize_user": {"version": tpl.version, "hash": tpl.hash}})
    return _with_hash(texts, profiles.items, profiles.item_names, profiles.liked, info)


def _stored_summaries(path: str | Path, key: str, n: int) -> list[str]:
    """The answers a killed summarising with the same ``key`` stored in ``path``, in order; a
    line cut short by the kill, and everything after it, is dropped."""
    path = Path(path)
    if not path.is_file():
        return []
    texts: list[str] = []
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if k == 0:
            if row.get("key") != key:
                return []  # made by another model, template or input: start over
            continue
        texts += [str(t) for t in row.get("answers", [])]
    return texts[:n]


def _store_summaries(path: str | Path, key: str, answers: list[str], first: bool) -> None:
    """Append ``answers`` to ``path``; ``first``: replace it (atomically) by the key line and
    ``answers``."""
    line = json.dumps({"answers": answers}, ensure_ascii=False) + "\n"
    if first:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"key": key}) + "\n" + line, encoding="utf-8")
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


def shuffle_profiles(profiles: Profiles, share: float, seed: int) -> Profiles:
    """Replace ``round(share * n)`` user profiles, and as many item profiles in proportion,
    each by the profile of another entity of its kind drawn at random (never itself; a donor
    may give to several). Item names and liked lists stay: only the texts that are embedded
    and read by the rater lose their link. ``info["shuffled"]`` records what was replaced."""
    rng = np.random.default_rng(seed)
    users, n_users = _give_away(profiles.users, share, rng)
    items, n_items = _give_away(profiles.items, share, rng)
    info = dict(profiles.info, shuffled={"share": share, "seed": seed, "users": n_users,
                                         "items": n_items})
    return _with_hash(users, items, profiles.item_names, profiles.liked, info)


def _give_away(texts: list[str], share: float, rng: np.random.Generator) -> tuple[list[str], int]:
    n = len(texts)
    if n < 2:
        return list(texts), 0
    chosen = rng.choice(n, size=int(round(share * n)), replace=False)
    donors = rng.integers(0, n - 1, size=len(chosen))
    donors += donors >= chosen  # skip the entity itself
    out = list(texts)
    for idx, donor in zip(chosen, donors):
        out[idx] = texts[donor]
    return out, len(chosen)


def data_fingerprint(data: "Interactions") -> dict[str, Any]:
    """What identifies the training data the profiles were built from."""
    h = hashlib.sha256(np.ascontiguousarray(data.train, dtype=np.int64).tobytes()).hexdigest()
    return {"name": data.name, "n_users": int(data.n_users), "n_items": int(data.n_items),
            "n_train": int(len(data.train)), "train_sha256": h}


def _with_hash(users, items, names, liked, info) -> Profiles:
    blob = json.dumps({"users": users, "items": items, "names": names,
                       "liked": [a.tolist() for a in liked]}, ensure_ascii=False)
    return Profiles(users=list(users), items=list(items), item_names=list(names),
                    liked=[np.asarray(a, dtype=np.int64) for a in liked],
                    hash=sha256_text(blob), info=info)


# ---------------------------------------------------------------------------- files
def save_profiles(run_dir: str | Path, profiles: Profiles) -> Path:
    """Write ``RUN/profiles/``; the manifest is written last, so a killed write is not used."""
    folder = Path(run_dir) / PROFILES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "users.jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for u, (text, liked) in enumerate(zip(profiles.users, profiles.liked)):
                f.write(json.dumps({"user": u, "text": text, "liked": liked.tolist()},
                                   ensure_ascii=False) + "\n")
    with atomic_path(folder / "items.jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for i, (text, name) in enumerate(zip(profiles.items, profiles.item_names)):
                f.write(json.dumps({"item": i, "text": text, "name": name},
                                   ensure_ascii=False) + "\n")
    write_json(folder / "manifest.json", {"hash": profiles.hash, "n_users": len(profiles.users),
                                          "n_items": len(profiles.items), **profiles.info})
    return folder


def load_profiles(run_dir: str | Path) -> Profiles:
    """Read ``RUN/profiles/`` and check it against its manifest's hash."""
    folder = Path(run_dir) / PROFILES_DIR
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise UserError(f"{folder}: no profiles here; run the `profiles` stage first")
    info = json.loads(manifest.read_text())
    users, liked, items, names = [], [], [], []
    for line in (folder / "users.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        users.append(row["text"])
        liked.append(np.asarray(row["liked"], dtype=np.int64))
    for line in (folder / "items.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        items.append(row["text"])
        names.append(row["name"])
    expected = info.pop("hash")
    info.pop("n_users", None)
    info.pop("n_items", None)
    prof = _with_hash(users, items, names, liked, info)
    if prof.hash != expected:
        raise DataError(f"{folder}: profiles do not match their manifest's hash (edited or "
                        "half-written); run the `profiles` stage again")
    return prof


def _check_len(values, n: int, what: str, name: str) -> None:
    if len(values) != n:
        raise DataError(f"{name}: {what} has {len(values)} entries for {n} ids")


def _id(ids: list[str], i: int) -> str:
    return ids[i] if i < len(ids) else str(i)


