"""``pass-michel-prune DATA CKPT --heads 8,16,32 --save-dir DIR [--random]``: head masks that
train no gates, written as gated checkpoints (docs/method.md, "Baselines").

Loads a stock ``transformer`` checkpoint (or a gated one: its gates are ignored), builds the
gated model with every gate open and deterministic, and selects the heads to keep at each K:
Michel et al.'s iterative pruning by head importance (:mod:`pass_fairseq.michel`, the
gradient of the loss of ``--max-batches`` batches of ``--subset`` with respect to the gate
values), or ``--random`` heads. For each K it writes ``DIR/<method>_k<K>.pt``, a
``transformer_pass`` checkpoint whose log_alpha are +10 (kept) or -10 (removed), which
``pass-prune-checkpoint``, ``pass-inspect-gates`` and fairseq-generate read as they are and
``fairseq-train --finetune-from-model ... --pass-method fixed`` fine-tunes with exactly that
mask; and ``DIR/<method>.json`` with the importance of every step and the masks. The same
seed gives the same batches, scores and masks.
"""
import argparse
import copy
import os
import sys
from typing import List, Optional

import torch

from pass_fairseq.checkpoints import load_checkpoint, masked_checkpoint, save_atomic
from pass_fairseq.cli import one_line_errors, parse_cli, parse_int_list
from pass_fairseq.errors import fail
from pass_fairseq.files import write_json
from pass_fairseq.gates import CLIP_MAX, CLIP_MIN
from pass_fairseq.michel import head_importance, iterative_masks, random_masks, split_kept
from pass_fairseq.pruning import gate_only

#: models whose weights the gated model takes as they are
SOURCE_MODELS = ("transformer", "transformer_pass")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pass-michel-prune", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="data-bin directory of the checkpoint's language pair")
    p.add_argument("checkpoint", metavar="CKPT", help="a transformer (or transformer_pass) checkpoint")
    p.add_argument("--heads", required=True, metavar="K[,K...]", dest="targets", help="head counts to keep, e.g. 8,16,32")
    p.add_argument("--save-dir", required=True, metavar="DIR", help="where the checkpoints and the JSON go")
    p.add_argument("--random", action="store_true", help="K heads drawn at random (seeded) instead of Michel's")
    p.add_argument("--seed", type=int, default=1, help="batch order (and --random draw) seed (default 1)")
    p.add_argument("--subset", default="train", help="held-in split whose batches give the importance"
                                                     " (default train)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch (default 4096)")
    p.add_argument("--max-batches", type=int, default=100, help="batches per importance estimate (default 100)")
    p.add_argument("--step-fraction", type=float, default=0.1,
                   help="heads removed per step, as a fraction of all heads (default 0.1, Michel's 10%%)")
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="label smoothing of the loss whose gradient ranks heads (default 0: the NLL)")
    p.add_argument("--cpu", action="store_true", help="run on CPU even when CUDA is available")
    return p



def gated_model_args(model_cfg) -> argparse.Namespace:
    """The source model's config as a ``transformer_pass`` model with frozen Hard Concrete
    gates used without noise (``--pass-method fixed``), open where no gate is given."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    args = copy.deepcopy(model_cfg)
    arch = getattr(args, "arch", None)
    if ARCH_MODEL_NAME_REGISTRY.get(arch) not in SOURCE_MODELS:
        fail(f"the checkpoint's model is {arch}: give a transformer or transformer_pass checkpoint")
    if ARCH_MODEL_NAME_REGISTRY[arch] == "transformer":  # its config holds every setting the arch sets
        args.arch = "transformer_pass"
    args._name = args.arch
    args.pass_method, args.pass_gate_type, args.pass_gate_noise = "fixed", "hard-concrete", "none"
    args.pass_missing_gate_init = CLIP_MAX
    return args


def without_gates(state_dict: dict) -> dict:
    """The weights without any gate entry or schedule buffer."""
    return {k: v for k, v in state_dict.items() if not gate_only(k)}


def held_in_batches(task, model, args) -> list:
    """The first ``--max-batches`` batches of ``--subset``, in the order of ``--seed``."""
    from fairseq import utils

    task.load_dataset(args.subset)
    iterator = task.get_batch_iterator(
        dataset=task.dataset(args.subset), max_tokens=args.max_tokens,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=True, seed=args.seed, num_workers=0)
    batches = []
    for sample in iterator.next_epoch_itr(shuffle=True):
        if len(batches) == args.max_batches:
            break
        batches.append(sample)
    if not batches:
        fail(f"the {args.subset} split of {args.data} gives no batch")
    return batches


@one_line_errors
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_cli(build_parser(), argv)
    targets = parse_int_list(args.targets, "--heads")
    if args.max_batches < 1 or args.max_tokens < 1 or not 0 < args.step_fraction <= 1:
        fail("--max-batches and --max-tokens must be >= 1 and --step-fraction in (0, 1]")
    if not os.path.isdir(args.save_dir):
        fail(f"--save-dir {args.save_dir}: no such directory")

    from fairseq import checkpoint_utils, utils
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    from pass_fairseq.models.transformer_pass import TransformerPassModel

    torch.manual_seed(args.seed)
    state = load_checkpoint(args.checkpoint)
    model_args = gated_model_args((state.get("cfg") or {}).get("model") or state.get("args"))
    source, _, task = checkpoint_utils.load_model_ensemble_and_task([args.checkpoint],
                                                                    arg_overrides={"data": args.data})
    model = TransformerPassModel.build_model(model_args, task)
    model.load_state_dict(without_gates(source[0].state_dict()), strict=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    model.to(device).eval()
    names = [name for name, _ in model.gated_attentions()]
    gates = [m.gate for _, m in model.gated_attentions()]
    sizes = [g.num_gates for g in gates]
    method = "random" if args.random else "michel"

    try:
        if args.random:
            masks, order = random_masks(sum(sizes), targets, args.seed)
            record = {"order": order}
        else:
            criterion = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False,
                                                           label_smoothing=args.label_smoothing)
            batches = [utils.move_to_cuda(b) if device.type == "cuda" else b
                       for b in held_in_batches(task, model, args)]

            def loss(batch):
                return criterion(model, batch)[0]

            def importance(mask):
                return head_importance(gates, loss, batches, mask.to(device))

            step = max(1, round(args.step_fraction * sum(sizes)))
            masks, steps = iterative_masks(importance, sizes, targets, step)
            record = {"batches": len(batches), "step": step, "steps": steps}
    except ValueError as e:
        fail(str(e))

    written = []
    for target_heads, mask in sorted(masks.items()):
        with torch.no_grad():
            for gate, part in zip(gates, mask.split(sizes)):
                gate.log_alpha.copy_(torch.where(part, CLIP_MAX, CLIP_MIN))
        path = os.path.join(args.save_dir, f"{method}_k{target_heads}.pt")
        model_state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
        save_atomic(masked_checkpoint(state, model_state, model_args), path)
        written.append(path)
    summary = {
        "method": method, "checkpoint": os.path.abspath(args.checkpoint), "data": os.path.abspath(args.data),
        "subset": args.subset, "seed": args.seed, "max_tokens": args.max_tokens,
        "label_smoothing": args.label_smoothing, "modules": dict(zip(names, sizes)), **record,
        "masks": {str(target_heads): dict(zip(names, split_kept(m, sizes))) for target_heads, m in sorted(masks.items())},
    }
    json_path = os.path.join(args.save_dir, f"{method}.json")
    write_json(json_path, summary, indent=1)
    print(f"pass_fairseq: wrote {', '.join(written)} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # python -m pass_fairseq.cli.michel_prune
    sys.exit(main())
