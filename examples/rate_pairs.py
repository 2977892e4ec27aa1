"""Rate a few (user, item) pairs with a local model, from both views, two ways.

* As a judge: each view's prompt (`prompts/rate_*_centric.toml`) asks for High / Medium /
  Low; the label and its probabilities are read at the answer cue.
* As the likelihood reader `make demo` uses: log p(item name | the view's context) -
  log p(item name | a neutral context). The user view shows the user's profile, the item
  view the items the user liked. Pairs: each user's first training item and first unseen one.

Run it (`python cli.py models prepare smollm2` first for the default model):

    python examples/rate_pairs.py                                  # SmolLM2-135M, ML-100K
    python examples/rate_pairs.py --model /models/Qwen2.5-1.5B-Instruct --users 5
"""

import argparse
from math import nan

from llmhni_local.backends import make_rating_backend
from llmhni_local.core.config import DataSettings
from llmhni_local.data import load_data
from llmhni_local.engine.api import LABELS
from llmhni_local.engine.prompts import VIEW_TEMPLATES, load_templates
from llmhni_local.engine.settings import RaterSettings
from llmhni_local.judgments.likelihood import LIKELIHOOD_TEMPLATE, pmi_scores
from llmhni_local.judgments.plan import WorkItem, judge_requests
from llmhni_local.text.profiles import make_profiles


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ml100k", help="ml100k, files:PATH or rlmrec:PATH")
    p.add_argument("--model", default="smollm2", help="registry name or model folder")
    p.add_argument("--backend", default="transformers", help="transformers or vllm")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16 or float32")
    p.add_argument("--users", type=int, default=3, help="the first N users, two pairs each")
    p.add_argument("--max-liked", type=int, default=10, help="liked items an item view lists")
    return p.parse_args()


def main(args: argparse.Namespace) -> None:
    data = load_data(DataSettings(source=args.data, max_users=args.users))
    profiles = make_profiles(data)
    seen = {(int(u), int(i)) for split in (data.train, data.val, data.test) for u, i in split}
    work = []  # one WorkItem per view of each pair, as the rating stage plans them
    for u in range(args.users):
        observed = int(data.train[data.train[:, 0] == u, 1][0])
        never = next(i for i in range(data.n_items) if (u, i) not in seen)
        work += [WorkItem(u, i, view, kind) for i, kind in
                 ((observed, "observed"), (never, "unobserved")) for view in ("user", "item")]

    templates = load_templates((*VIEW_TEMPLATES.values(), LIKELIHOOD_TEMPLATE))
    settings = RaterSettings(backend=args.backend, model=args.model, dtype=args.dtype)
    with make_rating_backend(settings) as rater:
        judgments = rater.judge(judge_requests(work, profiles, templates, args.max_liked))
        scores = pmi_scores(rater, work, profiles, templates[LIKELIHOOD_TEMPLATE],
                            args.max_liked)
        print(f"rater {rater.model_id}")

    # mass: the probability on the three labels together; score: the likelihood reader's
    print("user kind       view label  P(High)  P(Med)  P(Low)   mass   score  item")
    for w, j, s in zip(work, judgments, scores):
        probs = " ".join(f"{(j.probs or {}).get(k, nan):7.3f}" for k in LABELS)
        print(f"{w.user:>4} {w.kind:<10} {w.view:<4} {j.label or '-':<6} {probs} "
              f"{j.label_mass or nan:6.3f} {nan if s is None else s:7.2f}  "
              f"{profiles.item_names[w.item][:40]}")

if __name__ == "__main__":
    main(parse_args())
