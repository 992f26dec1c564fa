"""``transformer_pass_pruned``: a Transformer whose pruned attention heads are physically gone.

Written by ``scripts/prune_checkpoint.py --format pruned``. The kept heads of every
attention module live in the model config (``pass_pruned_heads``, JSON: module name ->
original head indices), so fairseq rebuilds the right shapes before loading the weights.
A module left with no head is skipped: it returns its out_proj bias, the constant the
full module would add once all its heads are closed.

fairseq's ``MultiheadAttention`` insists on heads x head_dim == embed_dim (or, with
``skip_embed_dim_check``, still divides by the head count), so the pruned module is its
own ``nn.Module``, with fairseq's incremental-state API: the key/value cache is stored per
module as (kv_batch, heads, length, head_dim) under ``attn_state`` and reordered along
its first axis, and encoder attention keeps one key copy per sentence under beam search.
"""
import json
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from fairseq.incremental_decoding_utils import with_incremental_state
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture
from fairseq.modules.fairseq_dropout import FairseqDropout
from fairseq.modules.multihead_attention import MultiheadAttention
from torch import Tensor, nn

from pass_fairseq.errors import fail

IncrementalState = Optional[Dict[str, Dict[str, Optional[Tensor]]]]


@with_incremental_state
class PrunedMultiheadAttention(nn.Module):
    """Attention over a subset of the original heads; zero heads means "skipped".

    ``kept_heads`` are the original indices (kept for reporting); the projections hold
    ``len(kept_heads) * head_dim`` channels, the scaling stays ``head_dim ** -0.5``.
    """

    def __init__(self, embed_dim: int, kept_heads: Sequence[int], head_dim: int, kdim: Optional[int] = None,
                 vdim: Optional[int] = None, dropout: float = 0.0, bias: bool = True,
                 self_attention: bool = False, encoder_decoder_attention: bool = False):
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.kept_heads = [int(h) for h in kept_heads]
        self.num_heads = len(self.kept_heads)
        self.head_dim = head_dim
        self.scaling = head_dim ** -0.5
        self.self_attention = self_attention
        self.encoder_decoder_attention = encoder_decoder_attention
        self.dropout_module = FairseqDropout(dropout, module_name=self.__class__.__name__)
        self.beam_size = 1
        inner = self.num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(self.kdim, inner, bias=bias)
        self.v_proj = nn.Linear(self.vdim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    @classmethod
    def from_attention(cls, mha: nn.Module, kept_heads: Sequence[int]) -> "PrunedMultiheadAttention":
        """An empty-weight pruned module with ``mha``'s configuration (weights come from the
        checkpoint)."""
        module = cls(mha.embed_dim, kept_heads, mha.head_dim, kdim=mha.kdim, vdim=mha.vdim,
                     dropout=mha.dropout_module.p, bias=mha.q_proj.bias is not None,
                     self_attention=mha.self_attention, encoder_decoder_attention=mha.encoder_decoder_attention)
        return module.to(mha.q_proj.weight)

    @property
    def skipped(self) -> bool:
        return self.num_heads == 0

    def extra_repr(self) -> str:
        return f"kept_heads={self.kept_heads}, head_dim={self.head_dim}"

    # ---- incremental state (fairseq's API) ---------------------------------------------
    def _get_input_buffer(self, incremental_state: IncrementalState) -> Dict[str, Optional[Tensor]]:
        result = self.get_incremental_state(incremental_state, "attn_state")
        return result if result is not None else {}

    def _set_input_buffer(self, incremental_state: IncrementalState, buffer: Dict[str, Optional[Tensor]]):
        return self.set_incremental_state(incremental_state, "attn_state", buffer)

    def set_beam_size(self, beam_size: int) -> None:
        self.beam_size = beam_size

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor):
        """Follow the beam: pick the cache rows of ``new_order``. Encoder attention caches
        one row per sentence under beam search; sentences keep their position, so there is
        nothing to move unless sentences were dropped (finished)."""
        buffer = self._get_input_buffer(incremental_state)
        if not buffer:
            return incremental_state
        for name, value in buffer.items():
            if value is None:
                continue
            if self.encoder_decoder_attention:
                if value.size(0) * self.beam_size == new_order.size(0):
                    return incremental_state
                if self.beam_size > 1:
                    rows = new_order.reshape(-1, self.beam_size)[:, 0] // self.beam_size
                else:
                    rows = new_order
            else:
                rows = new_order
            buffer[name] = value.index_select(0, rows)
        return self._set_input_buffer(incremental_state, buffer)

    # ---- forward -----------------------------------------------------------------------
    def forward(
        self,
        query: Tensor,
        key: Optional[Tensor],
        value: Optional[Tensor],
        key_padding_mask: Optional[Tensor] = None,
        incremental_state: IncrementalState = None,
        need_weights: bool = True,
        static_kv: bool = False,
        attn_mask: Optional[Tensor] = None,
        before_softmax: bool = False,
        need_head_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Time x Batch x Channel in and out. Attention weights (when asked for) are
        averaged over the kept heads only; a skipped module returns none."""
        tgt_len, bsz, embed_dim = query.size()
        if self.skipped:
            if before_softmax:
                raise RuntimeError("a skipped attention module has no attention scores")
            bias = self.out_proj.bias
            if bias is None:
                return query.new_zeros(tgt_len, bsz, embed_dim), None
            return bias.to(query.dtype).expand(tgt_len, bsz, embed_dim), None

        need_weights = need_weights or need_head_weights
        heads, head_dim = self.num_heads, self.head_dim
        saved = None
        if incremental_state is not None:
            saved = self._get_input_buffer(incremental_state)
            if static_kv and "prev_key" in saved:
                key = value = None

        q = self.q_proj(query) * self.scaling
        k = v = None
        if self.self_attention:
            k, v = self.k_proj(query), self.v_proj(query)
        elif key is not None:
            if self.encoder_decoder_attention and self.beam_size > 1 and key.size(1) == bsz:
                # the beam's copies of a sentence share one encoder output: use the first
                key = key.view(key.size(0), -1, self.beam_size, key.size(2))[:, :, 0, :]
                if key_padding_mask is not None:
                    key_padding_mask = key_padding_mask.view(-1, self.beam_size, key_padding_mask.size(1))[:, 0, :]
            k = self.k_proj(key)
            v = self.v_proj(key if self.encoder_decoder_attention else value)

        q = q.view(tgt_len, bsz, heads, head_dim).permute(1, 2, 0, 3)  # (bsz, heads, tgt, d)
        if k is not None:
            kv_rows = k.size(1)
            k = k.view(-1, kv_rows, heads, head_dim).permute(1, 2, 0, 3)
            v = v.view(-1, kv_rows, heads, head_dim).permute(1, 2, 0, 3)

        if saved is not None:
            if "prev_key" in saved:
                if static_kv:
                    k, v = saved["prev_key"], saved["prev_value"]
                else:
                    k = torch.cat([saved["prev_key"], k], dim=2)
                    v = torch.cat([saved["prev_value"], v], dim=2)
            key_padding_mask = MultiheadAttention._append_prev_key_padding_mask(
                key_padding_mask=key_padding_mask,
                prev_key_padding_mask=saved.get("prev_key_padding_mask"),
                batch_size=k.size(0),
                src_len=k.size(2),
                static_kv=static_kv,
            )
            saved["prev_key"], saved["prev_value"] = k, v
            saved["prev_key_padding_mask"] = key_padding_mask
            self._set_input_buffer(incremental_state, saved)

        kv_bsz, src_len = k.size(0), k.size(2)
        if key_padding_mask is not None and key_padding_mask.dim() == 0:
            key_padding_mask = None
        # Beam copies of a sentence share one cached encoder key: fold them into the query
        # length, (bsz, H, tgt, d) -> (kv_bsz, H, group * tgt, d), so every product is a
        # plain 4-d batched one (broadcasting a 5-d one is about 2x slower on CPU).
        group = bsz // kv_bsz
        if group > 1:
            q = q.view(kv_bsz, group, heads, tgt_len, head_dim).transpose(1, 2).reshape(
                kv_bsz, heads, group * tgt_len, head_dim)
            if attn_mask is not None:
                attn_mask = attn_mask.repeat(group, 1)

        mask = None
        if attn_mask is not None:
            mask = attn_mask.to(q.dtype)
        if key_padding_mask is not None:
            pad = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
            pad = pad.masked_fill(key_padding_mask.to(torch.bool), float("-inf")).view(kv_bsz, 1, 1, src_len)
            mask = pad if mask is None else mask + pad

        probs = None
        if need_weights or before_softmax or self.training:
            scores = q @ k.transpose(-1, -2)
            if mask is not None:
                scores = scores + mask
            if before_softmax:
                return self._ungroup(scores, group).reshape(bsz * heads, tgt_len, src_len), \
                    v.reshape(kv_bsz * heads, src_len, head_dim)
            probs = torch.softmax(scores.float(), dim=-1)
            ctx = self.dropout_module(probs.type_as(scores)) @ v
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        ctx = self._ungroup(ctx, group)  # (bsz, heads, tgt, d)
        ctx = ctx.permute(2, 0, 1, 3).reshape(tgt_len, bsz, heads * head_dim)
        out = self.out_proj(ctx)

        weights = None
        if need_weights:
            weights = self._ungroup(probs, group).transpose(1, 0)
            if not need_head_weights:
                weights = weights.mean(dim=0)
        return out, weights

    @staticmethod
    def _ungroup(x: Tensor, group: int) -> Tensor:
        """(kv_bsz, H, group * tgt, n) -> (kv_bsz * group, H, tgt, n): undo the beam folding."""
        if group == 1:
            return x
        kv_bsz, heads, rows, n = x.shape
        return x.view(kv_bsz, heads, group, rows // group, n).transpose(1, 2).reshape(kv_bsz * group, heads, -1, n)


def parse_pruned_heads(text) -> Dict[str, List[int]]:
    """The ``pass_pruned_heads`` config value (JSON object: module -> head list)."""
    try:
        heads = json.loads(text) if isinstance(text, str) else text
        if not isinstance(heads, dict):
            raise ValueError
        return {str(name): [int(h) for h in kept] for name, kept in heads.items()}
    except (TypeError, ValueError):
        fail("pass_pruned_heads must be a JSON object mapping attention modules to head lists;"
             " write checkpoints with scripts/prune_checkpoint.py")


@register_model("transformer_pass_pruned")
class TransformerPassPrunedModel(TransformerModel):
    """Transformer with attention heads physically removed (see module docstring)."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        parser.add_argument("--pass-pruned-heads", metavar="JSON",
                            help="kept heads of every attention module, as written by"
                                 " scripts/prune_checkpoint.py (JSON: module name -> original head indices)")

    @classmethod
    def build_model(cls, args, task):
        if not getattr(args, "pass_pruned_heads", None):
            fail("transformer_pass_pruned needs pass_pruned_heads in its config;"
                 " make the checkpoint with scripts/prune_checkpoint.py --format pruned")
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


@register_model_architecture("transformer_pass_pruned", "transformer_pass_pruned")
def transformer_pass_pruned(args):
    base_architecture(args)
