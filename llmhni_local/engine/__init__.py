"""What a model is asked and how it answers: the rater contract (``api``: request types,
``Judgment``, the abstract ``Rater`` and ``Embedder``), chat rendering (``chat``), label tokens
(``labels``), prompt templates (``prompts``) and the rater and embedder settings
(``settings``). Backends implement the contract (:mod:`llmhni_local.backends`)."""
