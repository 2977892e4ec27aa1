"""Stage ``embed`` (method stage 2): the profiles as vectors, in process or as a Ray Data job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmhni_local.engine.settings import EmbedderSettings
from llmhni_local.stages.context import Run
from llmhni_local.text.embed import Embeddings, embed_profiles, embedder_model_id


def embed_run(run_dir: str | Path, settings: "EmbedderSettings", *, force: bool = False,
              progress: bool = True, embed: Any = None) -> "Embeddings":
    """Embed the profiles of ``run_dir`` (or reuse vectors saved under the same key); ``embed``
    (the ``[embed]`` table) says where: in process or as a Ray Data job."""
    return embed_profiles(run_dir, settings, model_id=embedder_model_id(settings), force=force,
                          progress=progress, embed=embed)


def run_stage(run: Run) -> dict:

    emb = embed_run(run.dir, run.cfg.embedder, progress=run.progress, embed=run.cfg.embed)
    return {"dim": int(emb.users.shape[1]), "model_id": emb.meta.get("model_id"),
            "reused_vectors": emb.reused}
