"""``pass-convert-bert HF_DIR OUT_DIR``: a Hugging Face BERT checkpoint folder
(``config.json``, ``model.safetensors``, ``vocab.txt``) as a fairseq ``roberta`` checkpoint
(``OUT_DIR/model.pt``, to start ``fairseq-train --finetune-from-model`` from) and its
dictionary (``OUT_DIR/dict.txt``, for ``fairseq-preprocess --srcdict``); the mapping is
:mod:`pass_fairseq.bert_conversion`. Prints the ``fairseq-train`` flags that build the
model on stdout (one line), what it wrote on stderr."""
import argparse
import json
import os
import sys
from typing import List, Optional

from pass_fairseq.bert_conversion import (HEAD_NAME, ConversionError, bert_shape, dictionary_lines,
                                          roberta_flags, roberta_state_dict)
from pass_fairseq.checkpoints import DEPLOYMENTS, save_atomic, weights_checkpoint
from pass_fairseq.cli import one_line_errors, parse_cli
from pass_fairseq.files import atomic_write

#: the files of a Hugging Face BERT folder the converter reads
CONFIG, WEIGHTS, VOCAB = "config.json", "model.safetensors", "vocab.txt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pass-convert-bert",
        description="Convert a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt) into a"
                    " fairseq roberta checkpoint (OUT_DIR/model.pt) and dictionary (OUT_DIR/dict.txt); print"
                    " the fairseq-train flags that build it (with --arch roberta_pass).")
    p.add_argument("hf_dir", metavar="HF_DIR", help="folder holding config.json, model.safetensors and vocab.txt")
    p.add_argument("out_dir", metavar="OUT_DIR", help="where to write model.pt and dict.txt (made if missing)")
    p.add_argument("--max-positions", type=int, metavar="N",
                   help="the sentence_prediction task's --max-positions (default: BERT's max_position_embeddings)")
    p.add_argument("--num-classes", type=int, default=2, metavar="C",
                   help="classes of the new classification head (the task's --num-classes; default 2)")
    p.add_argument("--classification-head-name", default=HEAD_NAME, metavar="NAME",
                   help=f"name of the classification head (the criterion's; default {HEAD_NAME})")
    p.add_argument("--seed", type=int, default=1, help="seed of the new weights (head output, LM head; default 1)")
    return p


def read_bert(hf_dir: str):
    """(config dict, state dict, vocabulary) of a Hugging Face BERT folder; ConversionError
    when a file is missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    paths = {name: os.path.join(hf_dir, name) for name in (CONFIG, WEIGHTS, VOCAB)}
    missing = [name for name, path in paths.items() if not os.path.isfile(path)]
    if missing:
        raise ConversionError(f"{hf_dir} has no {', '.join(missing)}: give a Hugging Face BERT folder")
    try:
        with open(paths[CONFIG], encoding="utf-8") as f:
            config = json.load(f)
    except ValueError as e:
        raise ConversionError(f"{paths[CONFIG]} is not JSON ({e})")
    try:
        weights = load_file(paths[WEIGHTS])
    except (SafetensorError, OSError) as e:
        raise ConversionError(f"{paths[WEIGHTS]}: cannot read it as safetensors ({str(e).splitlines()[0]})")
    with open(paths[VOCAB], encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    while vocab and not vocab[-1]:
        vocab.pop()
    return config, weights, vocab


def convert_folder(hf_dir: str, out_dir: str, max_positions: Optional[int] = None, num_classes: int = 2,
                   head_name: str = HEAD_NAME, seed: int = 1) -> List[str]:
    """Write ``out_dir/model.pt`` and ``out_dir/dict.txt`` from a Hugging Face BERT folder;
    returns the ``fairseq-train`` flags that build the model. ConversionError on bad input,
    before anything is written."""
    config, weights, vocab = read_bert(hf_dir)
    shape = bert_shape(config)
    if num_classes < 1:
        raise ConversionError(f"--num-classes {num_classes}: give at least 1")
    lines = dictionary_lines(vocab)
    state = roberta_state_dict(weights, shape, vocab, max_positions, num_classes, head_name, seed)
    os.makedirs(out_dir, exist_ok=True)
    model_path, dict_path = os.path.join(out_dir, "model.pt"), os.path.join(out_dir, "dict.txt")
    save_atomic(weights_checkpoint(state, DEPLOYMENTS["roberta_pass"].stock_history), model_path)
    with atomic_write(dict_path) as f:
        f.write("".join(line + "\n" for line in lines))
    flags = roberta_flags(shape, max_positions)
    print(f"pass_fairseq: wrote {model_path} ({shape.layers} layers x {shape.heads} heads, width {shape.embed_dim})"
          f" and {dict_path} ({len(lines)} wordpieces); train with --arch roberta_pass {' '.join(flags)}"
          f" --finetune-from-model {model_path}", file=sys.stderr)
    return flags


@one_line_errors
def main(argv: Optional[List[str]] = None) -> int:
    args = parse_cli(build_parser(), argv)
    flags = convert_folder(args.hf_dir, args.out_dir, args.max_positions, args.num_classes,
                           args.classification_head_name, args.seed)
    print(" ".join(flags))
    return 0


if __name__ == "__main__":  # python -m pass_fairseq.cli.convert_bert
    sys.exit(main())
