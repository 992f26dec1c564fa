"""The inference benchmark's models, from one gated checkpoint.

Written to the work directory (:func:`pass_fairseq.checkpoints.convert`, saved atomically):
the unpruned model as a stock fairseq model (``transformer`` or ``transformer_lm``), an
attention-free model (every attention module skipped, for T_noattn) and pruned models at
each K with the checkpoint's own top-K mask (``topk``) and with the same K packed into as few
modules as possible (``packed``, what the concentrator aims for); the gated checkpoint itself
is used as it is. More gated checkpoints of the same architecture (``others``) add their own
pruned models, labelled with their names, timed against the same unpruned model.
"""
import argparse
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from pass_fairseq.checkpoints import convert, deployment, model_name, save_atomic
from pass_fairseq.pruning import gate_only, packed_selection, select_heads, state_dict_gates


#: a checkpoint's name on its pruned models (pass-bench-inference --name and --also, a sweep's
#: run names): it becomes part of a file name and of a row label
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9._-]+")
#: what CHECKPOINT_NAME allows, for the error messages
CHECKPOINT_NAME_RULE = "letters, digits, '.', '_' or '-'"


def pruned_label(target_heads: int, layout: str, name: str = "") -> str:
    """The benchmark's row label of the pruned model at ``target_heads`` heads with ``layout``'s
    mask, and, with ``name``, of whose checkpoint."""
    return f"pruned K={target_heads} {layout}" + (f" {name}" if name else "")


@dataclass
class Variant:
    label: str
    #: unpruned, gated, noattn or pruned
    kind: str
    path: str
    #: attention module -> kept heads; None: the gated model, every head
    kept: Optional[Dict[str, List[int]]]


def module_heads(state: dict) -> Dict[str, int]:
    """Gated attention module -> number of heads, in state-dict order (empty: no gates)."""
    prefixes, log_alphas, _ = state_dict_gates(state.get("model") or {})
    return {p: la.numel() for p, la in zip(prefixes, log_alphas)}


def same_architecture(state: dict, other: dict) -> bool:
    """Whether two gated checkpoints prune to models of the same shapes: the same attention
    modules and head counts, and the same shape of every entry that is not a gate's
    (:func:`pass_fairseq.pruning.gate_only`: a Hard Concrete gate and a subset gate hold
    different buffers)."""
    def shapes(s):
        return {k: tuple(v.shape) for k, v in s["model"].items() if not gate_only(k)}
    return list(module_heads(other).items()) == list(module_heads(state).items()) and shapes(other) == shapes(state)


def write_variants(state: dict, checkpoint: str, targets: Sequence[int], layouts: Sequence[str],
                   work_dir: str, name: str = "", others: Sequence[Tuple[str, dict]] = ()) -> List[Variant]:
    """Write the converted checkpoints; returns every variant, the gated one included.
    ``name`` labels the checkpoint's own pruned models; ``others`` are (name, state) of more
    gated checkpoints of the same architecture (:func:`same_architecture`), each pruned at
    every K and layout with its own gates. Raises :class:`pass_fairseq.pruning.PruningError`
    on a bad K."""
    num_heads = module_heads(state)

    def write(file_name, kept, fmt="pruned", source=state):
        path = os.path.join(work_dir, file_name)
        save_atomic(convert(source, fmt=fmt, kept=kept), path)
        return path

    every = {p: list(range(n)) for p, n in num_heads.items()}
    none = {p: [] for p in num_heads}
    variants = [
        Variant(f"unpruned (stock {deployment(state).stock_model})", "unpruned",
                write("unpruned_stock.pt", every, fmt="stock"), every),
        Variant(f"gated ({model_name(state)})", "gated", checkpoint, None),
        Variant("no attention (all skipped)", "noattn", write("noattn.pt", none), none),
    ]
    for source_name, source in [(name, state), *others]:
        _, log_alphas, _ = state_dict_gates(source["model"])
        for target_heads in targets:
            for layout in layouts:
                selected = (select_heads(log_alphas, target_heads=target_heads) if layout == "topk"
                            else packed_selection(log_alphas, target_heads))
                kept = dict(zip(num_heads, selected))
                file_name = f"pruned_k{target_heads}_{layout}" + (f"_{source_name}" if source_name else "")
                variants.append(Variant(pruned_label(target_heads, layout, source_name), "pruned",
                                        write(f"{file_name}.pt", kept, source=source), kept))
    return variants


def load_models(variants: List[Variant], data: str, device, beam: int):
    """(models, task): every variant loaded on ``device`` with ``data`` as its data
    directory, in eval mode and prepared as fairseq-generate prepares it
    (``prepare_for_inference_``: no attention weights except the alignment layer's)."""
    from fairseq import checkpoint_utils
    from fairseq.dataclass.configs import GenerationConfig

    generation_cfg = argparse.Namespace(generation=GenerationConfig(beam=beam))
    models, task = [], None
    for variant in variants:
        loaded, _, variant_task = checkpoint_utils.load_model_ensemble_and_task([variant.path],
                                                                                arg_overrides={"data": data})
        model = loaded[0].eval().to(device)
        model.prepare_for_inference_(generation_cfg)
        models.append(model)
        task = task or variant_task
    return models, task


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
