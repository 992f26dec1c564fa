"""The pruned attention module: attention over a subset of a module's original heads, the
pruned heads physically gone (the gated module's mirror, :mod:`.gated_attention`).

fairseq's ``MultiheadAttention`` insists on heads x head_dim == embed_dim (or, with
``skip_embed_dim_check``, still divides by the head count), so the pruned module is its
own ``nn.Module``, with fairseq's incremental-state API and the cache layout of
:mod:`.head_attention` (one key/value tensor per module, reordered along its first axis;
encoder attention keeps one copy per sentence under beam search). A module left with no
head is skipped: it returns its out_proj bias, the constant the full module would add once
all its heads are closed.
"""
import warnings
from typing import Dict, Optional, Sequence, Tuple

from fairseq.incremental_decoding_utils import with_incremental_state
from fairseq.modules.fairseq_dropout import FairseqDropout
from torch import Tensor, nn

from pass_fairseq.modules.head_attention import HeadAttentionMixin, IncrementalState


@with_incremental_state
class PrunedMultiheadAttention(HeadAttentionMixin, nn.Module):
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
        with warnings.catch_warnings():  # a skipped module's empty weights: PyTorch warns it cannot init them
            warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
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
        averaged over the kept heads only, as the gated model's over its open heads; a
        skipped module returns none."""
        tgt_len, bsz, embed_dim = query.size()
        if self.skipped:
            if before_softmax:
                raise RuntimeError("a skipped attention module has no attention scores")
            bias = self.out_proj.bias
            if bias is None:
                return query.new_zeros(tgt_len, bsz, embed_dim), None
            return bias.to(query.dtype).expand(tgt_len, bsz, embed_dim), None

        need_weights = need_weights or need_head_weights
        if not before_softmax and self.takes_decode_step(incremental_state, need_weights, static_kv, attn_mask,
                                                         key_padding_mask):
            return self.decode_step(query, key, key_padding_mask, incremental_state), None
        q, k, v, key_padding_mask = self.project(query, key, value, key_padding_mask, incremental_state, static_kv)
        if before_softmax:
            return self.scores_before_softmax(q, k, v, attn_mask, key_padding_mask)
        ctx, probs = self.attend(q, k, v, attn_mask, key_padding_mask, explicit=need_weights or self.training)
        out = self.output(ctx)
        return out, (self.head_weights(probs, need_head_weights) if need_weights else None)
