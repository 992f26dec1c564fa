"""The attention computation shared by the gated and the pruned attention modules.

Both keep fairseq's ``MultiheadAttention`` interface and incremental-state API but take
their own path instead of PyTorch's fused one: the gated module scales each head's output
by its gate, the pruned module holds any number of heads (heads x head_dim need not equal
embed_dim).

Key/value cache: one tensor ``prev_kv`` of shape (kv_batch, 2, heads, length, head_dim) under
``attn_state`` (keys at [:, 0], values at [:, 1]), so a decoding step grows it with one
concatenation and the beam reorders it with one ``index_select``; encoder attention keeps
one copy per sentence under beam search and its additive padding mask (``kv_mask``).

In inference (evaluation without gradients) the projections use weights prepared once per
weight version (:class:`EvalWeights`): the query rows pre-scaled by head_dim ** -0.5, q/k/v fused into one
matrix for self-attention and k/v into one for encoder attention, and the gates folded
into ``out_proj``'s columns (out = W_o (z * ctx) = (W_o diag z) ctx). Decoding steps that
need no attention weights take :meth:`HeadAttentionMixin.decode_step`, the shortest path.
"""
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.modules.multihead_attention import MultiheadAttention
from torch import Tensor

IncrementalState = Optional[Dict[str, Dict[str, Optional[Tensor]]]]


def version_key(tensors: List[Optional[Tensor]]) -> tuple:
    """Changes whenever one of ``tensors`` is replaced, moved, cast (new storage) or updated
    in place (new version)."""
    return tuple(None if t is None else (t.data_ptr(), t._version) for t in tensors)


def _cat(parts: List[Optional[Tensor]]) -> Optional[Tensor]:
    return None if any(p is None for p in parts) else torch.cat(parts)


class EvalWeights(NamedTuple):
    """Evaluation weights of one attention module (biases None when it has none)."""

    q_w: Tensor  #: query rows, pre-scaled
    q_b: Optional[Tensor]
    kv_w: Tensor  #: key and value rows
    kv_b: Optional[Tensor]
    qkv_w: Tensor  #: query (pre-scaled), key and value rows
    qkv_b: Optional[Tensor]
    out_w: Tensor  #: out_proj with each head's columns scaled by its gate
    out_b: Optional[Tensor]


class HeadAttentionMixin:
    """Needs ``q_proj``/``k_proj``/``v_proj``/``out_proj``, ``num_heads``, ``head_dim``,
    ``scaling``, ``self_attention``, ``encoder_decoder_attention``, ``beam_size``,
    ``dropout_module`` and fairseq's ``_get_input_buffer``/``_set_input_buffer``; a gated
    module also overrides :meth:`eval_head_scale` and :meth:`eval_dependencies`."""

    _eval_cache: Optional[Tuple[tuple, EvalWeights]] = None

    # ---- evaluation weights --------------------------------------------------------------
    @property
    def inference(self) -> bool:
        """Evaluation without gradients (fairseq-generate, validation): the prepared weights
        apply. Evaluation with gradients (head importance) keeps the modules' own
        parameters and gates in the graph."""
        return not self.training and not torch.is_grad_enabled()

    def eval_head_scale(self) -> Optional[Tensor]:
        """Per-head factor folded into out_proj in evaluation (the gates); None: all 1."""
        return None

    def eval_dependencies(self) -> List[Tensor]:
        """Tensors besides the projections that :meth:`eval_head_scale` reads."""
        return []

    def train(self, mode: bool = True):
        """Leaving evaluation drops the prepared weights: fairseq's optimizers update the
        parameters through ``.data``, which the version key of :meth:`eval_weights` does not
        see, so weights prepared before an update must not survive it (fairseq calls
        ``model.train()`` before every update and ``model.eval()`` before validation)."""
        if mode:
            self._eval_cache = None
        return super().train(mode)

    def eval_weights(self) -> EvalWeights:
        """The evaluation weights, rebuilt when a weight (or gate) changed in place since they
        were prepared, or after training (:meth:`train`)."""
        projections = [self.q_proj, self.k_proj, self.v_proj, self.out_proj]
        key = version_key([t for m in projections for t in (m.weight, m.bias)] + self.eval_dependencies())
        if self._eval_cache is None or self._eval_cache[0] != key:
            with torch.no_grad():
                self._eval_cache = (key, self._build_eval_weights())
        return self._eval_cache[1]

    def _build_eval_weights(self) -> EvalWeights:
        q, k, v, o = self.q_proj, self.k_proj, self.v_proj, self.out_proj
        q_w = q.weight * self.scaling
        q_b = None if q.bias is None else q.bias * self.scaling
        out_w = o.weight
        scale = self.eval_head_scale()
        if scale is not None:
            out_w = out_w * scale.to(out_w.dtype).repeat_interleave(self.head_dim)
        fused = self.self_attention and k.weight.size(1) == q.weight.size(1)
        return EvalWeights(
            q_w, q_b, torch.cat([k.weight, v.weight]), _cat([k.bias, v.bias]),
            torch.cat([q_w, k.weight, v.weight]) if fused else q_w, _cat([q_b, k.bias, v.bias]) if fused else q_b,
            out_w, o.bias)

    def output(self, ctx: Tensor) -> Tensor:
        """out_proj of the merged heads (inference: with the gates folded in)."""
        if not self.inference:
            return self.out_proj(self.merge_heads(ctx))
        w = self.eval_weights()
        return F.linear(self.merge_heads(ctx), w.out_w, w.out_b)

    # ---- decoding --------------------------------------------------------------------------
    def takes_decode_step(self, incremental_state: IncrementalState, need_weights: bool, static_kv: bool,
                          attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor]) -> bool:
        """Whether a forward call can take :meth:`decode_step`: inference, incremental
        decoding, no attention weights, and decoder self-attention without padding or
        encoder attention with static keys."""
        if not self.inference or incremental_state is None or need_weights or attn_mask is not None:
            return False
        if self.self_attention:
            return key_padding_mask is None
        return self.encoder_decoder_attention and static_kv

    def decode_step(self, query: Tensor, key: Optional[Tensor], key_padding_mask: Optional[Tensor],
                    incremental_state: IncrementalState) -> Tensor:
        """One decoding step's output (tgt, bsz, embed_dim), its cache applied and updated:
        fused projections, one cache concatenation, PyTorch's scaled_dot_product_attention,
        out_proj with the gates folded in."""
        tgt_len, bsz, _ = query.size()
        heads, head_dim = self.num_heads, self.head_dim
        saved = self._get_input_buffer(incremental_state)
        # weights are checked for changes at a decode's first step only, not at every step
        w = self._eval_cache[1] if saved and self._eval_cache is not None else self.eval_weights()
        mask = None
        if self.self_attention:
            if saved.get("prev_key_padding_mask") is not None:
                raise RuntimeError("decode_step: this cache holds a padding mask; use the general path")
            qkv = F.linear(query, w.qkv_w, w.qkv_b).view(tgt_len, bsz, 3, heads, head_dim).permute(1, 2, 3, 0, 4)
            q, step_kv = qkv[:, 0], qkv[:, 1:]
            prev = saved.get("prev_kv")
            kv = step_kv.contiguous() if prev is None else torch.cat([prev, step_kv], dim=3)
            saved["prev_kv"] = kv
            self._set_input_buffer(incremental_state, saved)
        else:
            q = F.linear(query, w.q_w, w.q_b).view(tgt_len, bsz, heads, head_dim).permute(1, 2, 0, 3)
            kv = saved.get("prev_kv")
            if kv is None:
                key, key_padding_mask = self._one_copy_per_sentence(key, key_padding_mask, bsz)
                src_len, rows = key.size(0), key.size(1)
                kv = F.linear(key, w.kv_w, w.kv_b).view(src_len, rows, 2, heads, head_dim).permute(
                    1, 2, 3, 0, 4).contiguous()
                saved["prev_kv"], saved["prev_key_padding_mask"] = kv, key_padding_mask
                saved["kv_mask"] = self._additive_mask(None, key_padding_mask, q.dtype)
                self._set_input_buffer(incremental_state, saved)
            mask = saved.get("kv_mask")
        q, group, _ = self._fold_beam(q, kv.size(0), None)
        ctx = F.scaled_dot_product_attention(q, kv[:, 0], kv[:, 1], attn_mask=mask, scale=1.0)
        return F.linear(self.merge_heads(self._unfold_beam(ctx, group)), w.out_w, w.out_b)

    def reorder_incremental_state(self, incremental_state: IncrementalState, new_order: Tensor):
        """Follow the beam: pick the cache rows of ``new_order``. Encoder attention caches
        one row per sentence under beam search; sentences keep their position, so there is
        nothing to move unless sentences were dropped (finished)."""
        buffer = self._get_input_buffer(incremental_state)
        if not buffer:
            return incremental_state
        rows = new_order
        if self.encoder_decoder_attention:
            kv = buffer.get("prev_kv")
            if kv is not None and kv.size(0) * self.beam_size == new_order.size(0):
                return incremental_state
            if self.beam_size > 1:
                rows = new_order.reshape(-1, self.beam_size)[:, 0] // self.beam_size
        for name, value in buffer.items():
            if value is not None:
                buffer[name] = value.index_select(0, rows)
        return self._set_input_buffer(incremental_state, buffer)

    def _one_copy_per_sentence(self, key: Tensor, key_padding_mask: Optional[Tensor], bsz: int):
        """Encoder attention under beam search (incremental decoding with a beam size set,
        :mod:`pass_fairseq.models.beam_sharing`): the beam's copies of a sentence share one
        encoder output, keep the first."""
        if self.encoder_decoder_attention and self.beam_size > 1 and key.size(1) == bsz:
            key = key.view(key.size(0), -1, self.beam_size, key.size(2))[:, :, 0, :]
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.view(-1, self.beam_size, key_padding_mask.size(1))[:, 0, :]
        return key, key_padding_mask

    def project(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor],
                key_padding_mask: Optional[Tensor], incremental_state: IncrementalState, static_kv: bool):
        """Scaled queries (bsz, heads, tgt, d), keys and values (kv_bsz, heads, src, d) with
        the cache applied and updated, and the matching key padding mask."""
        tgt_len, bsz, _ = query.size()
        heads, head_dim = self.num_heads, self.head_dim
        saved = None
        if incremental_state is not None:
            saved = self._get_input_buffer(incremental_state)
            if static_kv and "prev_kv" in saved:
                key = value = None  # encoder keys/values are cached already

        if key is not None and not self.self_attention and incremental_state is not None:
            key, key_padding_mask = self._one_copy_per_sentence(key, key_padding_mask, bsz)
        if not self.inference:
            q = self.q_proj(query) * self.scaling
            k = v = None
            if self.self_attention:
                k, v = self.k_proj(query), self.v_proj(query)
            elif key is not None:
                k = self.k_proj(key)
                v = self.v_proj(key if self.encoder_decoder_attention else value)
        else:
            q, k, v = self._eval_projections(query, key, value)

        q = q.view(tgt_len, bsz, heads, head_dim).permute(1, 2, 0, 3)
        if k is not None:
            rows = k.size(1)
            k = k.view(-1, rows, heads, head_dim).permute(1, 2, 0, 3)
            v = v.view(-1, rows, heads, head_dim).permute(1, 2, 0, 3)

        if saved is not None:
            prev = saved.get("prev_kv")
            if prev is not None and static_kv:
                kv = prev
            else:
                kv = torch.stack([k, v], dim=1)
                kv = kv if prev is None else torch.cat([prev, kv], dim=3)
            k, v = kv[:, 0], kv[:, 1]
            key_padding_mask = MultiheadAttention._append_prev_key_padding_mask(
                key_padding_mask=key_padding_mask,
                prev_key_padding_mask=saved.get("prev_key_padding_mask"),
                batch_size=k.size(0),
                src_len=k.size(2),
                static_kv=static_kv,
            )
            saved["prev_kv"], saved["prev_key_padding_mask"] = kv, key_padding_mask
            self._set_input_buffer(incremental_state, saved)
        if key_padding_mask is not None and key_padding_mask.dim() == 0:
            key_padding_mask = None
        return q, k, v, key_padding_mask

    def _eval_projections(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor]):
        """Evaluation q (pre-scaled), k, v (None when cached) from the fused weights."""
        w = self.eval_weights()
        inner = self.num_heads * self.head_dim
        if self.self_attention and w.qkv_w is not w.q_w:
            return F.linear(query, w.qkv_w, w.qkv_b).split(inner, dim=-1)
        q = F.linear(query, w.q_w, w.q_b)
        if self.self_attention:
            key = value = query
        if key is None:
            return q, None, None
        if self.encoder_decoder_attention or value is key:
            k, v = F.linear(key, w.kv_w, w.kv_b).split(inner, dim=-1)
            return q, k, v
        k = F.linear(key, w.kv_w[:inner], None if w.kv_b is None else w.kv_b[:inner])
        v = F.linear(value, w.kv_w[inner:], None if w.kv_b is None else w.kv_b[inner:])
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Optional[Tensor],
               key_padding_mask: Optional[Tensor], explicit: bool) -> Tuple[Tensor, Optional[Tensor]]:
        """Per-head context (bsz, heads, tgt, d) and, on the explicit path (training, or
        weights asked for), the attention probabilities (bsz, heads, tgt, src) in float.
        Otherwise PyTorch's scaled_dot_product_attention."""
        q, group, attn_mask = self._fold_beam(q, k.size(0), attn_mask)
        mask = self._additive_mask(attn_mask, key_padding_mask, q.dtype)
        if not explicit:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
            return self._unfold_beam(ctx, group), None
        scores = q @ k.transpose(-1, -2)
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores.float(), dim=-1)
        ctx = self.dropout_module(probs.type_as(scores)) @ v
        return self._unfold_beam(ctx, group), self._unfold_beam(probs, group)

    def scores_before_softmax(self, q, k, v, attn_mask, key_padding_mask):
        """fairseq's ``before_softmax`` output: (bsz * heads, tgt, src) scores and values."""
        bsz, heads, tgt_len, _ = q.shape
        q, group, attn_mask = self._fold_beam(q, k.size(0), attn_mask)
        scores = q @ k.transpose(-1, -2)
        mask = self._additive_mask(attn_mask, key_padding_mask, q.dtype)
        if mask is not None:
            scores = scores + mask
        scores = self._unfold_beam(scores, group).reshape(bsz * heads, tgt_len, -1)
        return scores, v.reshape(-1, v.size(2), v.size(3))

    @staticmethod
    def merge_heads(ctx: Tensor) -> Tensor:
        """(bsz, heads, tgt, d) -> (tgt, bsz, heads * d), the input of out_proj."""
        bsz, heads, tgt_len, head_dim = ctx.shape
        return ctx.permute(2, 0, 1, 3).reshape(tgt_len, bsz, heads * head_dim)

    @staticmethod
    def head_weights(probs: Tensor, need_head_weights: bool, present: Optional[Tensor] = None) -> Tensor:
        """fairseq's returned weights: (heads, bsz, tgt, src), or averaged over heads.
        ``present`` (bool per head) restricts both to the heads that reach the output: the
        per-head weights keep only those, the average is over those (zeros if none)."""
        weights = probs.transpose(1, 0)
        if present is None:
            return weights if need_head_weights else weights.mean(dim=0)
        if need_head_weights:
            return weights[present.to(weights.device)]
        mask = present.to(weights.dtype).view(-1, 1, 1, 1)
        return (weights * mask).sum(dim=0) / mask.sum().clamp(min=1.0)

    @staticmethod
    def _fold_beam(q: Tensor, kv_bsz: int, attn_mask: Optional[Tensor]):
        """Beam copies of a sentence share one cached encoder key: fold them into the query
        length, (bsz, H, tgt, d) -> (kv_bsz, H, group * tgt, d), so every product is a
        plain 4-d one (broadcasting a 5-d product is about 2x slower on CPU)."""
        bsz, heads, tgt_len, head_dim = q.shape
        group = bsz // kv_bsz
        if group == 1:
            return q, 1, attn_mask
        q = q.view(kv_bsz, group, heads, tgt_len, head_dim).transpose(1, 2).reshape(
            kv_bsz, heads, group * tgt_len, head_dim)
        return q, group, None if attn_mask is None else attn_mask.repeat(group, 1)

    @staticmethod
    def _unfold_beam(x: Tensor, group: int) -> Tensor:
        """(kv_bsz, H, group * tgt, n) -> (kv_bsz * group, H, tgt, n)."""
        if group == 1:
            return x
        kv_bsz, heads, rows, n = x.shape
        return x.view(kv_bsz, heads, group, rows // group, n).transpose(1, 2).reshape(kv_bsz * group, heads, -1, n)

    @staticmethod
    def _additive_mask(attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
                       dtype: torch.dtype) -> Optional[Tensor]:
        """One additive mask broadcastable to (kv_bsz, heads, rows, src)."""
        mask = None if attn_mask is None else attn_mask.to(dtype)
        if key_padding_mask is not None:
            pad = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
            pad = pad.masked_fill(key_padding_mask.to(torch.bool), float("-inf"))
            pad = pad.view(key_padding_mask.size(0), 1, 1, -1)
            mask = pad if mask is None else mask + pad
        return mask
