"""The stages of LLMHNI, one module each, called by the pipeline and by the single-stage
commands alike (so a setting cannot be honoured by one entry point and ignored by the other).

In order: :mod:`data`, :mod:`profiles`, :mod:`embed`, :mod:`align`, :mod:`rec_pre`,
:mod:`candidates`, :mod:`tune`, :mod:`rate`, :mod:`verdicts`, :mod:`train`, :mod:`report`.
Each has ``run_stage(run) -> summary`` (what the stage record keeps) beside the library
functions the commands call. Around them: :mod:`plan` (what each stage reads and writes),
:mod:`key` (where a stage's cache key is made), :mod:`settings` (the run's settings),
:mod:`context` (one run), :mod:`methods` (what the train stage can train) and
:mod:`train_store` (train runs kept by key).
"""
