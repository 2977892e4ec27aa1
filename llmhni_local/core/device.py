"""Where training runs: ``train.device`` resolved to a :class:`torch.device`, once, before any
training, and what the run manifest records of it.

``auto`` takes CUDA when torch sees a GPU; an explicit ``cuda`` / ``cuda:N`` that this machine
cannot honour is a one-line error naming the setting, never a silent fall-back to the CPU
(a run asked for a GPU should not quietly take hours on the CPU).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

from llmhni_local.core.config import DEVICE_SPELLING
from llmhni_local.core.errors import ConfigError, UserError


def resolve_device(setting: str | torch.device = "auto", *, name: str = "train.device") -> torch.device:
    """The device ``setting`` asks for, checked against this machine.

    Args:
        setting: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, or a device already resolved.
            (default: ``"auto"``)
        name: the setting named in errors. (default: ``"train.device"``)

    Returns:
        ``cpu``, or ``cuda:N`` with its index filled in (``cuda`` and ``auto`` take torch's
        current CUDA device, so ``CUDA_VISIBLE_DEVICES`` and ``torch.cuda.set_device`` hold).

    Raises:
        ConfigError: ``setting`` is not one of those spellings.
        UserError: CUDA was asked for and torch has none, or ``N`` is past the device count.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(setting, torch.device):
        setting = str(setting)
    if not DEVICE_SPELLING.fullmatch(setting):
        raise ConfigError(f"{name} must be auto, cpu, cuda or cuda:N, got {setting!r}")
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a build without CUDA"
        raise UserError(f"{name} = {setting!r}, but torch sees no CUDA device here (torch "
                        f"{torch.__version__}, {build}); use {name} = \"cpu\" or \"auto\"")
    _, _, index = setting.partition(":")
    if not index:
        return torch.device("cuda", torch.cuda.current_device())
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise UserError(f"{name} = {setting!r}, but this machine has {count} CUDA device(s) "
                        f"(cuda:0 .. cuda:{count - 1})")
    return torch.device("cuda", int(index))


def device_record(device: torch.device) -> dict:
    """What the run manifest says about ``device``: its name, torch's CUDA build, and the GPU's
    name and compute capability on CUDA (``None`` on the CPU), plus CPU threads on the CPU.

    >>> device_record(torch.device("cpu"))["device"]
    'cpu'
    """
    record: dict = {"device": str(device), "torch_cuda": torch.version.cuda, "gpu": None}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        record.update(gpu=torch.cuda.get_device_name(device), capability=f"{major}.{minor}")
    else:
        record["threads"] = torch.get_num_threads()
    return record


def index_tensor(values, device: torch.device) -> torch.Tensor:
    """A numpy index array as a tensor on ``device``, in one copy (a view of the array on the
    CPU, so CPU runs index exactly as before)."""
    return torch.from_numpy(np.ascontiguousarray(values)).to(device)


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the block on one torch CPU thread, then restore the count (on CUDA: nothing).

    With several threads, BLAS splits a long reduction (the weight gradient of a layer, summed
    over the batch) among them, and how many it uses can change with the load on the machine:
    the same seed then gives vectors that differ by about 1e-6, enough to flip a similarity
    test downstream. One thread sums in one order every time (docs/DESIGN.md, "Same seed,
    same figure").
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
