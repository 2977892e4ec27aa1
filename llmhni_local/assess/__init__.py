"""Assessing a rater on users held out from every tuning set (docs/DESIGN.md, "Assessing a
rater"); ``llmhni rater assess RUN`` and benches call :func:`assess_run`.

Rooms: ``settings.py`` (what is drawn and computed), ``sample.py`` (tuning users, the held-out
sample, its labels), ``figures.py`` (scores, AUCs, kappas, the LLM's share, speed, coverage
costs), ``plot.py`` (the PNG) and ``run.py`` (:func:`assess_run`, the steps in order).

A rater's figures mean something only on users whose pairs tuned nothing: no LoRA adapter,
no probe, no verdict rule fitted on them. So the assessment

1. collects the **tuning users** of the run: every user with a pair in the audit store's
   ``finetune_pairs`` (training and validation roles), in the assessed adapter's
   ``pairs.json`` and in the run's own ``tune/probe/pairs.json``; the other users with
   training pairs are **held out**, and ``users`` of them are drawn (seeded; users with
   audited pairs first);
2. draws ``sample`` pairs per class among the drawn users' pairs: **clean** training pairs
   (rated >= 3), **noisy** ones (rated <= 2, the natural-noise flag of MovieLens; the noise
   flags where the data has no ratings) and **synthetic** ones, random pairs that occur in no
   split, their users drawn from the clean sample's pairs, so they are "clean observed pairs
   of the same users" against "never-seen pairs" (audited pairs first within a class);
3. labels the observed pairs by the run's audits where it has them (``RUN/audit``), else by
   the simulated audit rule (>= 4 High, 3 Medium, <= 2 Low: marked ``simulated``);
4. rates the sample in both views through :func:`~llmhni_local.judgments.run.rate_candidates`
   into ``RUN/assess/`` (the sample is that folder's ``candidates.parquet``), so a rerun
   rates nothing new;
5. reports per view: the label distribution, AUC on natural noise (noisy against clean) and
   on synthetic noise (never-seen against clean), 3-class and verdict kappa against the
   labels (``audit/agreement.py``), the threshold rule's verdict kappa on the scores, the
   LLM's share (cross-fitted AUC of the LLM score, of the non-LLM features, of both; folds
   grouped by user), the speed, and what judging enough candidates for a coverage of the
   run's noise would take on this machine.

A view's **score** is ``log P(High) - log(P(Medium) + P(Low))``
(:func:`~llmhni_local.verdicts.rules.high_score`, the verdict rules' score, without
calibration); a judgment that carries a numeric ``score`` of its own (the likelihood rating
mode) is read as that, in the same orientation (higher: more relevant). The AUCs rank pairs
by the **noise score**, minus the score, so 0.5 is chance and 1 a perfect reader of noise.
"""
