"""The benchmarks' data: split checks and the inference benchmark's sentence batches."""
import os
from typing import List, Tuple


def has_split(data: str, subset: str) -> bool:
    """Whether fairseq finds ``subset`` in ``data`` (binarized; of a colon-separated list
    of folders, fairseq reads epoch 1 and the test data from the first)."""
    from fairseq import utils

    first = utils.split_paths(str(data))[0]
    return os.path.isdir(first) and any(f.startswith(subset + ".") and f.endswith(".idx") for f in os.listdir(first))


def sentence_batches(task, subset: str, n: int, batch_size: int, device) -> Tuple[List[dict], int]:
    """The first ``n`` sentences of ``subset`` in batches of similar source length, on
    ``device``; returns the batches and the number of sentences."""
    from fairseq import utils

    task.load_dataset(subset)
    dataset = task.dataset(subset)
    ids = sorted(range(min(n, len(dataset))), key=lambda i: (dataset.src_sizes[i], i))
    batches = []
    for start in range(0, len(ids), batch_size):
        batch = dataset.collater([dataset[i] for i in ids[start:start + batch_size]])
        batches.append(utils.move_to_cuda(batch, device=device) if device.type == "cuda" else batch)
    return batches, len(ids)
