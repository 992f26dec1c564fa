"""pass_fairseq.experiments.shards on the toy task: the shards partition the training set, fairseq reads
them, and a second call is served from the cache."""
import filecmp
import os
from collections import Counter

import pytest

from pass_fairseq.experiments.shards import MARKER, build_shards

N = 3
PAIR = ("train.src-tgt.src", "train.src-tgt.tgt")


def pairs(folder):
    """The (source, target) token tuples of a data folder's training set, read as fairseq reads them."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    src, tgt = (MMapIndexedDataset(os.path.join(folder, prefix)) for prefix in PAIR)
    assert len(src) == len(tgt)
    return [(tuple(src[i].tolist()), tuple(tgt[i].tolist())) for i in range(len(src))]


@pytest.fixture(scope="module")
def shards(toy_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shards") / f"shards{N}")
    return out, build_shards(toy_data, out, N, seed=1)


def test_shards_partition_the_training_set(toy_data, shards):
    out, result = shards
    folders = result.data.split(":")
    assert folders == [os.path.join(out, f"shard{i}") for i in range(N)] and result.built
    per_shard = [pairs(folder) for folder in folders]
    assert [len(p) for p in per_shard] == result.sizes
    assert sum(result.sizes) == 800 and max(result.sizes) - min(result.sizes) <= 1
    assert Counter(p for shard in per_shard for p in shard) == Counter(pairs(toy_data))


def test_valid_and_dictionaries_are_copied(toy_data, shards):
    copied = sorted(f for f in os.listdir(toy_data) if f.startswith(("valid.", "dict.")))
    assert len(copied) == 6  # valid .bin/.idx for both languages, two dictionaries
    for folder in shards[1].data.split(":"):
        assert sorted(f for f in os.listdir(folder) if not f.startswith("train.")) == copied
        assert all(filecmp.cmp(os.path.join(toy_data, f), os.path.join(folder, f), shallow=False) for f in copied)


def test_second_call_is_cached(toy_data, shards):
    out, first = shards
    files = [os.path.join(root, f) for root, _, names in os.walk(out) for f in names]
    mtimes = {f: os.stat(f).st_mtime_ns for f in files}
    again = build_shards(toy_data, out, N, seed=1)
    assert (again.data, again.sizes, again.built) == (first.data, first.sizes, False)
    assert {f: os.stat(f).st_mtime_ns for f in files} == mtimes
    assert os.path.isfile(os.path.join(out, MARKER))


def test_another_seed_rebuilds(toy_data, tmp_path):
    out = str(tmp_path / "shards")
    first = pairs(build_shards(toy_data, out, 2, seed=1).data.split(":")[0])
    rebuilt = build_shards(toy_data, out, 2, seed=2)
    assert rebuilt.built and pairs(rebuilt.data.split(":")[0]) != first


def test_one_shard_is_the_source_itself(toy_data, tmp_path):
    result = build_shards(toy_data, str(tmp_path / "shards1"), 1, seed=1)
    assert (result.data, result.sizes, result.built) == (toy_data, [800], False)
    assert not os.path.exists(tmp_path / "shards1")


def test_a_folder_without_training_data_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no binarized training set"):
        build_shards(str(tmp_path), str(tmp_path / "out"), 2, seed=1)


def test_a_language_model_training_set_is_split_too(tmp_path):
    """fairseq-preprocess --only-source writes train.bin and dict.txt: the same shards."""
    import contextlib
    import io

    from fairseq.data.indexed_dataset import MMapIndexedDataset

    from pass_fairseq.experiments.toy_task import binarize_monolingual, write_reversal_lm_corpus

    raw = write_reversal_lm_corpus(str(tmp_path / "raw"), n_train=50, n_valid=5, n_test=5, vocab=10, max_len=4)
    with contextlib.redirect_stdout(io.StringIO()):
        data = binarize_monolingual(raw, str(tmp_path / "data-bin"))
    result = build_shards(data, str(tmp_path / "shards"), 2, seed=1)
    folders = result.data.split(":")
    sentences = [[tuple(x.tolist()) for x in MMapIndexedDataset(os.path.join(f, "train"))] for f in folders]
    assert sorted(s for shard in sentences for s in shard) == sorted(
        tuple(x.tolist()) for x in MMapIndexedDataset(os.path.join(data, "train")))
    assert [len(s) for s in sentences] == result.sizes == [25, 25]
    assert all(os.path.isfile(os.path.join(f, name)) for f in folders for name in ("dict.txt", "valid.bin"))
