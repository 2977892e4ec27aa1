"""The wheel carries the prompt templates and default configs: an installed ``llmhni`` can
build profiles from any folder, with no checkout on the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sh(*args, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{args}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A scratch venv holding only the wheel; the checkout's other packages are visible through
    a .pth line (so its editable install of llmhni_local is not)."""
    tmp = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", str(ROOT), "-w",
                        str(tmp / "dist")], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here (no build backend offline?): {r.stderr[-300:]}")
    assert "License classifiers are deprecated" not in r.stderr + r.stdout
    assert "project.license as a TOML table is deprecated" not in r.stderr + r.stdout
    wheel = next((tmp / "dist").glob("llmhni_local-*.whl"))
    venv = tmp / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    site = Path(_sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    (site / "checkout_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _sh(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel)
    return venv


def test_wheel_ships_templates_and_configs(installed, tmp_path):
    py = installed / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _sh(py, "-c", "import llmhni_local.engine.prompts as p, llmhni_local as l; "
                          "print(l.__file__); print(p.PROMPTS_DIR)", cwd=tmp_path, env=env)
    pkg, prompts = where.stdout.split()
    assert not pkg.startswith(str(ROOT)) and str(installed) in pkg
    assert Path(prompts).name == "_prompts" and (Path(prompts) / "rate_user_centric.toml").is_file()
    assert (Path(pkg).parent / "_configs" / "ml100k.toml").is_file()
    run = tmp_path / "run"
    _sh(installed / "bin" / "llmhni", "profiles", run, "--max-users", "5", cwd=tmp_path, env=env)
    manifest = json.loads((run / "profiles" / "manifest.json").read_text())
    assert manifest["n_users"] == 5 and manifest["templates"]["user_profile"]["hash"]
