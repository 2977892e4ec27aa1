"""How the toolkit reaches a Ray cluster (rating and embedding jobs alike): join one or start a
local one air-gapped, lay out one actor per GPU or node, Ray Data's settings, and a worker's
one-line errors brought back to the driver (docs/RAY.md).

A local cluster binds to 127.0.0.1 with usage stats and the dashboard off; its API-server
process is started with its HTTP proxy pointed at a closed loopback port, so Ray's cloud
metadata question never leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from typing import Iterator

from llmhni_local.core.errors import UserError

#: A closed loopback port: HTTP sent through it is refused on this machine.
_NOWHERE = "http://127.0.0.1:9"
_PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")


# ---------------------------------------------------------------------------- the cluster
def _check_reachable(address: str, what: str) -> None:
    """A Ray address that nothing answers is refused in seconds (``ray.init`` would wait)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"{what} {address!r}: expected host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(f"{what} {address!r}: no Ray cluster answers there ({exc})") from None


@contextlib.contextmanager
def _quiet_http_for_children() -> Iterator[None]:
    """While a local cluster starts: its processes inherit an HTTP proxy that refuses."""
    saved = {k: os.environ.get(k) for k in (*_PROXY_VARS, "no_proxy", "NO_PROXY")}
    try:
        for k in _PROXY_VARS:
            os.environ[k] = _NOWHERE
        # gRPC between Ray's own processes also honours these: loopback goes direct.
        os.environ["no_proxy"] = os.environ["NO_PROXY"] = "127.0.0.1,localhost,::1"
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect(address: str | None = None, num_cpus: int | None = None, *,
            setting: str = "rate.ray_address") -> bool:
    """Join the Ray cluster at ``address`` (else ``RAY_ADDRESS``), or start a local one on
    ``num_cpus`` CPUs (default: this process's CPUs). Returns True when this call started
    Ray (the caller shuts it down); an already initialised Ray is used as it is. Errors name
    ``setting`` (where ``address`` came from) or ``RAY_ADDRESS``."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before Ray is imported
    import ray

    what = setting if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address, what)
    if ray.is_initialized():
        return False
    common = {"log_to_driver": False, "configure_logging": True, "logging_level": "WARNING"}
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"{what} {address!r}: could not join the Ray cluster "
                            f"({str(exc).splitlines()[0]})") from None
        return True
    with _quiet_http_for_children():
        ray.init(num_cpus=num_cpus or len(os.sched_getaffinity(0)), include_dashboard=False,
                 _node_ip_address="127.0.0.1", **common)
    return True


def worker_layout() -> tuple[int, dict[str, float]]:
    """``(actors, resources per actor)``: one actor per GPU when the cluster has GPUs, else
    one per alive node holding the CPUs of the smallest node."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus >= 1:
        return gpus, {"num_gpus": 1, "num_cpus": 1}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = min(int(n["Resources"].get("CPU", 1)) for n in nodes) if nodes else 1
    return max(1, len(nodes)), {"num_cpus": max(1, cpus)}


def set_data_context() -> None:
    """Ray Data settings of every job of the toolkit (rating, embedding)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows its own bar
    ctx.print_on_execution_start = False
    # Every actor is up (model loaded, warm-up done) before the first batch is sent; an
    # actor that fails to start fails the job at once, with its own error.
    ctx.wait_for_min_actors_s = 3600
    ctx.max_consecutive_actor_init_deaths = 0


def where() -> str:
    import ray

    ctx = ray.get_runtime_context()
    return f"ray worker {socket.gethostname()} (node {ctx.get_node_id()[:12]})"

def user_error_in(exc: BaseException) -> str | None:
    """The message of a UserError a worker raised, from inside Ray's wrappers: the exception
    itself when Ray kept it, else the last such line of the traceback text Ray passes on (an
    actor that died in its constructor keeps only that)."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UserError) and type(e).__module__.startswith("llmhni_local"):
            return str(e)  # the worker's own exception, not Ray's wrapper dressed as it
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__]
    found = re.findall(r"^llmhni_local\.core\.errors\.(?:User|Data|Config)Error: (.+)$", str(exc),
                       flags=re.M)
    return found[-1] if found else None


@contextlib.contextmanager
def ray_errors() -> Iterator[None]:
    """A worker's UserError (bad model folder, dtype, unshared run folder) surfaces as one
    line; any other error propagates as it is."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        found = user_error_in(exc)
        if found is None:
            raise
        raise UserError(found.strip().splitlines()[0]) from None
