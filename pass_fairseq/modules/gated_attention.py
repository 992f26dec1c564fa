"""fairseq ``MultiheadAttention`` with one gate per head (Hard Concrete or subset gates).

The installed fairseq sends ``MultiheadAttention.forward`` to PyTorch's fused
``F.multi_head_attention_forward`` whenever it can, and that call would never see a gate.
So this module has its own path: the gate ``z_h`` scales head h's output before
``out_proj`` (docs/method.md: "the gate scales the head's output"); since a head's output is
linear in its attention probabilities, gating before or after attention dropout is the same.

The module also accumulates each head's attention confidence in training (the mean, over
batch and query positions, of the max over key positions of its attention probabilities),
which selective reopening reads at each epoch start; with ``confidence_in_eval`` (set by
the task around validation passes) in eval mode too. The statistic stays float32 whatever
the model's dtype (``model.half()`` would freeze a running mean under fp16 resolution).

Attention weights returned in eval mode (``--print-alignment``) cover only the heads whose
deterministic gate is non-zero, the heads a pruned model keeps, so gated and pruned models
give the same alignments.
"""
from typing import Optional, Tuple

import torch
from fairseq.modules.multihead_attention import MultiheadAttention
from torch import Tensor

from pass_fairseq.gates import HardConcrete
from pass_fairseq.modules.head_attention import HeadAttentionMixin, IncrementalState
from pass_fairseq.subset_gates import SubsetGate

#: ``--pass-gate-type`` -> gate class. Both have ``forward(batch_size) -> z``,
#: ``deterministic()``, ``depends_on()`` (the tensors ``deterministic()`` reads), ``num_gates``, ``log_alpha`` (the ``<module>.gate.log_alpha`` entry the
#: pruning tools read), ``missing_state()`` and ``run_state()``.
GATE_CLASSES = {"hard-concrete": HardConcrete, "subset": SubsetGate}


class GatedMultiheadAttention(HeadAttentionMixin, MultiheadAttention):
    """Multi-head attention whose heads are scaled by gates of ``gate_type``
    (:data:`GATE_CLASSES`, built with ``gate_kwargs``).

    Same parameters and incremental-state layout as fairseq's module (so its
    ``reorder_incremental_state`` works unchanged), plus the gate's entries (``gate.log_alpha``
    and ``gate.reopen_pending`` or ``gate.subset_k``) and the confidence statistics
    ``conf_mean``/``conf_count``.
    """

    def __init__(self, *args, gate_type: str = "hard-concrete", gate_kwargs: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.bias_k is not None or self.add_zero_attn:
            raise ValueError("GatedMultiheadAttention supports neither add_bias_kv nor add_zero_attn")
        self.gate = GATE_CLASSES[gate_type](self.num_heads, **(gate_kwargs or {}))
        self.confidence_in_eval = False
        self.register_buffer("conf_mean", torch.zeros(self.num_heads))
        self.register_buffer("conf_count", torch.zeros((), dtype=torch.long))

    def _apply(self, fn, recurse=True):
        """``.half()``/``.bfloat16()``/``.to(dtype)`` cast every floating buffer; the
        confidence statistic keeps its float32 values and only follows the device."""
        conf = self.conf_mean
        super()._apply(fn, recurse)
        self.conf_mean = conf.to(device=self.conf_mean.device, dtype=torch.float32)
        return self

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
            **gate_options,
        )
        gated.load_state_dict(mha.state_dict(), strict=False)
        return gated.to(mha.q_proj.weight)

    # ---- checkpoints -----------------------------------------------------------------
    def upgrade_state_dict_named(self, state_dict, name):
        """Fill the gate entries a stock ``transformer`` checkpoint lacks (fine-tuning) with
        the gate's ``missing_state()`` (Hard Concrete: open, so the loaded model starts as the
        stock one) and empty confidence statistics; the gate's ``run_state()`` (a subset
        gate's K) replaces what the checkpoint holds, so a fine-tune to another K uses its own."""
        super().upgrade_state_dict_named(state_dict, name)
        prefix = name + "." if name else ""
        if prefix + "q_proj.weight" not in state_dict:
            return
        defaults = {"gate." + key: value for key, value in self.gate.missing_state().items()}
        defaults.update(conf_mean=torch.zeros(self.num_heads), conf_count=torch.zeros((), dtype=torch.long))
        for key, value in defaults.items():
            state_dict.setdefault(prefix + key, value)
        for key, value in self.gate.run_state().items():
            state_dict[prefix + "gate." + key] = value

    # ---- confidence statistics -------------------------------------------------------
    @torch.no_grad()
    def _track_confidence(self, probs: Tensor) -> None:
        """Running mean over forward passes of mean_{batch, query} max_{key} probs (float32,
        no host sync)."""
        conf = probs.amax(dim=-1).float().mean(dim=(0, 2))
        self.conf_count += 1
        self.conf_mean += (conf - self.conf_mean) / self.conf_count

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
        """Time x Batch x Channel in and out, as fairseq's ``MultiheadAttention``. In
        inference the gates are folded into out_proj (:meth:`eval_head_scale`)."""
        need_weights = need_weights or need_head_weights
        track = self.training or self.confidence_in_eval
        if not (before_softmax or track) and self.takes_decode_step(incremental_state, need_weights, static_kv,
                                                                     attn_mask, key_padding_mask):
            return self.decode_step(query, key, key_padding_mask, incremental_state), None
        q, k, v, key_padding_mask = self.project(query, key, value, key_padding_mask, incremental_state, static_kv)
        if before_softmax:
            return self.scores_before_softmax(q, k, v, attn_mask, key_padding_mask)
        ctx, probs = self.attend(q, k, v, attn_mask, key_padding_mask, explicit=need_weights or track)
        if track:
            self._track_confidence(probs)
        if not self.inference:  # in inference the gates are folded into out_proj
            z = self.gate(ctx.size(0))
            ctx = ctx * z.to(ctx.dtype).view(-1 if z.dim() == 2 else 1, self.num_heads, 1, 1)
        out = self.output(ctx)
        if not need_weights:
            return out, None
        if self.training:
            return out, self.head_weights(probs, need_head_weights)
        return out, self.head_weights(probs, need_head_weights, present=self.gate.deterministic() > 0)

    # ---- evaluation (HeadAttentionMixin) ---------------------------------------------
    def eval_head_scale(self) -> Tensor:
        """The deterministic gates, folded into out_proj's columns in evaluation."""
        return self.gate.deterministic()

    def eval_dependencies(self):
        return self.gate.depends_on()
