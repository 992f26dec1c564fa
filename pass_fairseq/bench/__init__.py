"""The plugin's benchmarks, measured side by side in one run (interleaved repeats, medians).

* inference (``pass-bench-inference``): unpruned, gated, attention-free and pruned models
  decoding the same sentences: :mod:`.variants` builds the models, :mod:`.timing` times
  them, :mod:`.summary` turns the timings into speed-ups (pure arithmetic);
* one attention module's call, isolated (``pass-profile-step``): stock against pruned
  modules of 1 ... heads heads per module kind: :mod:`.step_profile`;
* training (``pass-bench-training``): one PASS update against one stock fairseq update on
  the same batches: :mod:`.training`.

:mod:`.data` checks and batches the data, :mod:`.tables` writes the markdown and CSV tables.
"""
