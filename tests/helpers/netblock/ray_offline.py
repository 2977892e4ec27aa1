"""Run the rate stage as a Ray job on a local cluster (started here) with the network blocked.

Run by ``tests/judgments/test_ray_job.py`` as
``PYTHONPATH=tests/helpers/netblock:REPO python ray_offline.py RUN MODEL DELAY_S``; every rating
call of a worker first sleeps ``DELAY_S`` (so a test can kill this driver mid-job). Prints one
line ``RESULT {json}``.
"""

from __future__ import annotations

import json
import sys
import time

from llmhni_local.engine.api import Rater, unserved


class SlowRater(Rater):
    """The toolkit's backend, each call ``delay`` seconds slower (pickled by value: __main__)."""

    loglikelihood = unserved("loglikelihood")

    def __init__(self, settings, delay: float) -> None:
        from llmhni_local.backends import make_rating_backend

        self.inner = make_rating_backend(settings)
        self.model_id, self.settings, self.delay = self.inner.model_id, settings, delay

    @property
    def dtype_choice(self):
        return self.inner.dtype_choice

    def judge(self, requests):
        time.sleep(self.delay)
        return self.inner.judge(requests)

    def close(self) -> None:
        self.inner.close()


def main() -> None:
    run, model, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    import sitecustomize  # the block; imported by Python at start-up from PYTHONPATH

    assert getattr(sitecustomize, "ACTIVE", False), "the network block is not loaded"
    from llmhni_local.engine.settings import RaterSettings
    from llmhni_local.judgments.plan import RateSettings
    from llmhni_local.judgments.run import checked_rater_id, rate_candidates

    # batch_size 1: no padding, so every judgment is the same whatever its batch
    settings = RaterSettings(backend="transformers", model=model, dtype="float32",
                             max_tokens=2, batch_size=1)
    mid, adapter = checked_rater_id(settings)
    report = rate_candidates(run, lambda: SlowRater(settings, delay), model_id=mid,
                             adapter=adapter, progress=False,
                             settings=RateSettings(batch_size=6, max_failure_share=1.0,
                                                   engine="ray"))
    print("RESULT " + json.dumps({"rated": report.rated, "skipped": report.skipped,
                                  "batches": report.batches}), flush=True)


if __name__ == "__main__":
    main()
