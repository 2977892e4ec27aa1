"""What the rater said about each candidate pair, and where it is kept: the rating plan (work
items, prompts, order, failure rules, the one routine that turns a batch into store rows;
``plan``), the in-process loop (``run``) and the Ray Data job (``ray_job``), the likelihood
reader (``likelihood``), the judgment store (``store``), shards and repair; judgments made
elsewhere brought in as a file (``imported``), read and checked row by row by ``table_file``
(which the verdicts import shares).

The room is not called ``rating``: in this toolkit a rating is what a MovieLens user gave."""
