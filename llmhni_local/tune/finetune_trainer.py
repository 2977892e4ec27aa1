"""The LoRA loop on transformers' ``Trainer``: the answer-position loss, checkpoints and resume,
validation and progress.

The Trainer runs the loop (AdamW, linear warm-up and decay, gradient clipping, seeds) and its
checkpoints. What is ours:

- the data: :class:`~llmhni_local.tune.finetune_runner.LengthBatchSampler` (length-sorted
  batches, shuffled per epoch with the seed ``[seed, epoch]``) and
  :class:`~llmhni_local.tune.finetune_runner.AnswerCollator` (left-padded inputs, or the
  frozen layers' cached states, and the answer positions);
- the loss (:func:`answer_loss`, the Trainer's ``compute_loss``): the model computes logits
  for the last ``keep`` positions only (``logits_to_keep``) and the loss is the class-weighted
  cross-entropy of the answer tokens there, never on the prompt;
- a callback that measures the validation pairs after each epoch, writes the epoch's record
  into the Trainer's ``log_history`` (so a checkpoint carries it) and drives the progress bar.

Checkpoints are the Trainer's own (``checkpoint-STEP/`` in the work folder ``.<out>.work/``,
one per epoch, the newest kept): LoRA weights, optimiser, scheduler, RNG states, state and
history. ``fingerprint.txt`` beside them names the inputs they belong to; a run started again
with the same fingerprint resumes from the newest complete one (``resume_from_checkpoint``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhni_local.tune.finetune_runner import (
    AnswerCollator,
    LengthBatchSampler,
    Runner,
    evaluate_examples,
)

STATE_FILE = "trainer_state.json"  # the Trainer writes it last: a checkpoint without it is cut
FINGERPRINT_FILE = "fingerprint.txt"
RECORD = "finetune"  # the key of our epoch records in the Trainer's log_history


# ---------------------------------------------------------------------------- the work folder
def open_work(out: Path, fingerprint: str, log: Callable[[str], None]) -> tuple[Path, Path | None]:
    """The work folder ``.<out>.work`` and the checkpoint to resume from (``None``: start
    over; a folder of other inputs is emptied)."""
    work = out.parent / f".{out.name}.work"
    marker = work / FINGERPRINT_FILE
    same = marker.is_file() and marker.read_text().strip() == fingerprint
    if not same and work.is_dir() and any(p.name != FINGERPRINT_FILE for p in work.iterdir()):
        log(f"finetune: checkpoints in {work} are from other inputs or settings; starting over")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint + "\n")
    return work, last_checkpoint(work)


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete checkpoint in ``work``; one a kill cut short (no readable state
    file) is removed."""
    found = []
    for path in work.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if not (path.is_dir() and step.isdigit()):
            continue
        try:
            json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
            continue
        found.append((int(step), path))
    return max(found)[1] if found else None


def checkpoint_state(path: Path) -> dict[str, Any]:
    """The Trainer's state in a checkpoint (``epoch``, ``global_step``, ``log_history``)."""
    return json.loads((path / STATE_FILE).read_text())


def epoch_records(log_history: list[dict]) -> list[dict[str, Any]]:
    """Our per-epoch records (epoch 0: the untuned model) from the Trainer's log history."""
    return [entry[RECORD] for entry in log_history if RECORD in entry]


# ---------------------------------------------------------------------------- the loss
@dataclass
class Meter:
    """The reported training loss of the running epoch: the cross-entropy at the scored
    (first) answer position, unweighted, as validation reports it."""

    total: float = 0.0
    n: int = 0

    @property
    def mean(self) -> float:
        return self.total / max(1, self.n)


def answer_loss(runner: Runner, model: Any, batch: dict[str, Any], weights, tid,
                meter: Meter | None = None):
    """Cross-entropy at every answer position of a batch from ``AnswerCollator``, weighted
    by its example's label weight; the prompt carries no loss."""
    import torch
    import torch.nn.functional as F

    window = runner.forward(batch["inputs"], batch["keep"], model)
    rows, target = batch["rows"], batch["target"]
    per_pos = F.cross_entropy(window[rows, batch["cols"]], batch["tokens"], reduction="none")
    w = weights[target][rows]
    loss = (per_pos * w).sum() / w.sum().clamp(min=1e-8)
    if meter is not None:
        with torch.no_grad():
            first = window[torch.arange(len(target)), batch["first"]]
            meter.total += float(F.cross_entropy(first, tid[target], reduction="sum"))
            meter.n += len(target)
    return loss


def training_args(settings: Any, work: Path, total_steps: int):
    """The Trainer's settings: ours, an epoch checkpoint (the newest kept), on the CPU, and
    nothing reported, pushed or shown by the Trainer itself (the progress bar is ours)."""
    from transformers import TrainingArguments

    s = settings
    return TrainingArguments(
        output_dir=str(work), num_train_epochs=s.epochs, per_device_train_batch_size=s.batch_size,
        learning_rate=s.lr, weight_decay=s.weight_decay, max_grad_norm=s.max_grad_norm,
        optim="adamw_torch", lr_scheduler_type="linear",
        warmup_steps=int(s.warmup_share * total_steps), seed=s.seed, data_seed=s.seed,
        save_strategy="epoch", save_total_limit=1, eval_strategy="no", logging_strategy="no",
        report_to="none", push_to_hub=False, disable_tqdm=True, use_cpu=True,
        remove_unused_columns=False, dataloader_pin_memory=False, label_names=[])


def make_trainer(job: Any, work: Path, model: Any, runner: Runner, targets: tuple,
                 callback: Any, meter: Meter):
    """A ``Trainer`` whose loss is :func:`answer_loss` on ``job``'s training examples;
    ``targets``: the class weights and the label token ids."""
    from torch.utils.data import DataLoader
    from transformers import PrinterCallback, Trainer

    weights, tid = targets
    s, ex = job.settings, job.train_ex
    sampler = LengthBatchSampler([len(r) for r in ex.ids], s.batch_size, s.seed)
    total = len(sampler) * s.epochs

    class AnswerTrainer(Trainer):
        def get_train_dataloader(self):
            return self.accelerator.prepare(DataLoader(
                self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = answer_loss(runner, model, inputs, weights, tid, meter)
            return (loss, None) if return_outputs else loss

        def floating_point_ops(self, inputs):
            return 0  # the token count it estimates is of input ids, which a cached batch lacks

    trainer = AnswerTrainer(model=model, args=training_args(s, work, total),
                            train_dataset=list(range(len(ex.ids))),
                            data_collator=AnswerCollator(runner, "train", ex),
                            callbacks=[callback])
    trainer.remove_callback(PrinterCallback)  # it prints the Trainer's log dicts
    return trainer


# ---------------------------------------------------------------------------- the callback
def epoch_callback(job: Any, runner: Runner, tid, meter: Meter, bar: Any,
                   log: Callable[[str], None], on_epoch: Callable[[int], None] | None):
    """The callback that validates (before tuning, with ``validate_before``, and after each
    epoch), records each epoch in the Trainer's ``log_history``, advances ``bar`` per step and
    calls ``on_epoch(epoch)`` once the epoch's checkpoint is written."""
    from transformers import TrainerCallback

    s = job.settings
    validate = len(job.val_idx) > 0

    def measure() -> dict[str, Any]:
        return evaluate_examples(runner, "val", job.val_ex, tid.tolist(), s.batch_size * 2)

    class EpochRecords(TrainerCallback):
        epoch, t0 = 0, 0.0

        def on_train_begin(self, args, state, control, **kw):
            if state.global_step == 0 and s.validate_before and validate:
                t0 = time.perf_counter()
                record = {"epoch": 0, "val": measure(), "seconds": time.perf_counter() - t0}
                state.log_history.append({RECORD: record, "step": 0})

        def on_epoch_begin(self, args, state, control, **kw):
            self.epoch, self.t0 = round(state.epoch or 0) + 1, time.perf_counter()
            meter.total, meter.n = 0.0, 0

        def on_step_end(self, args, state, control, **kw):
            bar.advance(1, epoch=f"{self.epoch}/{s.epochs}", loss=meter.mean)

        def on_epoch_end(self, args, state, control, lr_scheduler=None, **kw):
            record: dict[str, Any] = {"epoch": self.epoch, "train_loss": meter.mean,
                                      "lr_end": lr_scheduler.get_last_lr()[0]}
            if validate:
                record["val"] = measure()
            record["seconds"] = time.perf_counter() - self.t0
            state.log_history.append({RECORD: record, "step": state.global_step})
            val = record.get("val", {})
            log(f"finetune: epoch {self.epoch}/{s.epochs} train loss {record['train_loss']:.4f}"
                + (f", validation kappa {val['kappa']:.3f}, loss {val['loss']:.4f}"
                   if val else ""))

        def on_save(self, args, state, control, **kw):
            if on_epoch is not None:
                on_epoch(self.epoch)

    return EpochRecords()
