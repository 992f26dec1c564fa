"""The benchmarks' data: split checks, and the inference benchmark's sentence batches
(translation, sentence classification) and prompt batches (language models)."""
import os
from typing import List, Tuple


def has_split(data: str, subset: str) -> bool:
    """Whether fairseq finds ``subset`` in ``data`` (binarized; of a colon-separated list
    of folders, fairseq reads epoch 1 and the test data from the first; a classification
    task's inputs are in its ``input0/``)."""
    from fairseq import utils

    first = utils.split_paths(str(data))[0]
    folders = [first, os.path.join(first, "input0")]  # sentence_prediction keeps its inputs in input0/
    return any(os.path.isdir(d) and any(f.startswith(subset + ".") and f.endswith(".idx") for f in os.listdir(d))
               for d in folders)


def sentence_batches(task, subset: str, n: int, batch_size: int, device) -> Tuple[List[dict], int]:
    """The first ``n`` sentences of ``subset`` in batches of similar (source) length, on
    ``device``; returns the batches and the number of sentences."""
    from fairseq import utils

    task.load_dataset(subset)
    dataset = task.dataset(subset)
    def length(i: int) -> int:  # a translation pair's source length; a classification sample's tokens
        return int(dataset.src_sizes[i]) if hasattr(dataset, "src_sizes") else int(dataset.num_tokens(i))

    ids = sorted(range(min(n, len(dataset))), key=lambda i: (length(i), i))
    batches = []
    for start in range(0, len(ids), batch_size):
        batch = dataset.collater([dataset[i] for i in ids[start:start + batch_size]])
        batches.append(utils.move_to_cuda(batch, device=device) if device.type == "cuda" else batch)
    return batches, len(ids)


def prompt_batches(task, data: str, subset: str, n: int, batch_size: int, prompt_len: int,
                   device) -> Tuple[List[dict], int]:
    """A language model's prompts: the first ``prompt_len`` tokens of the first ``n``
    sentences of ``subset`` (binarized one sentence a line) that are longer, each after the
    beginning-of-sentence symbol, as ``language_modeling`` generates from them (its
    ``inference_step`` takes them as the prefix); in batches, on ``device``."""
    import torch
    from fairseq import utils
    from fairseq.data import data_utils

    sentences = data_utils.load_indexed_dataset(os.path.join(utils.split_paths(str(data))[0], subset),
                                                task.source_dictionary)
    bos = task.source_dictionary.bos() if getattr(task.args, "add_bos_token", False) else task.source_dictionary.eos()
    prompts = []
    for i in range(len(sentences) if sentences is not None else 0):
        if len(prompts) == n:
            break
        tokens = sentences[i][:-1]  # without the end-of-sentence symbol
        if len(tokens) > prompt_len:
            prompts.append(torch.cat([tokens.new_tensor([bos]), tokens[:prompt_len]]))
    batches = []
    for start in range(0, len(prompts), batch_size):
        src = torch.stack(prompts[start:start + batch_size])
        batch = {"id": torch.arange(start, start + len(src)),
                 "net_input": {"src_tokens": src, "src_lengths": torch.full((len(src),), src.size(1))}}
        batches.append(utils.move_to_cuda(batch, device=device) if device.type == "cuda" else batch)
    return batches, len(prompts)
