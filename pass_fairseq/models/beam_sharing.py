"""Beam search with one copy of the encoder's keys and values per sentence.

fairseq's ``SequenceGenerator`` calls ``set_beam_size`` on a model that has one (BART does;
the stock ``TransformerModel`` does not, so its encoder attention projects, caches and
reorders the encoder output once per hypothesis, beam-size times the same rows). The
plugin's encoder-decoder models have it: it reaches every attention module, whose encoder
attention then caches one copy per sentence and folds the beam into the query during
incremental decoding (:mod:`pass_fairseq.modules.head_attention`). Outputs are unchanged
(the beam's copies of a sentence are identical); tested against the stock model's beam search.

As with fairseq's BART, a model keeps the beam size it was last given; the generator gives
it only for beams above 1, so decode one model object with one beam size.
"""


class SharedBeamMixin:
    """``set_beam_size`` for a fairseq model with an incremental decoder."""

    def set_beam_size(self, beam_size: int) -> None:
        self.decoder.set_beam_size(beam_size)
