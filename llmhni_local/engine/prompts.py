"""Prompt templates in ``prompts/``: loading, validation, hashing, rendering.

Each template is a small TOML file with a ``version`` and its text parts: ``template`` for the
profile templates, ``system`` and ``user`` for the chat prompts, and for the rating prompts an
optional ``assistant`` part: the answer cue (e.g. ``Relevance:``) that opens the assistant's turn,
so that the very next token the model writes is the label (docs/DESIGN.md, "Reading the answer
at the label"). The cue takes no placeholders. Placeholders are
``{name}``; a literal brace is written ``{{`` or ``}}``. Every template is checked when it is
loaded, before any engine starts: an unknown or missing placeholder, unbalanced braces, a
positional ``{}`` or a format spec (``{x:>5}``, ``{x.attr}``, ``{x!r}``) is a
:class:`~llmhni_local.core.errors.UserError` naming the file.

The hash of a template is the sha256 of its name, version and parts (not of its comments), so
editing a prompt's text changes the hash, and the judgment store keeps the old and new answers
apart.
"""

from __future__ import annotations

import json
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import sha256_text
from llmhni_local.core.resources import shipped_dir
from llmhni_local.engine.api import LABELS

#: The templates: ``prompts/`` of a checkout, or the copy an installed wheel carries.
PROMPTS_DIR = shipped_dir("prompts")

#: How the labels read inside a prompt (``{labels}``).
LABELS_TEXT = f"{', '.join(LABELS[:-1])} or {LABELS[-1]}"


@dataclass(frozen=True)
class Spec:
    """What one template may and must hold.

    Args:
        parts: the text parts the file must have, in order.
        allowed: placeholders any part may use.
        required: placeholders a given part must use.
        any_of: at least one of these must appear somewhere (a profile template that uses no
            field would give every user the same text).
        drop_empty_lines: leave out a line whose placeholders all render empty.
        optional: parts a file may leave out (the rating templates' ``assistant`` cue).
    """

    parts: tuple[str, ...]
    allowed: frozenset[str]
    required: Mapping[str, frozenset[str]] = field(default_factory=dict)
    any_of: frozenset[str] = frozenset()
    drop_empty_lines: bool = False
    optional: tuple[str, ...] = ()


SPECS: dict[str, Spec] = {
    "user_profile": Spec(
        parts=("template",),
        allowed=frozenset({"demographics", "top_genres", "liked_titles", "n_train"}),
        any_of=frozenset({"demographics", "top_genres", "liked_titles"}),
        drop_empty_lines=True,
    ),
    "item_profile": Spec(
        parts=("template",),
        allowed=frozenset({"title", "year", "genres", "description", "attributes"}),
        any_of=frozenset({"title", "description", "attributes"}),
        drop_empty_lines=True,
    ),
    "rate_user_centric": Spec(
        parts=("system", "user"),
        allowed=frozenset({"user_profile", "item_profile", "labels"}),
        required={"user": frozenset({"user_profile", "item_profile"})},
        optional=("assistant",),
    ),
    "rate_item_centric": Spec(
        parts=("system", "user"),
        allowed=frozenset({"liked_items", "item_profile", "labels"}),
        required={"user": frozenset({"liked_items", "item_profile"})},
        optional=("assistant",),
    ),
    # the likelihood reader: contexts and the continuation whose log-probability is read
    "likelihood": Spec(
        parts=("user_context", "item_context", "neutral_context", "continuation"),
        allowed=frozenset({"user_profile", "liked_items", "item_name"}),
        required={"user_context": frozenset({"user_profile"}),
                  "item_context": frozenset({"liked_items"}),
                  "continuation": frozenset({"item_name"})},
    ),
    "summarize_user": Spec(
        parts=("system", "user"),
        allowed=frozenset({"user_profile"}),
        required={"user": frozenset({"user_profile"})},
    ),
}

#: The rating template of each view of the dual rating.
VIEW_TEMPLATES: dict[str, str] = {"user": "rate_user_centric", "item": "rate_item_centric"}


@dataclass(frozen=True)
class Template:
    """A validated template.

    Args:
        name: template name (the file's stem), a key of :data:`SPECS`.
        path: the file it came from.
        version: the version the file declares.
        parts: text of each part, e.g. ``{"system": ..., "user": ...}``.
        hash: sha256 of name, version and parts.
    """

    name: str
    path: Path
    version: str
    parts: dict[str, str]
    hash: str

    @property
    def spec(self) -> Spec:
        return SPECS[self.name]

    def render(self, part: str, values: Mapping[str, str]) -> str:
        """Fill one part. Missing values are an error (a bug, not user input)."""
        text = self.parts[part]
        if not self.spec.drop_empty_lines:
            return text.format_map(_Strict(values, self.name))
        out = []
        for line in text.split("\n"):
            names = [f for _, f, _, _ in string.Formatter().parse(line) if f is not None]
            if names and all(not str(values.get(n, "")).strip() for n in names):
                continue  # every field on this line is empty: leave the line out
            out.append(line.format_map(_Strict(values, self.name)))
        return "\n".join(out).strip()

    @property
    def cue(self) -> str | None:
        """The answer cue that opens the assistant turn, ``None`` when the template has none."""
        return self.parts.get("assistant")

    def messages(self, values: Mapping[str, str]) -> list[dict[str, str]]:
        """Chat messages of a ``system``/``user`` template (an empty system part is left out);
        a template with an answer cue ends with ``{"role": "assistant", "content": cue}``, which
        ``chat.render_prompt`` renders as the open start of the assistant's turn."""
        values = {"labels": LABELS_TEXT, **values}
        msgs = []
        system = self.render("system", values).strip()
        if system:
            msgs.append({"role": "system", "content": system})
        msgs.append({"role": "user", "content": self.render("user", values)})
        if self.cue is not None:
            msgs.append({"role": "assistant", "content": self.cue})
        return msgs


def _cue(text: object, path: Path, part: str) -> str:
    """A checked answer cue: one line of plain text, without placeholders or trailing space."""
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{path}: [{part}] must be a non-empty text (the answer cue, e.g. "
                        "\"Relevance:\")")
    if "{" in text or "}" in text or "\n" in text:
        raise UserError(f"{path} [{part}]: the answer cue is one line of plain text, without "
                        f"placeholders or braces; got {text!r}")
    if text != text.rstrip():
        # A trailing space would be its own token, and the label's leading-space token could
        # then not follow it: the label would be read at a position the model never writes.
        raise UserError(f"{path} [{part}]: the answer cue {text!r} ends with whitespace; end it "
                        "with the last visible character (e.g. \"Relevance:\")")
    return text


class _Strict(dict):
    def __init__(self, values: Mapping[str, str], name: str) -> None:
        super().__init__(values)
        self.name = name

    def __missing__(self, key: str) -> str:
        raise KeyError(f"template {self.name}: no value for {{{key}}}")


def placeholders(text: str, where: str) -> list[str]:
    """Names of the ``{placeholders}`` in ``text``; malformed ones raise a UserError."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise UserError(f"{where}: unbalanced braces ({exc}); write a literal brace as "
                        "{{ or }}") from None
    names = []
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise UserError(f"{where}: positional placeholder {{{name}}}; name the field")
        if spec or conv or not name.isidentifier():
            raise UserError(f"{where}: placeholder {{{name}{'!' + conv if conv else ''}"
                            f"{':' + spec if spec else ''}}} is not a plain {{name}}")
        # A spec can hide a nested field ({a:{b}}): checked above since spec is then non-empty.
        names.append(name)
    return names


def _check_likelihood(parts: Mapping[str, str], path: Path) -> None:
    """The likelihood reader's contexts: the neutral one is fixed text (the same for every
    pair, or the score would not divide out popularity alone), every context is non-empty
    (the first name token is read off the context's last position), and the continuation
    starts a new word, so context and name tokenise apart as they do together."""
    neutral = parts["neutral_context"]
    if not neutral.strip():
        raise UserError(f"{path} [neutral_context]: the neutral context is empty; the score "
                        "log p(name | context) - log p(name | neutral) needs a text to read "
                        "the name after")
    if placeholders(neutral, f"{path} [neutral_context]"):
        raise UserError(f"{path} [neutral_context]: takes no placeholders (it is the same "
                        "for every pair)")
    for part in ("user_context", "item_context"):
        if not parts[part].strip():
            raise UserError(f"{path} [{part}]: the context is empty")
    for part, text in parts.items():
        if part != "continuation" and "{item_name}" in text:
            raise UserError(f"{path} [{part}]: {{item_name}} belongs in the continuation only")
    extra = sorted(set(placeholders(parts["continuation"], f"{path} [continuation]"))
                   - {"item_name"})
    if extra:
        raise UserError(f"{path} [continuation]: takes only {{item_name}}, not {{{extra[0]}}} "
                        "(the neutral term must read the very same text)")
    if not parts["continuation"][:1].isspace():
        raise UserError(f"{path} [continuation]: must start with a space or a newline (the "
                        f"name is a new word after the context), got {parts['continuation']!r}")


def load_template(name: str, prompts_dir: str | Path | None = None) -> Template:
    """Load and check ``prompts_dir/<name>.toml``."""
    if name not in SPECS:
        raise UserError(f"unknown prompt template {name!r} (known: {', '.join(SPECS)})")
    spec = SPECS[name]
    path = Path(prompts_dir or PROMPTS_DIR) / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"{path}: prompt template not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a valid TOML template ({exc})") from None
    unknown = sorted(set(raw) - {"version", *spec.parts, *spec.optional})
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r} (expected: version, "
                        f"{', '.join(spec.parts + spec.optional)})")
    if "version" not in raw or not isinstance(raw["version"], (int, str)) \
            or isinstance(raw["version"], bool) or str(raw["version"]).strip() == "":
        raise UserError(f"{path}: needs a version (e.g. version = 1)")
    parts: dict[str, str] = {}
    used: set[str] = set()
    for part in spec.parts:
        text = raw.get(part)
        if not isinstance(text, str):
            raise UserError(f"{path}: needs a text part {part!r}")
        names = placeholders(text, f"{path} [{part}]")
        bad = sorted(set(names) - spec.allowed)
        if bad:
            raise UserError(f"{path} [{part}]: unknown placeholder {{{bad[0]}}} "
                            f"(allowed: {', '.join('{' + a + '}' for a in sorted(spec.allowed))})")
        lacking = sorted(spec.required.get(part, frozenset()) - set(names))
        if lacking:
            raise UserError(f"{path} [{part}]: lacks the placeholder {{{lacking[0]}}}")
        used |= set(names)
        parts[part] = text
    if spec.any_of and not used & spec.any_of:
        raise UserError(f"{path}: uses none of "
                        f"{', '.join('{' + a + '}' for a in sorted(spec.any_of))}")
    if name == "likelihood":
        _check_likelihood(parts, path)
    if spec.parts[-1] == "user" and not parts["user"].strip():
        raise UserError(f"{path}: the user part is empty")
    for part in spec.optional:
        if part in raw:
            parts[part] = _cue(raw[part], path, part)
    version = str(raw["version"])
    canonical = json.dumps({"name": name, "version": version, "parts": parts}, sort_keys=True)

    return Template(name=name, path=path, version=version, parts=parts,
                    hash=sha256_text(canonical))


def load_templates(names: tuple[str, ...] | list[str],
                   prompts_dir: str | Path | None = None) -> dict[str, Template]:
    """Load several templates at once (all are checked before any is used)."""
    return {n: load_template(n, prompts_dir) for n in names}
