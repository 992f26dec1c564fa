"""Scoring a checkpoint on a split (test by default): ``fairseq-generate`` (beam 5) writes the
translations, detokenized sacreBLEU scores them against the raw references, overall and per origin.

    hyps, seconds = generate(data_bin, checkpoint, out_dir, batch_size=128)
    result = score(hyps, raw_dir, out_dir)   # raw_dir/test.en (and test.origin, if there)
    generate(..., split="valid"); score(..., split="valid")   # the validation set
"""
import os
import time
from typing import Dict, List, Tuple

import pass_fairseq
from pass_fairseq.experiments.jobs import JobError, check, run, tool
from pass_fairseq.files import atomic_write



def generate_command(data_bin: str, checkpoint: str, out_dir: str, batch_size: int,
                     split: str = "test") -> List[str]:
    """fairseq-generate, beam 5, on ``split`` of ``data_bin``; writes
    ``out_dir/generate-{split}.txt``."""
    # --required-batch-size-multiple 1: with fairseq's default 8, a fixed --batch-size larger
    # than the set drops the remainder (100 sentences at batch size 128 gave 96 hypotheses).
    # --max-len-a/b cap runaway hypotheses (the whole test set takes ~30 s at width 128).
    return [tool("fairseq-generate"), data_bin, "--user-dir", pass_fairseq.PLUGIN_DIR,
            "--path", checkpoint, "--gen-subset", split, "--beam", "5", "--remove-bpe", "sentencepiece",
            "--batch-size", str(batch_size), "--required-batch-size-multiple", "1",
            "--max-len-a", "1.2", "--max-len-b", "10", "--results-path", out_dir, "--num-workers", "0",
            "--log-format", "simple", "--log-interval", "4"]


def read_hypotheses(path: str) -> Dict[int, str]:
    """{sentence id: detokenized hypothesis} from the D- lines of a generate-test.txt
    (fairseq writes them in batch order; an empty hypothesis is ``""``)."""
    hyps = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("D-"):
                parts = line.rstrip("\n").split("\t")
                hyps[int(parts[0][2:])] = parts[2] if len(parts) > 2 else ""
    return hyps


def generate(data_bin: str, checkpoint: str, out_dir: str, batch_size: int,
             split: str = "test") -> Tuple[Dict[int, str], float]:
    """Run :func:`generate_command` (output echoed, logged to ``out_dir/generate.log``);
    returns the hypotheses by sentence id and the seconds it took. Raises
    :class:`~pass_fairseq.experiments.jobs.JobError` when fairseq-generate fails."""
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, f"generate-{split}.log" if split != "test" else "generate.log")
    start = time.time()
    check(run(generate_command(data_bin, checkpoint, out_dir, batch_size, split), log_path),
          f"fairseq-generate on {checkpoint}", log_path)
    seconds = time.time() - start
    return read_hypotheses(os.path.join(out_dir, f"generate-{split}.txt")), seconds


def _read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def score(hyps: Dict[int, str], raw_dir: str, out_dir: str, split: str = "test") -> dict:
    """Detokenized sacreBLEU of ``hyps`` (by sentence id) against ``raw_dir/{split}.en``,
    overall and, when ``raw_dir/{split}.origin`` has one origin per reference, per origin.
    Writes the hypotheses in order to ``out_dir/hyp.{split}.en``. Raises
    :class:`~pass_fairseq.experiments.jobs.JobError` unless there is exactly one hypothesis per
    reference."""
    import sacrebleu

    refs = _read_lines(os.path.join(raw_dir, f"{split}.en"))
    origin_path = os.path.join(raw_dir, f"{split}.origin")
    origins = [o.strip() for o in _read_lines(origin_path)] if os.path.isfile(origin_path) else None
    if sorted(hyps) != list(range(len(refs))):
        raise JobError(f"fairseq-generate gave {len(hyps)} hypotheses for {len(refs)} {split} references"
                       f" ({raw_dir}/{split}.en): they must be sentences 0..{len(refs) - 1}, one each")
    ordered = [hyps[i] for i in range(len(refs))]
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, f"hyp.{split}.en")) as f:
        f.writelines(h + "\n" for h in ordered)
    bleu = sacrebleu.BLEU()
    result = {"sacrebleu": round(bleu.corpus_score(ordered, [refs]).score, 2),
              "signature": str(bleu.get_signature()), "sentences": len(refs), "by_origin": {}}
    if origins and len(origins) == len(refs):
        for origin in sorted(set(origins)):
            idx = [i for i, o in enumerate(origins) if o == origin]
            result["by_origin"][origin] = round(
                sacrebleu.corpus_bleu([ordered[i] for i in idx], [[refs[i] for i in idx]]).score, 2)
    return result
