"""fairseq ``MultiheadAttention`` with one Hard Concrete gate per head.

The installed fairseq sends ``MultiheadAttention.forward`` to PyTorch's fused
``F.multi_head_attention_forward`` whenever it can, and that call would never see a gate.
So this module has its own path: the gate ``z_h`` scales head h's output before
``out_proj`` (method.md: "the gate scales the head's output"); since a head's output is
linear in its attention probabilities, gating before or after attention dropout is the same.

The module also accumulates each head's attention confidence in training (the mean, over
batch and query positions, of the max over key positions of its attention probabilities),
which selective reopening reads at each epoch start.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from fairseq.modules.multihead_attention import MultiheadAttention
from torch import Tensor

from pass_fairseq.gates import HardConcrete

IncrementalState = Optional[Dict[str, Dict[str, Optional[Tensor]]]]


class GatedMultiheadAttention(MultiheadAttention):
    """Multi-head attention whose heads are scaled by :class:`HardConcrete` gates.

    Same parameters and incremental-state layout as fairseq's module (so its
    ``reorder_incremental_state`` works unchanged), plus ``gate.log_alpha``, the
    ``gate.reopen_pending`` mask and the confidence statistics ``conf_mean``/``conf_count``.
    ``gate_per_example`` draws one gate per head and example instead of per head and batch.
    """

    def __init__(self, *args, gate_kwargs: Optional[dict] = None, gate_per_example: bool = False,
                 missing_gate_init: float = 3.0, **kwargs):
        super().__init__(*args, **kwargs)
        if self.bias_k is not None or self.add_zero_attn:
            raise ValueError("GatedMultiheadAttention supports neither add_bias_kv nor add_zero_attn")
        self.gate = HardConcrete(self.num_heads, **(gate_kwargs or {}))
        self.gate_per_example = gate_per_example
        self.missing_gate_init = missing_gate_init
        self.register_buffer("conf_mean", torch.zeros(self.num_heads))
        self.register_buffer("conf_count", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_attention(cls, mha: MultiheadAttention, **gate_options) -> "GatedMultiheadAttention":
        """A gated copy of a stock fairseq attention module: same shapes, same weights."""
        gated = cls(
            mha.embed_dim,
            mha.num_heads,
            kdim=mha.kdim,
            vdim=mha.vdim,
            dropout=mha.dropout_module.p,
            bias=mha.q_proj.bias is not None,
            add_bias_kv=mha.bias_k is not None,
            add_zero_attn=mha.add_zero_attn,
            self_attention=mha.self_attention,
            encoder_decoder_attention=mha.encoder_decoder_attention,
            q_noise=mha.q_noise if hasattr(mha, "q_noise") else 0.0,
            **gate_options,
        )
        gated.load_state_dict(mha.state_dict(), strict=False)
        return gated.to(mha.q_proj.weight)

    # ---- checkpoints -----------------------------------------------------------------
    def upgrade_state_dict_named(self, state_dict, name):
        """Fill the gate entries a stock ``transformer`` checkpoint lacks (fine-tuning):
        ``log_alpha = missing_gate_init`` (open by default, so the loaded model starts as
        the stock one), no pending reopen, empty confidence statistics."""
        super().upgrade_state_dict_named(state_dict, name)
        prefix = name + "." if name else ""
        if prefix + "q_proj.weight" not in state_dict:
            return
        defaults = {
            "gate.log_alpha": torch.full((self.num_heads,), float(self.missing_gate_init)),
            "gate.reopen_pending": torch.zeros(self.num_heads, dtype=torch.bool),
            "conf_mean": torch.zeros(self.num_heads),
            "conf_count": torch.zeros((), dtype=torch.long),
        }
        for key, value in defaults.items():
            state_dict.setdefault(prefix + key, value)

    # ---- confidence statistics -------------------------------------------------------
    @torch.no_grad()
    def _track_confidence(self, probs: Tensor) -> None:
        """Running mean over forward passes of mean_{batch, query} max_{key} probs."""
        conf = probs.amax(dim=-1).float().mean(dim=(0, 2))
        self.conf_count += 1
        self.conf_mean += (conf.to(self.conf_mean.dtype) - self.conf_mean) / self.conf_count.item()

    def reset_confidence(self) -> None:
        self.conf_mean.zero_()
        self.conf_count.zero_()

    # ---- forward ---------------------------------------------------------------------
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
        """Time x Batch x Channel in and out, as fairseq's ``MultiheadAttention``."""
        need_weights = need_weights or need_head_weights
        tgt_len, bsz, _ = query.size()
        heads, head_dim = self.num_heads, self.head_dim

        saved_state = None
        if incremental_state is not None:
            saved_state = self._get_input_buffer(incremental_state)
            if static_kv and "prev_key" in saved_state:
                key = value = None  # encoder keys/values are cached already

        q = self.q_proj(query) * self.scaling
        if self.self_attention:
            k, v = self.k_proj(query), self.v_proj(query)
        elif key is None:
            k = v = None
        else:
            if self.encoder_decoder_attention and self.beam_size > 1 and bsz == key.size(1):
                # beamable encoder attention: keep one copy of the keys per sentence
                key = key.view(key.size(0), -1, self.beam_size, key.size(2))[:, :, 0, :]
                if key_padding_mask is not None:
                    key_padding_mask = key_padding_mask.view(-1, self.beam_size, key_padding_mask.size(1))[:, 0, :]
            k = self.k_proj(key)
            v = self.v_proj(key if self.encoder_decoder_attention else value)

        # (batch, heads, time, head_dim)
        q = q.view(tgt_len, bsz, heads, head_dim).permute(1, 2, 0, 3)
        if k is not None:
            kv_bsz = k.size(1)
            k = k.view(-1, kv_bsz, heads, head_dim).permute(1, 2, 0, 3)
            v = v.view(-1, kv_bsz, heads, head_dim).permute(1, 2, 0, 3)

        if saved_state is not None:
            if "prev_key" in saved_state:
                prev_key, prev_value = saved_state["prev_key"], saved_state["prev_value"]
                if static_kv:
                    k, v = prev_key, prev_value
                else:
                    k, v = torch.cat([prev_key, k], dim=2), torch.cat([prev_value, v], dim=2)
            key_padding_mask = MultiheadAttention._append_prev_key_padding_mask(
                key_padding_mask=key_padding_mask,
                prev_key_padding_mask=saved_state.get("prev_key_padding_mask"),
                batch_size=k.size(0),
                src_len=k.size(2),
                static_kv=static_kv,
            )
            saved_state["prev_key"], saved_state["prev_value"] = k, v
            saved_state["prev_key_padding_mask"] = key_padding_mask
            self._set_input_buffer(incremental_state, saved_state)
        kv_bsz, src_len = k.size(0), k.size(2)
        if key_padding_mask is not None and key_padding_mask.dim() == 0:
            key_padding_mask = None

        # queries grouped per key batch: (kv_bsz, group, heads, tgt, head_dim)
        group = bsz // kv_bsz
        qg = q.reshape(kv_bsz, group, heads, tgt_len, head_dim)
        mask = self._additive_mask(attn_mask, key_padding_mask, kv_bsz, q.dtype)

        explicit = need_weights or before_softmax or self.training
        if explicit:
            scores = torch.matmul(qg, k.unsqueeze(1).transpose(-1, -2))
            if mask is not None:
                scores = scores + mask
            if before_softmax:
                return scores.view(bsz * heads, tgt_len, src_len), v.reshape(kv_bsz * heads, src_len, head_dim)
            probs_float = torch.softmax(scores.float(), dim=-1)
            probs = probs_float.type_as(scores)
            if self.training:
                self._track_confidence(probs.view(bsz, heads, tgt_len, src_len))
            out = torch.matmul(self.dropout_module(probs), v.unsqueeze(1))
        else:
            out = F.scaled_dot_product_attention(
                qg, k.unsqueeze(1), v.unsqueeze(1), attn_mask=mask, scale=1.0
            )
        out = out.reshape(bsz, heads, tgt_len, head_dim)

        z = self.gate(bsz if (self.training and self.gate_per_example) else None)
        out = out * z.to(out.dtype).view(-1 if z.dim() == 2 else 1, heads, 1, 1)

        out = out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, heads * head_dim)
        out = self.out_proj(out)

        weights = None
        if need_weights:
            weights = probs_float.view(bsz, heads, tgt_len, src_len).transpose(1, 0)
            if not need_head_weights:
                weights = weights.mean(dim=0)
        return out, weights

    @staticmethod
    def _additive_mask(attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
                       kv_bsz: int, dtype: torch.dtype) -> Optional[Tensor]:
        """One additive mask broadcastable to (kv_bsz, group, heads, tgt, src)."""
        mask = None
        if attn_mask is not None:
            mask = attn_mask.to(dtype)
        if key_padding_mask is not None:
            pad = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
            pad = pad.masked_fill(key_padding_mask.to(torch.bool), float("-inf"))
            pad = pad.view(kv_bsz, 1, 1, 1, -1)
            mask = pad if mask is None else mask + pad
        return mask
