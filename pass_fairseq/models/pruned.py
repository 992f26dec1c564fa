"""What the pruned models of every family share (``transformer_pass_pruned``,
``transformer_lm_pass_pruned``): the kept heads of every attention module live in the model
config (``pass_pruned_heads``, JSON: module name -> original head indices, written by
``pass-prune-checkpoint``), so fairseq rebuilds the right shapes before loading the weights.
"""
import json
from typing import Dict, List, Sequence, Tuple

from fairseq.modules.multihead_attention import MultiheadAttention

from pass_fairseq.errors import fail
from pass_fairseq.models.beam_sharing import SharedBeamMixin
from pass_fairseq.modules.pruned_attention import PrunedMultiheadAttention


def parse_pruned_heads(text) -> Dict[str, List[int]]:
    """The ``pass_pruned_heads`` config value (JSON object: module -> head list)."""
    try:
        heads = json.loads(text) if isinstance(text, str) else text
        if not isinstance(heads, dict):
            raise ValueError
        return {str(name): [int(h) for h in kept] for name, kept in heads.items()}
    except (TypeError, ValueError):
        fail("pass_pruned_heads must be a JSON object mapping attention modules to head lists;"
             " write checkpoints with pass-prune-checkpoint")


def add_pruned_args(parser) -> None:
    """The flag every pruned architecture takes."""
    parser.add_argument("--pass-pruned-heads", metavar="JSON",
                        help="kept heads of every attention module, as written by"
                             " pass-prune-checkpoint (JSON: module name -> original head indices)")


class PrunedModelMixin(SharedBeamMixin):
    """A fairseq model whose attention modules hold only the heads listed in its config
    (``pass_pruned_heads``); put it before the stock model class in the bases."""

    @classmethod
    def build_model(cls, args, task):
        if not getattr(args, "pass_pruned_heads", None):
            fail(f"{getattr(args, 'arch', cls.__name__)} needs pass_pruned_heads in its config;"
                 " make the checkpoint with pass-prune-checkpoint --format pruned")
        kept = parse_pruned_heads(args.pass_pruned_heads)
        model = super().build_model(args, task)
        model.prune_attention_modules(kept)
        return model

    def prune_attention_modules(self, kept: Dict[str, Sequence[int]]) -> None:
        """Replace every attention module by a pruned one with the listed heads."""
        names = [n for n, m in self.named_modules() if isinstance(m, MultiheadAttention)]
        if sorted(names) != sorted(kept):
            fail("pass_pruned_heads does not list exactly this model's attention modules"
                 f" ({len(kept)} listed, {len(names)} in the model)")
        for name in names:
            parent, _, attr = name.rpartition(".")
            mha = self.get_submodule(name)
            setattr(self.get_submodule(parent), attr, PrunedMultiheadAttention.from_attention(mha, kept[name]))

    def pruned_attentions(self) -> List[Tuple[str, PrunedMultiheadAttention]]:
        return [(n, m) for n, m in self.named_modules() if isinstance(m, PrunedMultiheadAttention)]
