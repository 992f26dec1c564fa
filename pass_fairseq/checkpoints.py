"""Checkpoint I/O, in one place: loading (with the safe globals set explicitly), atomic
saving, and conversion of a gated (``transformer_pass*``, ``transformer_lm_pass*``,
``roberta_pass*``) checkpoint into a deployable one.

Conversion, :func:`convert` (the CLI is ``pass-prune-checkpoint``), to what the gated
model's :data:`DEPLOYMENTS` entry names:

* ``pruned`` (default): pruned heads physically removed, model ``transformer_pass_pruned``,
  ``transformer_lm_pass_pruned`` or ``roberta_pass_pruned`` (needs ``--user-dir
  pass_fairseq`` to load), its kept heads recorded in the model config;
* ``stock``: dense ``transformer``, ``transformer_lm`` or ``roberta`` checkpoint with the
  eval gates folded into out_proj, loadable by stock fairseq without the plugin.

Both drop the gates, the PASS schedule buffers and the optimizer state.

:func:`masked_checkpoint` goes the other way for the methods that train no gates
(``pass-michel-prune``): a ``transformer_pass`` checkpoint whose gates hold a binary mask.
"""
import argparse
import copy
import dataclasses
import hashlib
import importlib
import json
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch

from pass_fairseq.errors import PassError
from pass_fairseq.files import atomic_write
from pass_fairseq.pruning import PruningError, prune_state_dict, select_heads, state_dict_gates

#: classes a fairseq checkpoint pickles besides tensors: its model config is an argparse.Namespace
SAFE_GLOBALS = [argparse.Namespace]

#: a stock fairseq component: (registered name, module, config dataclass)
Component = Tuple[str, str, str]
ADAM: Component = ("adam", "fairseq.optim.adam", "FairseqAdamConfig")


class Deployment(NamedTuple):
    """What a gated model converts to."""

    #: the plugin's pruned model (``--format pruned``)
    pruned_model: str
    #: the stock fairseq model (``--format stock``)
    stock_model: str
    #: where the stock model's config dataclass lives, (module, class); None for a legacy
    #: (flag-based) model, whose config keeps every flag but the plugin's
    stock_model_config: Optional[Tuple[str, str]]
    #: plugin component -> stock fairseq component written into a stock checkpoint's config
    stock_components: Dict[str, Component]
    #: the criterion and optimizer class names a stock checkpoint's optimizer history records
    stock_history: Tuple[str, str]


#: gated model (registered name) -> what it converts to
DEPLOYMENTS = {
    "transformer_pass": Deployment(
        "transformer_pass_pruned", "transformer", None,
        {"task": ("translation", "fairseq.tasks.translation", "TranslationConfig"),
         "criterion": ("label_smoothed_cross_entropy", "fairseq.criterions.label_smoothed_cross_entropy",
                       "LabelSmoothedCrossEntropyCriterionConfig"),
         "optimizer": ADAM},
        ("LabelSmoothedCrossEntropyCriterion", "FairseqAdam")),
    "transformer_lm_pass": Deployment(
        "transformer_lm_pass_pruned", "transformer_lm", ("fairseq.models.transformer_lm", "TransformerLanguageModelConfig"),
        {"task": ("language_modeling", "fairseq.tasks.language_modeling", "LanguageModelingConfig"),
         "criterion": ("cross_entropy", "fairseq.criterions.cross_entropy", "CrossEntropyCriterionConfig"),
         "optimizer": ADAM},
        ("CrossEntropyCriterion", "FairseqAdam")),
    "roberta_pass": Deployment(
        "roberta_pass_pruned", "roberta", None,
        {"task": ("sentence_prediction", "fairseq.tasks.sentence_prediction", "SentencePredictionConfig"),
         "criterion": ("sentence_prediction", "fairseq.criterions.sentence_prediction", "SentencePredictionConfig"),
         "optimizer": ADAM},
        ("SentencePredictionCriterion", "FairseqAdam")),
}


def allow_checkpoint_globals() -> None:
    """Let every ``torch.load(weights_only=True)`` of this process (fairseq's own included:
    torch >= 2.6 defaults to it) read fairseq checkpoints. Called when the plugin is imported."""
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


class CheckpointError(PassError):
    """A file that is not a readable fairseq checkpoint; the message is one line for the user."""


def load_checkpoint(path: str) -> dict:
    """A fairseq checkpoint as a dict, on CPU, read with ``weights_only`` and
    :data:`SAFE_GLOBALS`; a :class:`CheckpointError` when it is missing, unreadable or has no
    ``model`` state dict."""
    allow_checkpoint_globals()  # a set: adding twice is harmless (torch's safe_globals() context would undo it)
    try:
        with open(path, "rb") as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError):
        raise CheckpointError(f"{path}: no such checkpoint")
    except Exception as e:  # noqa: BLE001  (unpickling errors come in many types)
        raise CheckpointError(f"{path}: cannot read it as a fairseq checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})")
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no 'model' state dict)")
    return state


def kept_heads(model_state: Dict[str, torch.Tensor], target_heads: Optional[int],
               threshold: Optional[float]) -> Dict[str, List[int]]:
    """Module name -> kept heads, from the checkpoint's gates (errors as PruningError)."""
    prefixes, log_alphas, subset_target_heads = state_dict_gates(model_state)
    if not prefixes:
        raise PruningError("no gates in this checkpoint (no '*.gate.log_alpha'): give one trained with a"
                           " transformer_pass architecture")
    return dict(zip(prefixes, select_heads(log_alphas, target_heads=target_heads, threshold=threshold,
                                           subset_target_heads=subset_target_heads)))


def _as_dict(cfg_part) -> dict:
    if cfg_part is None:
        return {}
    if isinstance(cfg_part, argparse.Namespace):
        return dict(vars(cfg_part))
    return dict(cfg_part)


def _config(state: dict) -> dict:
    """The checkpoint's config (a legacy checkpoint's ``args`` as its model config), or
    PruningError when it has no model config."""
    cfg = state.get("cfg") if isinstance(state, dict) else None
    if cfg is None and isinstance(state, dict) and state.get("args") is not None:
        cfg = {"model": state["args"]}
    if cfg is None or cfg.get("model") is None:
        raise PruningError("the checkpoint has no model config (cfg.model)")
    return cfg


def model_name(state: dict) -> str:
    """The registered fairseq model of a checkpoint (its architecture's), e.g.
    ``transformer_lm_pass`` for ``--arch transformer_lm_pass_gpt2_tiny``."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    model_cfg = _as_dict(_config(state)["model"])
    arch = model_cfg.get("_name") or model_cfg.get("arch")
    return ARCH_MODEL_NAME_REGISTRY.get(arch, arch)


def deployment(state: dict) -> Deployment:
    """The :data:`DEPLOYMENTS` entry of a gated checkpoint's model, or PruningError."""
    model = model_name(state)
    if model not in DEPLOYMENTS:
        raise PruningError(f"the checkpoint's model is {model}: give one trained with a gated architecture"
                           f" ({', '.join(a + '*' for a in DEPLOYMENTS)})")
    return DEPLOYMENTS[model]


def _dataclass_fields(module: str, cls: str) -> list:
    """The fields of fairseq's config dataclass ``module.cls``."""
    return dataclasses.fields(getattr(importlib.import_module(module), cls))


def _stock_component(part: dict, component: Component) -> dict:
    """A stock component config: stock ``_name``, only the stock dataclass's fields."""
    name, module, cls = component
    fields = {f.name for f in _dataclass_fields(module, cls)}
    out = {k: v for k, v in part.items() if k in fields}
    out["_name"] = name
    return out


def _stock_model_cfg(model_cfg: dict, target: Deployment) -> dict:
    """The stock model's config: a legacy model keeps every flag but the plugin's, with its
    components renamed; a dataclass model keeps only its dataclass's fields, each of type
    int, float or bool converted to it as fairseq converts flags into a dataclass config
    (``transformer_lm``'s architecture functions set ``base_shuffle``, an int, to False)."""
    if target.stock_model_config is not None:
        from fairseq.dataclass.utils import interpret_dc_type

        out = {}
        for f in _dataclass_fields(*target.stock_model_config):
            if f.name in model_cfg:
                value, kind = model_cfg[f.name], interpret_dc_type(f.type)
                out[f.name] = kind(value) if value is not None and kind in (int, float, bool) else value
        out["_name"] = target.stock_model
        return out
    out = {k: v for k, v in model_cfg.items() if not k.startswith("pass_")}
    # components of the Namespace that name plugin parts
    for key, (name, _, _) in target.stock_components.items():
        if key in out:
            out[key] = name
    out["_name"] = target.stock_model
    out["arch"] = target.stock_model
    out["user_dir"] = None
    return out


def convert(state: dict, target_heads: Optional[int] = None, threshold: Optional[float] = None,
            fmt: str = "pruned", kept: Optional[Dict[str, List[int]]] = None) -> dict:
    """A new checkpoint dict (``state`` is not modified). Raises PruningError on bad input.

    ``kept`` (module -> head list) overrides the selection from the gates (the benchmark
    uses it for packed and attention-free layouts)."""
    if fmt not in ("pruned", "stock"):
        raise PruningError(f"--format {fmt}: give pruned or stock")
    model_state = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model_state, dict):
        raise PruningError("not a fairseq checkpoint: no 'model' state dict")
    if kept is None:
        kept = kept_heads(model_state, target_heads, threshold)
    new_model = prune_state_dict(model_state, kept, physical=fmt == "pruned")

    target = deployment(state)
    cfg = {k: copy.deepcopy(v) for k, v in _config(state).items()}
    model_cfg = _as_dict(cfg["model"])
    history = _history(state)
    if fmt == "pruned":
        model_cfg["_name"] = target.pruned_model
        model_cfg["arch"] = target.pruned_model
        model_cfg["pass_pruned_heads"] = json.dumps(kept)
        cfg["model"] = argparse.Namespace(**model_cfg)
    else:
        cfg["model"] = _stock_model_cfg(model_cfg, target)
        if isinstance(cfg.get("common"), dict):
            cfg["common"] = dict(cfg["common"], user_dir=None)
        for kind, component in target.stock_components.items():
            if cfg.get(kind) is not None:
                cfg[kind] = _stock_component(_as_dict(cfg[kind]), component)
        for entry in history:
            entry["criterion_name"], entry["optimizer_name"] = target.stock_history
    return dict(_derived(state, cfg, new_model, history), pass_pruned_heads=kept)


def stock_notes(state: dict) -> List[str]:
    """What a stock-format checkpoint of ``state`` does not keep, one line each: stock fairseq
    computes layer norms with eps 1e-5, so an encoder trained with another ``--layer-norm-eps``
    (a converted BERT's) gives slightly other outputs there."""
    from pass_fairseq.models.roberta_pass import FAIRSEQ_LAYER_NORM_EPS

    eps = _as_dict(_config(state)["model"]).get("layer_norm_eps")
    if eps is None or float(eps) == FAIRSEQ_LAYER_NORM_EPS:
        return []
    return [f"the model was trained with --layer-norm-eps {eps}; stock fairseq's layer norms use"
            f" {FAIRSEQ_LAYER_NORM_EPS}, so its outputs differ slightly from the gated and pruned models'"
            " (use --format pruned for the exact ones)"]


def masked_checkpoint(state: dict, model_state: Dict[str, torch.Tensor], model_cfg: argparse.Namespace) -> dict:
    """A new checkpoint dict from ``state`` (not modified): the gated model's ``model_state``
    and config, ``state``'s other configuration, no optimizer state."""
    cfg = {k: copy.deepcopy(v) for k, v in (state.get("cfg") or {}).items()}
    cfg["model"] = copy.deepcopy(model_cfg)
    return _derived(state, cfg, model_state, _history(state))


def weights_checkpoint(model_state: Dict[str, torch.Tensor], stock_history: Tuple[str, str]) -> dict:
    """A checkpoint dict holding only weights (no config, no optimizer state), as
    ``--finetune-from-model`` reads one, its history naming a :class:`Deployment`'s
    ``stock_history`` (``pass-convert-bert``: a stock roberta's)."""
    criterion_name, optimizer_name = stock_history
    history = [{"criterion_name": criterion_name, "optimizer_name": optimizer_name,
                "lr_scheduler_state": {"best": None}, "num_updates": 0}]
    return _derived({}, None, model_state, history)


def _history(state: dict) -> List[dict]:
    """The last optimizer-history entry without the optimizer state."""
    history = copy.deepcopy(state.get("optimizer_history") or [{}])[-1:]
    for entry in history:
        entry.pop("optimizer", None)
        entry.setdefault("num_updates", 0)
        entry.setdefault("lr_scheduler_state", {})
    return history


def _derived(state: dict, cfg: dict, model_state: Dict[str, torch.Tensor], history: List[dict]) -> dict:
    """A checkpoint dict with ``state``'s task and extra state and no optimizer state."""
    return {
        "args": None,
        "cfg": cfg,
        "model": model_state,
        "criterion": None,
        "optimizer_history": history,
        "task_state": state.get("task_state") or {},
        "extra_state": copy.deepcopy(state.get("extra_state") or {}),
        "last_optimizer_state": None,
    }


def save_atomic(obj, path: str) -> None:
    """``torch.save`` ``obj`` to ``path`` whole or not at all (:func:`pass_fairseq.files.atomic_write`)."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def weights_fingerprint(model_state: Dict[str, torch.Tensor]) -> str:
    """SHA-256 of a model state dict's names, dtypes, shapes and values, in name order: two
    checkpoints with equal fingerprints hold the same model, bit for bit (e.g. a base trained
    again on another day with the same command)."""
    digest = hashlib.sha256()
    for name in sorted(model_state):
        tensor = model_state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
