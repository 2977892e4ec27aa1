"""The rater's dtype from the hardware: ``rater.dtype = "auto"`` resolved in one place.

bfloat16 halves the bytes every matmul moves and, where the hardware has bf16 dot products,
doubles their rate: bfloat16 rated about 2x float32 with vLLM on a CPU with AVX-512 BF16
(docs/BENCHMARKS.md). Where bf16 is emulated (AVX2 only) it ran ~13x *slower*. So ``auto`` is

- ``bfloat16`` on a CUDA device that supports it (``float16`` on an older one),
- ``bfloat16`` on a CPU whose ``/proc/cpuinfo`` flags include ``avx512_bf16`` or ``amx_bf16``,
- ``float32`` otherwise.

The choice and its reason are logged and written to the rating manifest (``rating.json``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from llmhni_local.core.errors import ConfigError

log = logging.getLogger(__name__)

BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")
DTYPES: tuple[str, ...] = ("auto", "bfloat16", "float16", "float32")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags (the first ``flags`` line of ``/proc/cpuinfo``); empty if unknown."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # "Features" on ARM
            return set(value.split())
    return set()


def _cpu_capability() -> str:
    """torch's view of the CPU's vector unit (extra information for the reason)."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - informative only; an old torch lacks it
        return "unknown"


def resolve_dtype(requested: str, *, cuda: bool | None = None,
                  flags: set[str] | None = None, setting: str = "rater.dtype") -> tuple[str, str]:
    """``(dtype, reason)`` for a dtype setting (``auto`` or an explicit dtype).

    Args:
        requested: ``auto``, ``bfloat16``, ``float16`` or ``float32``.
        cuda: whether a CUDA device is used (default: ``torch.cuda.is_available()``).
        flags: CPU flags (default: read from ``/proc/cpuinfo``); tests pass fakes.
        setting: the setting's name, for the error message.

    Raises :class:`ConfigError` for an unknown dtype, or ``bfloat16`` on a CUDA device that
    cannot run it.
    """
    if requested not in DTYPES:
        raise ConfigError(f"{setting} must be one of {', '.join(DTYPES)}, got {requested!r}")
    if cuda is None:
        import torch

        cuda = bool(torch.cuda.is_available())
    bf16_gpu = _cuda_bf16() if cuda else False
    if requested != "auto":
        if cuda and requested == "bfloat16" and not bf16_gpu:
            raise ConfigError(f"{setting} = 'bfloat16': this CUDA device has no bfloat16 support; "
                              "use float16, float32 or auto")
        return requested, f"set explicitly ({setting} = {requested!r})"
    if cuda:
        if bf16_gpu:
            return "bfloat16", "auto: CUDA device with bfloat16 support"
        return "float16", "auto: CUDA device without bfloat16 support"
    flags = cpu_flags() if flags is None else flags
    have = [f for f in BF16_CPU_FLAGS if f in flags]
    cap = _cpu_capability()
    if have:
        return "bfloat16", f"auto: CPU has {' and '.join(have)} (torch CPU capability {cap})"
    return "float32", (f"auto: CPU lacks avx512_bf16/amx_bf16, bfloat16 would be emulated "
                       f"(torch CPU capability {cap})")


def _cuda_bf16() -> bool:
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001 - no usable device: treat as no bf16
        return False


def log_choice(dtype: str, reason: str, what: str = "rater") -> None:
    log.info("%s dtype %s (%s)", what, dtype, reason)
