"""Sentence-classification data as fairseq's ``sentence_prediction`` task reads it:
``DEST/input0/{split}.bin/.idx`` and ``dict.txt``, ``DEST/label/{split}.bin/.idx`` and
``dict.txt``, binarized with fairseq-preprocess in process.

The label dictionary is written first, in the order given: fairseq would order a dictionary
it builds by frequency, and the class index of a label is its row in ``label/dict.txt``."""
import contextlib
import io
import os
from typing import Optional, Sequence

from pass_fairseq.files import atomic_write

SPLITS = ("train", "valid", "test")


def binarize_classification(raw_dir: str, dest_dir: str, labels: Sequence[str], srcdict: Optional[str] = None,
                            workers: int = 1) -> str:
    """``raw_dir/{split}.input0`` (one tokenised sentence a line) and ``{split}.label`` (its
    label) to ``dest_dir``; ``srcdict``: the input dictionary to use (a converted BERT's
    ``dict.txt``), else one is built from train. Returns ``dest_dir``."""
    from fairseq import options
    from fairseq_cli import preprocess

    label_dict = os.path.join(dest_dir, "label", "dict.txt")
    with atomic_write(label_dict) as f:
        f.write("".join(f"{label} 1\n" for label in labels))
    for part, dictionary in (("input0", srcdict), ("label", label_dict)):
        argv = ["--only-source", "--destdir", os.path.join(dest_dir, part), "--workers", str(workers)]
        for split in SPLITS:
            argv += [f"--{split}pref", os.path.join(raw_dir, f"{split}.{part}")]
        if dictionary:
            argv += ["--srcdict", dictionary]
        with contextlib.redirect_stdout(io.StringIO()):
            preprocess.main(options.get_preprocessing_parser().parse_args(argv))
    return dest_dir
