"""Wall time with device synchronisation, and the inference benchmark's timed passes
(translation, incremental generation of a language model from prompts, or a sentence
classifier's forward pass): every model runs the same batches, models interleaved within
each repeat, after warm-up; each repeat times an end-to-end pass, then an instrumented pass
that adds up the time of every attention module (:class:`AttentionClock`)."""
import logging
import time
from collections import defaultdict
from typing import Dict, List

import torch

logger = logging.getLogger("pass_fairseq.bench")


class Timer:
    """Wall time with device synchronisation (CUDA work is asynchronous)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class AttentionClock:
    """Adds up the time each attention module spends in its forward and in reordering its
    key/value cache for the beam (``reorder_incremental_state``, called by the generator
    between steps). The cache is attention's own work and grows with the kept heads, so
    it belongs to the module's attention time (and to its share of the ideal)."""

    def __init__(self, model, timer: Timer):
        self.timer = timer
        self.totals: Dict[str, float] = defaultdict(float)
        self.calls: Dict[str, int] = defaultdict(int)  #: forward calls (decoding steps) per module
        self.handles = []
        self.wrapped = []
        self.starts: Dict[str, float] = {}
        for name, module in attention_modules(model):
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post(name)))
            module.reorder_incremental_state = self._timed(name, module.reorder_incremental_state)
            self.wrapped.append(module)

    def _pre(self, name):
        def hook(module, args):
            self.starts[name] = self.timer.now()
        return hook

    def _post(self, name):
        def hook(module, args, output):
            self.totals[name] += self.timer.now() - self.starts.pop(name)
            self.calls[name] += 1
        return hook

    def _timed(self, name, reorder):
        def timed_reorder(incremental_state, new_order):
            start = self.timer.now()
            result = reorder(incremental_state, new_order)
            self.totals[name] += self.timer.now() - start
            return result
        return timed_reorder

    def remove(self):
        for h in self.handles:
            h.remove()
        for module in self.wrapped:
            del module.reorder_incremental_state  # the instance attribute; the method shows again


def attention_modules(model):
    """(name, module) of every attention module, stock, gated or pruned."""
    from fairseq.modules.multihead_attention import MultiheadAttention

    from pass_fairseq.modules.pruned_attention import PrunedMultiheadAttention

    return [(n, m) for n, m in model.named_modules() if isinstance(m, (MultiheadAttention, PrunedMultiheadAttention))]


def decode(task, generator, model, batches, prompt_len: int) -> int:
    """Run the task's generation on every batch (translation: the source sentences; a
    language model: continue the prompts); returns the number of tokens the best
    hypotheses generated (their ``prompt_len`` prompt tokens not counted)."""
    tokens = 0
    with torch.inference_mode():
        for batch in batches:
            hypos = task.inference_step(generator, [model], batch)
            tokens += sum(int(h[0]["tokens"].numel()) - prompt_len for h in hypos)
    return tokens


def time_decoding(models, task, batches, timer: Timer, beam: int, out_len: int, warmup: int, repeats: int,
                  prompt_len: int = 0) -> List[dict]:
    """:func:`time_passes` of beam search with fixed ``out_len``-token outputs (after the
    ``prompt_len``-token prompts of a language model), so every model does the same steps;
    ``tokens``: the generated tokens of one pass."""
    from fairseq.sequence_generator import SequenceGenerator

    # a generator decodes with the models it was built with
    length = prompt_len + out_len
    generators = [SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_a=0, max_len_b=length,
                                    min_len=length) for model in models]
    passes = [lambda g=generator, m=model: decode(task, g, m, batches, prompt_len)
              for model, generator in zip(models, generators)]
    return time_passes(models, passes, timer, warmup, repeats)


def classify(model, batches, head: str) -> int:
    """A sentence classifier's forward pass over every batch (encoder and classification
    head); returns the number of tokens it read."""
    tokens = 0
    with torch.inference_mode():
        for batch in batches:
            model(**batch["net_input"], features_only=True, classification_head_name=head)
            tokens += int(batch["net_input"]["src_lengths"].sum())
    return tokens


def time_classification(models, batches, timer: Timer, warmup: int, repeats: int, head: str) -> List[dict]:
    """:func:`time_passes` of a sentence classifier's forward pass; ``tokens``: the tokens
    read in one pass."""
    return time_passes(models, [lambda m=model: classify(m, batches, head) for model in models], timer, warmup,
                       repeats)


def time_passes(models, passes, timer: Timer, warmup: int, repeats: int) -> List[dict]:
    """Per model (``passes[i]()`` runs model i over every batch and returns its token
    count): ``e2e`` and ``attn`` (seconds per timed repeat), ``per_module`` (attention module
    -> seconds per timed repeat), ``calls`` (attention module -> forward calls in one pass)
    and ``tokens`` (of one pass). Models interleaved within each repeat, after ``warmup``
    untimed repeats; each repeat times an end-to-end pass, then an instrumented one."""
    results = [dict(e2e=[], attn=[], per_module=defaultdict(list), calls={}, tokens=0) for _ in models]
    for rep in range(warmup + repeats):
        for model, one_pass, result in zip(models, passes, results):
            t0 = timer.now()
            tokens = one_pass()
            t1 = timer.now()
            clock = AttentionClock(model, timer)
            one_pass()
            clock.remove()
            if rep >= warmup:
                result["e2e"].append(t1 - t0)
                result["tokens"] = tokens
                result["calls"] = dict(clock.calls)
                result["attn"].append(sum(clock.totals.values()))
                for name, secs in clock.totals.items():
                    result["per_module"][name].append(secs)
        logger.info("repeat %d/%d done", rep + 1, warmup + repeats)
    return results
