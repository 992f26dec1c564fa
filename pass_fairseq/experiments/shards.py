"""Short epochs for a short fine-tune: split a binarized training set (translation pairs, or a
language model's sentences) into N random shards, one data folder each. Given the folders colon-separated as its data argument, fairseq reads
the training data of epoch e from the ((e - 1) mod N)-th folder, and valid data and
dictionaries from the first, so one epoch is one shard and the PASS schedule (which acts at
epoch starts) runs N times in one pass over the data.

    shards = build_shards("data/deb-de-en/data-bin", "data/demo/shards8", 8, seed=1)
    fairseq-train shards.data ...
"""
import json
import os
import shutil
from typing import List, NamedTuple

from pass_fairseq.files import write_json

#: written last into the output folder: the source and settings the shards were built from
MARKER = "shards.json"


class Shards(NamedTuple):
    data: str  #: fairseq's data argument: the shard folders, colon-separated
    sizes: List[int]  #: training pairs per shard
    built: bool  #: written by this call (False: found cached, or N = 1)


def _train_prefixes(src: str) -> List[str]:
    """The binarized training files of ``src`` without extension (train.de-en.de, ...; a
    language model's: train)."""
    prefixes = sorted(f[:-len(".bin")] for f in os.listdir(src) if f.startswith("train.") and f.endswith(".bin"))
    if not prefixes:
        raise FileNotFoundError(f"{src}: no binarized training set (train.*.bin) to split")
    return prefixes


def build_shards(src: str, out_dir: str, n: int, seed: int) -> Shards:
    """Split the training set of the data-bin folder ``src`` into ``n`` random shards
    ``out_dir/shard0`` .. ``shard{n-1}`` (sizes differ by at most 1; valid and dictionary
    files copied into each). Cached: a second call with the same source and settings only
    reads ``out_dir/shards.json``; other settings rebuild ``out_dir`` from scratch. With
    ``n`` = 1 the data argument is ``src`` itself."""
    import numpy as np
    from fairseq.data import Dictionary, indexed_dataset

    if n < 1:
        raise ValueError(f"the number of shards must be at least 1, not {n}")
    prefixes = _train_prefixes(src)
    if n == 1:
        return Shards(src, [len(indexed_dataset.MMapIndexedDataset(os.path.join(src, prefixes[0])))], False)
    dirs = [os.path.join(out_dir, f"shard{i}") for i in range(n)]
    data = ":".join(dirs)
    files = sorted(f for f in os.listdir(src) if f.startswith(("train.", "valid.", "dict.")))
    stamp = {"source": os.path.abspath(src), "files": {f: os.path.getsize(os.path.join(src, f)) for f in files},
             "shards": n, "seed": seed}
    marker = os.path.join(out_dir, MARKER)
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            cached = json.load(f)
        if {k: cached.get(k) for k in stamp} == stamp:
            return Shards(data, cached["sizes"], False)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    for d in dirs:
        os.makedirs(d)
        for f in files:
            if not f.startswith("train."):
                shutil.copyfile(os.path.join(src, f), os.path.join(d, f))
    assign = None
    for prefix in prefixes:  # one per language, the same pairs in the same shards
        dataset = indexed_dataset.MMapIndexedDataset(os.path.join(src, prefix))
        if assign is None:
            order = np.random.RandomState(seed).permutation(len(dataset))
            assign = np.empty(len(dataset), dtype=np.int64)
            assign[order] = np.arange(len(dataset)) % n
        # train.de-en.de -> dict.de.txt; a language model's train (fairseq-preprocess --only-source) -> dict.txt
        lang = prefix.rsplit(".", 1)[1] if "." in prefix else None
        vocab = len(Dictionary.load(os.path.join(src, f"dict.{lang}.txt" if lang else "dict.txt")))
        for i, d in enumerate(dirs):
            target = os.path.join(d, prefix)
            builder = indexed_dataset.make_builder(indexed_dataset.data_file_path(target), "mmap", vocab_size=vocab)
            for idx in np.nonzero(assign == i)[0]:
                builder.add_item(dataset[int(idx)])
            builder.finalize(indexed_dataset.index_file_path(target))
    sizes = np.bincount(assign, minlength=n).tolist()
    write_json(marker, {**stamp, "sizes": sizes})
    return Shards(data, sizes, True)
