"""Run the whole rate stage (prompts -> backend -> store) with the network blocked, then
prove the block was active in this process and in a spawned child.

Run by ``tests/judgments/test_run.py`` as
``PYTHONPATH=tests/helpers/netblock:REPO python rate_offline.py RUN MODEL BACKEND PROBE_LOG``.
Prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import sys

OUTSIDE = ("10.255.255.1", 9)  # a non-loopback address (never reached: the block refuses it)


def probe(queue) -> None:
    """In a spawned child: is the block active there too?"""
    try:
        socket.create_connection(OUTSIDE, timeout=2)
        queue.put("connected")
    except OSError as exc:
        queue.put(type(exc).__name__)


def main() -> None:
    run, model, backend, probe_log = sys.argv[1:5]
    import sitecustomize  # the block; imported by Python at start-up from PYTHONPATH

    assert getattr(sitecustomize, "ACTIVE", False), "the network block is not loaded"

    from llmhni_local.backends import make_rating_backend
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.judgments.run import checked_rater_id, rate_candidates

    settings = RaterSettings(backend=backend, model=model, dtype="float32", max_tokens=2,
                             batch_size=8)
    mid, adapter = checked_rater_id(settings)
    # A random-weight model answers nonsense: failures are expected and must not stop the run.
    report = rate_candidates(run, lambda: make_rating_backend(settings), model_id=mid,
                             adapter=adapter, progress=False,
                             settings=RateSettings(batch_size=16, max_failure_share=1.0))
    result = {"rated": report.rated, "failures": report.failures, "model_id": mid}

    # From here on, refused attempts are ours: log them apart from the rate stage's.
    os.environ["NETBLOCK_LOG"] = probe_log
    try:
        socket.create_connection(OUTSIDE, timeout=2)
        result["direct"] = "connected"
    except sitecustomize.NetworkBlocked:
        result["direct"] = "blocked"
    except OSError as exc:
        result["direct"] = f"other error: {exc}"
    try:
        socket.getaddrinfo("example.com", 443)
        result["dns"] = "resolved"
    except socket.gaierror as exc:
        result["dns"] = "blocked" if "netblock" in str(exc) else f"other error: {exc}"
    ctx = mp.get_context("spawn")  # how vLLM starts its engine
    queue = ctx.Queue()
    child = ctx.Process(target=probe, args=(queue,))
    child.start()
    result["child"] = queue.get(timeout=120)
    child.join(timeout=60)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        socket.create_connection(server.getsockname(), timeout=2).close()
        result["loopback"] = "ok"
    except OSError as exc:
        result["loopback"] = f"error: {exc}"
    finally:
        server.close()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
