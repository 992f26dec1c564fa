"""A Hugging Face BERT checkpoint (``config.json``, ``model.safetensors``, ``vocab.txt``) as
fairseq's ``roberta`` encoder: its state dict and its dictionary (pure torch; the CLI is
``pass-convert-bert``).

BERT and fairseq's roberta compute the same function once these are mapped:

* the vocabulary: fairseq's dictionary starts with its four special symbols (``<s>``,
  ``<pad>``, ``</s>``, ``<unk>``), then the task appends ``<mask>``. ``dict.txt`` lists BERT's
  wordpieces in BERT's order, so fairseq row ``4 + i`` is BERT token ``i``; the special rows
  take BERT's ``[CLS]``, ``[PAD]``, ``[SEP]``, ``[UNK]`` and ``[MASK]``, so that
  ``sentence_prediction --init-token 0`` (``<s>``) and the ``</s>`` fairseq-preprocess appends
  give BERT's ``[CLS] x [SEP]``;
* positions: fairseq's learned positions count from ``padding_idx + 1 = 2``, so row ``2 + p``
  is BERT's position ``p``; fairseq has no token-type embedding, so BERT's type-0 row (a
  single sentence's) is added to every position row;
* the layers: query/key/value/output -> ``self_attn.{q,k,v,out}_proj``, the two layer norms,
  ``intermediate``/``output`` -> ``fc1``/``fc2``; both post-norm, exact (erf) gelu, no final
  layer norm;
* the pooler (dense + tanh on the first token) is the classification head's ``dense``; its
  ``out_proj`` and the masked-LM head (which BERT encoders such as sentence-transformers'
  often lack, and strict loading needs) are new, drawn from N(0, ``initializer_range``).

One difference stays: fairseq's layer norms use eps 1e-5 and BERT's ``layer_norm_eps`` (often
1e-12); the plugin's encoders take ``--layer-norm-eps`` (:func:`roberta_flags` gives it).
"""
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from pass_fairseq.errors import PassError

#: fairseq's dictionary symbols, in their rows, and the BERT token each takes
FAIRSEQ_SPECIALS = (("<s>", "[CLS]"), ("<pad>", "[PAD]"), ("</s>", "[SEP]"), ("<unk>", "[UNK]"))
#: the symbol sentence_prediction's dictionary appends last, and the BERT token it takes
MASK = ("<mask>", "[MASK]")
#: fairseq's learned positions start after padding_idx (1)
POSITION_OFFSET = 2
#: fairseq's key of the encoder, of the LM head, and the classification head's default name
ENCODER = "encoder.sentence_encoder."
LM_HEAD = "encoder.lm_head."
HEAD_NAME = "sentence_classification_head"

#: BERT layer key (after ``encoder.layer.N.``) -> fairseq layer key (after ``layers.N.``)
LAYER_KEYS = {
    "attention.self.query": "self_attn.q_proj",
    "attention.self.key": "self_attn.k_proj",
    "attention.self.value": "self_attn.v_proj",
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "output.LayerNorm": "final_layer_norm",
}


class ConversionError(PassError):
    """A BERT checkpoint this converter cannot map; the message is one line for the user."""


@dataclass(frozen=True)
class BertShape:
    """What the fairseq model needs to know of a BERT config."""

    layers: int
    embed_dim: int
    heads: int
    ffn_dim: int
    vocab_size: int
    max_positions: int
    layer_norm_eps: float
    initializer_range: float


def bert_shape(config: dict) -> BertShape:
    """The shape of a BERT ``config.json`` (a dict); ConversionError for what roberta cannot
    compute (another activation, relative positions, a pre-norm variant)."""
    if config.get("model_type", "bert") != "bert":
        raise ConversionError(f"config.json has model_type {config.get('model_type')!r}: give a BERT checkpoint")
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise ConversionError(f"hidden_act {act!r}: fairseq's roberta computes erf gelu only ('gelu')")
    positions = config.get("position_embedding_type", "absolute")
    if positions != "absolute":
        raise ConversionError(f"position_embedding_type {positions!r}: only BERT's absolute positions map to roberta's")
    try:
        shape = BertShape(int(config["num_hidden_layers"]), int(config["hidden_size"]),
                          int(config["num_attention_heads"]), int(config["intermediate_size"]),
                          int(config["vocab_size"]), int(config["max_position_embeddings"]),
                          float(config.get("layer_norm_eps", 1e-12)), float(config.get("initializer_range", 0.02)))
    except KeyError as e:
        raise ConversionError(f"config.json has no {e.args[0]}: give a BERT model's config")
    if shape.embed_dim % shape.heads:
        raise ConversionError(f"hidden_size {shape.embed_dim} is not a multiple of num_attention_heads {shape.heads}")
    return shape


def dictionary_lines(vocab: List[str]) -> List[str]:
    """fairseq's ``dict.txt`` for a BERT vocabulary: every wordpiece in BERT's order (count 1);
    ConversionError for a vocabulary fairseq's dictionary cannot hold."""
    seen = set()
    for i, token in enumerate(vocab):
        if not token or any(c.isspace() for c in token):
            raise ConversionError(f"vocab.txt line {i + 1} is empty or holds whitespace:"
                                  " fairseq's dict.txt cannot list it")
        if token in seen:
            raise ConversionError(f"vocab.txt lists {token!r} twice")
        seen.add(token)
    return [f"{token} 1" for token in vocab]


def fairseq_rows(vocab: List[str]) -> torch.Tensor:
    """For every row of the fairseq embedding (specials, the wordpieces, ``<mask>``), the BERT
    token id it copies."""
    index = {token: i for i, token in enumerate(vocab)}
    missing = [bert for _, bert in (*FAIRSEQ_SPECIALS, MASK) if bert not in index]
    if missing:
        raise ConversionError(f"vocab.txt has no {', '.join(missing)}: give a BERT WordPiece vocabulary")
    specials = [index[bert] for _, bert in FAIRSEQ_SPECIALS]
    return torch.tensor(specials + list(range(len(vocab))) + [index[MASK[1]]])


def roberta_state_dict(bert: Dict[str, torch.Tensor], shape: BertShape, vocab: List[str],
                       max_positions: Optional[int] = None, num_classes: int = 2,
                       head_name: str = HEAD_NAME, seed: int = 1) -> Dict[str, torch.Tensor]:
    """The state dict of fairseq's ``RobertaModel`` (with a ``num_classes`` classification
    head named ``head_name``) computing what BERT's weights ``bert`` compute (see the module
    docstring). ``max_positions`` is the task's ``--max-positions`` (default: BERT's);
    ``seed`` draws the new weights."""
    bert = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in bert.items()}
    max_positions = shape.max_positions if max_positions is None else max_positions
    if not 1 <= max_positions <= shape.max_positions:
        raise ConversionError(f"--max-positions {max_positions}: BERT has {shape.max_positions} positions")
    if len(vocab) != shape.vocab_size:
        raise ConversionError(f"vocab.txt has {len(vocab)} tokens, config.json's vocab_size is {shape.vocab_size}")

    def take(key: str, size: Optional[tuple] = None) -> torch.Tensor:
        if key not in bert:
            raise ConversionError(f"model.safetensors has no {key}: give the weights of a BertModel")
        tensor = bert[key].detach().to(torch.float32)
        if size is not None and tuple(tensor.shape) != size:
            raise ConversionError(f"{key} has shape {tuple(tensor.shape)}, config.json says {size}")
        return tensor.clone()

    d = shape.embed_dim
    words = take("embeddings.word_embeddings.weight", (shape.vocab_size, d))
    token_type = take("embeddings.token_type_embeddings.weight")[0]
    positions = take("embeddings.position_embeddings.weight", (shape.max_positions, d))
    embed_tokens = words[fairseq_rows(vocab)]
    embed_positions = torch.zeros(max_positions + POSITION_OFFSET, d)
    embed_positions[POSITION_OFFSET:] = positions[:max_positions] + token_type

    out = {
        ENCODER + "version": torch.tensor([3.0]),
        ENCODER + "embed_tokens.weight": embed_tokens,
        ENCODER + "embed_positions.weight": embed_positions,
        ENCODER + "layernorm_embedding.weight": take("embeddings.LayerNorm.weight", (d,)),
        ENCODER + "layernorm_embedding.bias": take("embeddings.LayerNorm.bias", (d,)),
    }
    for layer in range(shape.layers):
        for bert_key, fairseq_key in LAYER_KEYS.items():
            for kind in ("weight", "bias"):
                out[f"{ENCODER}layers.{layer}.{fairseq_key}.{kind}"] = take(f"encoder.layer.{layer}.{bert_key}.{kind}")

    generator = torch.Generator().manual_seed(seed)

    def new_linear(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=generator) * shape.initializer_range

    head = f"classification_heads.{head_name}."
    if "pooler.dense.weight" in bert:
        out[head + "dense.weight"] = take("pooler.dense.weight", (d, d))
        out[head + "dense.bias"] = take("pooler.dense.bias", (d,))
    else:
        out[head + "dense.weight"], out[head + "dense.bias"] = new_linear(d, d), torch.zeros(d)
    out[head + "out_proj.weight"], out[head + "out_proj.bias"] = new_linear(num_classes, d), torch.zeros(num_classes)
    # the masked-LM head: its output layer is tied to embed_tokens
    out[LM_HEAD + "weight"] = embed_tokens
    out[LM_HEAD + "bias"] = torch.zeros(len(embed_tokens))
    out[LM_HEAD + "dense.weight"], out[LM_HEAD + "dense.bias"] = new_linear(d, d), torch.zeros(d)
    out[LM_HEAD + "layer_norm.weight"], out[LM_HEAD + "layer_norm.bias"] = torch.ones(d), torch.zeros(d)
    return out


def roberta_flags(shape: BertShape, max_positions: Optional[int] = None) -> List[str]:
    """The ``fairseq-train`` flags that build the converted model (with
    ``--arch roberta_pass``, or fairseq's ``roberta`` without ``--layer-norm-eps``)."""
    return ["--encoder-layers", str(shape.layers), "--encoder-embed-dim", str(shape.embed_dim),
            "--encoder-ffn-embed-dim", str(shape.ffn_dim), "--encoder-attention-heads", str(shape.heads),
            "--max-positions", str(shape.max_positions if max_positions is None else max_positions),
            "--layer-norm-eps", repr(shape.layer_norm_eps)]
