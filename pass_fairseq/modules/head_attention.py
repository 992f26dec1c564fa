"""The attention computation shared by the gated and the pruned attention modules.

Both keep fairseq's ``MultiheadAttention`` interface and key/value cache layout
((kv_batch, heads, length, head_dim) under ``attn_state``), but take their own path
instead of PyTorch's fused one: the gated module scales each head's output by its gate,
the pruned module holds any number of heads (heads x head_dim need not equal embed_dim).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.modules.multihead_attention import MultiheadAttention
from torch import Tensor

IncrementalState = Optional[Dict[str, Dict[str, Optional[Tensor]]]]


class HeadAttentionMixin:
    """Needs ``q_proj``/``k_proj``/``v_proj``, ``num_heads``, ``head_dim``, ``scaling``,
    ``self_attention``, ``encoder_decoder_attention``, ``beam_size``, ``dropout_module``
    and fairseq's ``_get_input_buffer``/``_set_input_buffer``."""

    def project(self, query: Tensor, key: Optional[Tensor], value: Optional[Tensor],
                key_padding_mask: Optional[Tensor], incremental_state: IncrementalState, static_kv: bool):
        """Scaled queries (bsz, heads, tgt, d), keys and values (kv_bsz, heads, src, d) with
        the cache applied and updated, and the matching key padding mask."""
        tgt_len, bsz, _ = query.size()
        heads, head_dim = self.num_heads, self.head_dim
        saved = None
        if incremental_state is not None:
            saved = self._get_input_buffer(incremental_state)
            if static_kv and "prev_key" in saved:
                key = value = None  # encoder keys/values are cached already

        q = self.q_proj(query) * self.scaling
        k = v = None
        if self.self_attention:
            k, v = self.k_proj(query), self.v_proj(query)
        elif key is not None:
            if self.encoder_decoder_attention and self.beam_size > 1 and key.size(1) == bsz:
                # the beam's copies of a sentence share one encoder output: keep the first
                key = key.view(key.size(0), -1, self.beam_size, key.size(2))[:, :, 0, :]
                if key_padding_mask is not None:
                    key_padding_mask = key_padding_mask.view(-1, self.beam_size, key_padding_mask.size(1))[:, 0, :]
            k = self.k_proj(key)
            v = self.v_proj(key if self.encoder_decoder_attention else value)

        q = q.view(tgt_len, bsz, heads, head_dim).permute(1, 2, 0, 3)
        if k is not None:
            rows = k.size(1)
            k = k.view(-1, rows, heads, head_dim).permute(1, 2, 0, 3)
            v = v.view(-1, rows, heads, head_dim).permute(1, 2, 0, 3)

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
        if key_padding_mask is not None and key_padding_mask.dim() == 0:
            key_padding_mask = None
        return q, k, v, key_padding_mask

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
