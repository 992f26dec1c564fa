"""The experiment harness, apart from the library (nothing outside this package and ``cli/``
imports it): the commands the demo and the sweep run (:mod:`.recipes`), the demo
(:mod:`.demo`), the comparison sweep (:mod:`.sweep_config`, :mod:`.sweep`, :mod:`.tuning`,
:mod:`.results_table`), and what they share: running commands (:mod:`.jobs`), reading
fairseq-train logs (:mod:`.train_logs`), scoring (:mod:`.evaluation`), training-set shards
(:mod:`.shards`) and the toy task of the tests (:mod:`.toy_task`).
"""
