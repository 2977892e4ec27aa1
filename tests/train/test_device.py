"""``train.device``: its spellings, its resolution on this machine, and where training runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from llmhni_local.core.config import TrainConfig, TrainSettings, build, load_config
from llmhni_local.core.device import device_record, index_tensor, resolve_device
from llmhni_local.core.errors import ConfigError, UserError
from llmhni_local.data.dataset import Interactions

ROOT = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")


def _no_cuda(monkeypatch):
    """This machine as one without CUDA, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(autouse=True)
def _threads_restored():
    """Training with ``train.threads = 1`` sets torch's thread count for the process; later
    tests (a LoRA run compared with one in a subprocess) need the default back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _toy(seed=0, n_users=30, n_items=40):
    rng = np.random.default_rng(seed)
    pairs = np.unique(np.stack([rng.integers(0, n_users, 600), rng.integers(0, n_items, 600)], 1),
                      axis=0)
    pairs = pairs[rng.permutation(len(pairs))]
    n = len(pairs)
    return Interactions("toy", n_users, n_items, pairs[: int(0.8 * n)],
                        pairs[int(0.8 * n): int(0.9 * n)], pairs[int(0.9 * n):])


@pytest.mark.parametrize("good", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_accepted_spellings(good):
    assert TrainSettings(device=good).device == good


@pytest.mark.parametrize("bad", ["gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda0", "mps", ""])
def test_a_bad_spelling_is_a_config_error_naming_the_setting(bad):
    with pytest.raises(ConfigError, match=r"^train\.device must be auto, cpu, cuda or cuda:N"):
        build(TrainConfig, {"train": {"device": bad}})
    with pytest.raises(ConfigError, match="train.device"):
        resolve_device(bad)


def test_default_is_auto_and_auto_takes_cuda_only_when_there_is_one(monkeypatch):
    assert TrainSettings().device == "auto"
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    _no_cuda(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("asked", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_asked_without_cuda_is_one_line_naming_the_setting(monkeypatch, asked):
    _no_cuda(monkeypatch)
    with pytest.raises(UserError) as info:
        resolve_device(asked)
    message = str(info.value)
    assert not isinstance(info.value, ConfigError)  # the spelling is fine; the machine is not
    assert "\n" not in message and message.startswith(f"train.device = {asked!r}")
    assert "no CUDA device" in message and '"cpu"' in message


def test_cuda_index_past_the_device_count_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match=r"^train\.device = 'cuda:2', but this machine has 2 CUDA "
                                        r"device\(s\) \(cuda:0 \.\. cuda:1\)$"):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)  # resolving touches no GPU


def test_device_record_on_the_cpu():
    rec = device_record(torch.device("cpu"))
    assert rec == {"device": "cpu", "torch_cuda": torch.version.cuda, "gpu": None,
                   "threads": torch.get_num_threads()}
    json.dumps(rec)  # it goes into manifest.json as is


def test_index_tensor_is_a_view_on_the_cpu():
    a = np.arange(10, dtype=np.int64)
    t = index_tensor(a[2:6], torch.device("cpu"))
    assert t.tolist() == [2, 3, 4, 5] and t.data_ptr() == a[2:].ctypes.data


def test_train_run_fails_before_writing_anything(monkeypatch, tmp_path):
    from llmhni_local.train.run import train_run

    _no_cuda(monkeypatch)
    cfg = load_config(TrainConfig, None, {"train.epochs": 1, "model.dim": 4,
                                          "train.device": "cuda"})
    with pytest.raises(UserError, match="train.device"):
        train_run(cfg, _toy(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_train_run_records_the_device(tmp_path):
    from llmhni_local.train.run import train_run

    cfg = load_config(TrainConfig, None, {"train.epochs": 2, "train.eval_every": 1,
                                          "model.dim": 4, "train.device": "cpu"})
    train_run(cfg, _toy(), tmp_path, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert manifest["device"]["device"] == metrics["device"] == "cpu"
    assert manifest["settings"]["train"]["device"] == "cpu"


def test_cpu_and_auto_train_alike_on_a_machine_without_cuda(monkeypatch):
    """``auto`` on a CPU machine is today's CPU run, bit for bit (one thread: no summation
    order can differ)."""
    from llmhni_local.core.config import EvalSettings
    from llmhni_local.models import LightGCN
    from llmhni_local.train.objectives import RecObjective
    from llmhni_local.train.trainer import fit

    _no_cuda(monkeypatch)
    data, runs = _toy(), []
    for device in ("cpu", "auto"):
        ts = TrainSettings(epochs=2, batch_size=64, eval_every=1, threads=1, device=device,
                           loss="sgl")
        torch.manual_seed(0)
        model = LightGCN(data.n_users, data.n_items, dim=8, layers=2)
        runs.append(fit(model, data, RecObjective(data.train, data.n_users, data.n_items, ts),
                        train=ts, eval=EvalSettings(ks=(5,)), progress=False))
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    assert runs[0].test == runs[1].test


def test_objectives_move_and_keep_one_graph_when_g_prime_is_g():
    from llmhni_local.llmhni.objective import LLMHNIObjective
    from llmhni_local.llmhni.settings import LLMHNISettings

    data = _toy()
    obj = LLMHNIObjective(data.train, data.train, data.n_users, data.n_items, TrainSettings(),
                          LLMHNISettings(denoise=False, semantic_negatives=False))
    assert obj.to("cpu") is obj and obj.adj_Gprime is obj.adj_G
    assert obj.device == torch.device("cpu")


def _cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.mark.skipif(CUDA, reason="this machine has CUDA: the request would be honoured")
@pytest.mark.parametrize("asked,needle", [("cuda", "train.device = 'cuda', but torch sees no CUDA"),
                                          ("cuda:1", "train.device = 'cuda:1'"),
                                          ("gpu", "train.device must be auto, cpu, cuda or cuda:N")])
def test_cli_train_cuda_without_cuda_one_line_exit_2(tmp_path, asked, needle):
    out = tmp_path / "x"
    r = _cli("train", "--out", str(out), "--max-users", "30", "--epochs", "1", "--quiet",
             "--set", f"train.device={asked}")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr
    assert not out.exists()


@needs_cuda
@pytest.mark.parametrize("loss", ["bpr", "sgl"])
def test_cuda_trains_like_the_cpu(loss):
    """Same seed on both devices: CUDA sums in other orders, so figures agree closely, not
    bit for bit (docs/DESIGN.md, Trainer, "Devices")."""
    from llmhni_local.core.config import EvalSettings
    from llmhni_local.models import LightGCN
    from llmhni_local.train.objectives import RecObjective
    from llmhni_local.train.trainer import fit

    data, runs = _toy(), {}
    for device in ("cpu", "cuda"):
        ts = TrainSettings(epochs=3, batch_size=64, eval_every=1, device=device, loss=loss)
        torch.manual_seed(0)
        model = LightGCN(data.n_users, data.n_items, dim=8, layers=2)
        runs[device] = fit(model, data, RecObjective(data.train, data.n_users, data.n_items, ts),
                           train=ts, eval=EvalSettings(ks=(5,)), progress=False)
        assert next(model.parameters()).device.type == device
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert [h["loss"] for h in gpu.history] == pytest.approx([h["loss"] for h in cpu.history],
                                                             rel=1e-4)
    assert all(v.device.type == "cpu" for v in gpu.state_dict.values())


@needs_cuda
def test_llmhni_objective_runs_on_cuda():
    from llmhni_local.core.config import EvalSettings
    from llmhni_local.llmhni.objective import LLMHNIObjective
    from llmhni_local.llmhni.settings import LLMHNISettings
    from llmhni_local.models import LightGCN
    from llmhni_local.train.trainer import fit

    data = _toy()
    rng = np.random.default_rng(1)
    zu = rng.normal(size=(data.n_users, 6)).astype(np.float32)
    zi = rng.normal(size=(data.n_items, 6)).astype(np.float32)
    losses = {}
    for device in ("cpu", "cuda"):
        ts = TrainSettings(epochs=2, batch_size=64, eval_every=1, device=device)
        obj = LLMHNIObjective(data.train, data.train[5:], data.n_users, data.n_items, ts,
                              LLMHNISettings(pool_size=4), z_user=zu, z_item=zi)
        torch.manual_seed(0)
        res = fit(LightGCN(data.n_users, data.n_items, dim=8, layers=2), data, obj, train=ts,
                  eval=EvalSettings(ks=(5,)), sampler=obj.make_sampler(), progress=False)
        assert obj.adj_G.device.type == obj.views[0].device.type == obj.sim_table.device.type == device
        losses[device] = [h["loss"] for h in res.history]
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-4)
