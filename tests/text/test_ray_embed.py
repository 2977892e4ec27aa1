"""The embed stage as a Ray Data job (embed.engine = "ray") on a local cluster, real MiniLM.

A Ray run must write what an in-process run writes: the same vectors (to 1e-6), the same
sidecar and model id, reused afterwards by either engine; a bad address or a worker that
cannot build the embedder is one line, and a failed job leaves the earlier files valid.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("sentence_transformers")

from llmhni_local.core.errors import UserError  # noqa: E402
from llmhni_local.data.dataset import Interactions  # noqa: E402
from llmhni_local.engine.api import Embedder  # noqa: E402
from llmhni_local.engine.settings import EmbedderSettings, EmbedSettings  # noqa: E402
from llmhni_local.text.embed import embed_profiles, embedder_model_id, load_embeddings  # noqa: E402
from llmhni_local.text.profiles import make_profiles, save_profiles  # noqa: E402

# Worker-side helpers below are shipped to Ray workers by value (this file is not importable
# there under pytest's importlib mode).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SETTINGS = EmbedderSettings(backend="sentence-transformers")
RAY = EmbedSettings(engine="ray")
BATCH = 3  # 7 users, 5 items: blocks of 3, 3, 1 and 3, 2 texts


def _backend(settings):
    from llmhni_local.backends import make_embedding_backend

    return make_embedding_backend(settings)


class _Failing(Embedder):
    """The toolkit's backend, raising on its n-th call (call 1 is the warm-up)."""

    def __init__(self, settings, fail_on: int) -> None:
        self.inner = _backend(settings)
        self.model_id, self.settings, self.calls, self.fail_on = (self.inner.model_id,
                                                                  settings, 0, fail_on)

    @property
    def dtype_choice(self):
        return self.inner.dtype_choice

    def embed(self, texts):
        self.calls += 1
        if self.calls >= self.fail_on:
            raise RuntimeError("device lost")
        return self.inner.embed(texts)

    def close(self) -> None:
        self.inner.close()


def tiny() -> Interactions:
    return Interactions(
        name="tiny", n_users=7, n_items=5,
        train=np.array([[u, u % 5] for u in range(7)] + [[0, 3], [2, 4], [5, 1]]),
        val=np.zeros((0, 2), dtype=np.int64), test=np.zeros((0, 2), dtype=np.int64),
        item_meta=[{"title": f"Item {i} " + "word " * (3 * i), "genres": "Drama"}
                   for i in range(5)])


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """A run folder with profiles only, and the in-process vectors of a copy of it."""
    from llmhni_local.weights.registry import resolve_model

    try:
        resolve_model("minilm")
    except UserError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("ray_embed")
    save_profiles(root / "clean", make_profiles(tiny()))
    shutil.copytree(root / "clean", root / "inprocess")
    mid = embedder_model_id(SETTINGS)
    e = embed_profiles(root / "inprocess", SETTINGS, model_id=mid, batch_size=BATCH)
    return {"clean": root / "clean", "emb": e, "model_id": mid}


@pytest.fixture(scope="module")
def cluster():
    from llmhni_local.backends.ray_cluster import connect

    assert connect(num_cpus=2)  # a local cluster, started as the toolkit starts it
    yield
    ray.shutdown()


def fresh(ref, tmp_path) -> Path:
    shutil.copytree(ref["clean"], tmp_path / "run")
    return tmp_path / "run"


def never():
    raise AssertionError("no backend may be built")


def test_unreachable_address_is_named_before_anything_starts(ref, tmp_path, monkeypatch):
    run = fresh(ref, tmp_path)
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(UserError, match=rf"^embed.ray_address '127.0.0.1:{port}': no Ray "
                                        "cluster answers") as err:
        embed_profiles(run, SETTINGS, never, model_id=ref["model_id"],
                       embed=EmbedSettings(engine="ray", ray_address=f"127.0.0.1:{port}"))
    assert "\n" not in str(err.value) and time.monotonic() - t < 30
    monkeypatch.setenv("RAY_ADDRESS", "no-port-here")
    with pytest.raises(UserError, match="^RAY_ADDRESS 'no-port-here': expected host:port"):
        embed_profiles(run, SETTINGS, never, model_id=ref["model_id"], embed=RAY)
    assert not (run / "embeddings").exists()


def test_ray_job_writes_what_in_process_writes(ref, tmp_path, cluster):
    run = fresh(ref, tmp_path)
    e = embed_profiles(run, SETTINGS, functools.partial(_backend, SETTINGS),
                       model_id=ref["model_id"], batch_size=BATCH, embed=RAY)
    want = ref["emb"]
    assert not e.reused and e.users.shape == (7, 384) and e.items.shape == (5, 384)
    np.testing.assert_allclose(e.users, want.users, rtol=0, atol=1e-6)
    np.testing.assert_allclose(e.items, want.items, rtol=0, atol=1e-6)
    assert not np.allclose(e.items[0], e.items[1], atol=1e-3)  # distinct texts: order counts
    meta = json.loads((run / "embeddings" / "meta.json").read_text())
    ref_meta = json.loads((want_dir(ref) / "meta.json").read_text())
    assert meta["model_id"].startswith("minilm@") and meta["model_id"] == ref_meta["model_id"]
    assert {k: v for k, v in meta.items() if k != "sha256"} == \
           {k: v for k, v in ref_meta.items() if k != "sha256"}
    assert sorted(p.name for p in (run / "embeddings").iterdir()) == \
           sorted(p.name for p in want_dir(ref).iterdir())
    # the same key as in process: either engine reuses the vectors without a worker
    assert embed_profiles(run, SETTINGS, never, model_id=ref["model_id"], embed=RAY).reused
    assert embed_profiles(run, SETTINGS, never, model_id=ref["model_id"]).reused


def test_worker_errors_are_one_line_and_leave_earlier_files(ref, tmp_path, cluster):
    run = fresh(ref, tmp_path)
    shutil.copytree(want_dir(ref), run / "embeddings")  # vectors of other settings
    before = {p.name: p.read_bytes() for p in (run / "embeddings").iterdir()}
    other = EmbedderSettings(backend="sentence-transformers", normalize=False,
                             modules="settings")  # MiniLM's own stack ends in Normalize
    gone = EmbedderSettings(backend="sentence-transformers",
                            model=str(tmp_path / "not-on-this-worker"))
    with pytest.raises(UserError) as err:  # the driver never builds it; the worker cannot
        embed_profiles(run, other, functools.partial(_backend, gone),
                       model_id=ref["model_id"], batch_size=BATCH, embed=RAY)
    msg = str(err.value)
    assert msg.startswith("ray worker ") and "not-on-this-worker" in msg and "\n" not in msg
    # a backend failing mid-job (from its 3rd block on): one line, nothing written
    with pytest.raises(UserError, match=r"^ray worker .*: the embedder failed on (users|items) "
                                        r"\d+\.\.\d+ \(RuntimeError: device lost\)$") as err:
        embed_profiles(run, other, functools.partial(_Failing, other, fail_on=4),
                       model_id=ref["model_id"], batch_size=BATCH, embed=RAY)
    assert "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in (run / "embeddings").iterdir()} == before
    assert load_embeddings(run).meta["settings"]["normalize"] is True  # still valid


def want_dir(ref) -> Path:
    return ref["clean"].parent / "inprocess" / "embeddings"


@pytest.mark.slow
def test_embed_command_with_ray_under_the_network_block(ref, tmp_path):
    """``embed RUN --ray`` starting its own local cluster, in a subprocess where every
    non-loopback connection is refused and logged: the vectors of in process, no attempt."""
    import subprocess

    run = fresh(ref, tmp_path)
    repo = Path(__file__).resolve().parents[2]
    netblock = Path(__file__).resolve().parents[1] / "helpers" / "netblock"
    log = tmp_path / "netblock.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=f"{netblock}{os.pathsep}{repo}", NETBLOCK_LOG=str(log))
    code = ("import runpy, sys, sitecustomize; assert sitecustomize.ACTIVE; "
            f"sys.argv = ['cli.py', 'embed', {str(run)!r}, '--ray', "
            "'--backend', 'sentence-transformers']; "
            f"runpy.run_path({str(repo / 'cli.py')!r}, run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, cwd=repo)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "embeddings computed: 7 users, 5 items, dim 384" in out.stdout
    e = load_embeddings(run)
    np.testing.assert_allclose(e.users, ref["emb"].users, rtol=0, atol=1e-6)
    np.testing.assert_allclose(e.items, ref["emb"].items, rtol=0, atol=1e-6)
    assert not log.exists() or log.read_text() == "", log.read_text()[:2000]
