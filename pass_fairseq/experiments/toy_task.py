"""A generated reversal task for smoke tests: random sentences over a small vocabulary,
the target is the source reversed. ``python -m pass_fairseq.experiments.toy_task DEST`` writes raw
text to DEST/raw and binarized data to DEST/data-bin (joined dictionary).

Its language-model form (:func:`write_reversal_lm_corpus`, :func:`binarize_monolingual`)
writes each pair as one line, ``source = reversed source``: the second half is predictable
only by attending back to the first. A sentence-classification task for the encoders:
:func:`write_majority_corpus` (binarized by
:func:`pass_fairseq.experiments.classification_data.binarize_classification`)."""
import argparse
import os
import random


def write_reversal_corpus(raw_dir, n_train=3000, n_valid=200, n_test=200, vocab=60, max_len=12, seed=1):
    """Write {train,valid,test}.{src,tgt}; returns the raw directory."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    os.makedirs(raw_dir, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        with open(os.path.join(raw_dir, f"{split}.src"), "w") as src, \
                open(os.path.join(raw_dir, f"{split}.tgt"), "w") as tgt:
            for _ in range(n):
                sent = [rng.choice(words) for _ in range(rng.randint(3, max_len))]
                src.write(" ".join(sent) + "\n")
                tgt.write(" ".join(reversed(sent)) + "\n")
    return raw_dir


def write_reversal_lm_corpus(raw_dir, n_train=3000, n_valid=200, n_test=200, vocab=60, max_len=12, seed=1):
    """Write {train,valid,test}.txt, one ``w3 w7 w1 = w1 w7 w3`` line per reversal pair;
    returns the raw directory."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    os.makedirs(raw_dir, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        with open(os.path.join(raw_dir, f"{split}.txt"), "w") as out:
            for _ in range(n):
                sent = [rng.choice(words) for _ in range(rng.randint(3, max_len))]
                out.write(" ".join(sent + ["="] + sent[::-1]) + "\n")
    return raw_dir


def write_majority_corpus(raw_dir, n_train=800, n_valid=100, n_test=100, vocab=20, max_len=11, seed=1):
    """Write {train,valid,test}.{input0,label} of a sentence-classification task: sentences of
    an odd number of words, labelled ``1`` when most of their words come from the first half
    of the vocabulary, else ``0`` (a classifier reading the first token must attend to the
    whole sentence). Returns the raw directory."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    os.makedirs(raw_dir, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        with open(os.path.join(raw_dir, f"{split}.input0"), "w") as text, \
                open(os.path.join(raw_dir, f"{split}.label"), "w") as label:
            for _ in range(n):
                sent = [rng.choice(words) for _ in range(rng.randrange(3, max_len + 1, 2))]
                text.write(" ".join(sent) + "\n")
                label.write(f"{int(2 * sum(int(w[1:]) < vocab // 2 for w in sent) > len(sent))}\n")
    return raw_dir


def binarize_monolingual(raw_dir, dest_dir, workers=1):
    """fairseq-preprocess --only-source, in process: {train,valid,test}.txt to a language
    model's data-bin (dict.txt, {split}.bin/.idx)."""
    from fairseq import options
    from fairseq_cli import preprocess

    parser = options.get_preprocessing_parser()
    args = parser.parse_args([
        "--only-source", "--trainpref", os.path.join(raw_dir, "train.txt"),
        "--validpref", os.path.join(raw_dir, "valid.txt"), "--testpref", os.path.join(raw_dir, "test.txt"),
        "--destdir", dest_dir, "--workers", str(workers),
    ])
    preprocess.main(args)
    return dest_dir


def binarize(raw_dir, dest_dir, workers=1):
    """fairseq-preprocess, in process, with a joined dictionary."""
    from fairseq import options
    from fairseq_cli import preprocess

    parser = options.get_preprocessing_parser()
    args = parser.parse_args([
        "--source-lang", "src", "--target-lang", "tgt", "--joined-dictionary",
        "--trainpref", os.path.join(raw_dir, "train"), "--validpref", os.path.join(raw_dir, "valid"),
        "--testpref", os.path.join(raw_dir, "test"), "--destdir", dest_dir, "--workers", str(workers),
    ])
    preprocess.main(args)
    return dest_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dest")
    parser.add_argument("--train", type=int, default=3000, help="training pairs (default 3000)")
    parser.add_argument("--vocab", type=int, default=60, help="vocabulary size (default 60)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    raw = write_reversal_corpus(os.path.join(args.dest, "raw"), n_train=args.train, vocab=args.vocab, seed=args.seed)
    binarize(raw, os.path.join(args.dest, "data-bin"))


if __name__ == "__main__":
    main()
