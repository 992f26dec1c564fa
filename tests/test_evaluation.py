"""pass_fairseq.experiments.evaluation: parsing fairseq-generate's output, scoring by sacreBLEU overall and
per origin, and the two end to end on a tiny toy model."""
import os

import pytest

from conftest import TINY_MODEL, TRAIN_COMMON, train
from pass_fairseq.experiments.jobs import JobError
from pass_fairseq.experiments.evaluation import generate, generate_command, read_hypotheses, score

REFS = ["the cat sat on the mat .", "a dog barked at the postman .",
        "open the file and read it .", "close the window before you leave ."]
ORIGINS = ["ding", "ding", "libreoffice", "libreoffice"]
#: fairseq-generate's output for 3 sentences: batch order, not test-set order; sentence 2 is empty
GENERATE_TEST = """S-1\tein Hund bellte
T-1\ta dog barked
H-1\t-0.41\t▁a ▁dog ▁barked
D-1\t-0.41\ta dog barked
P-1\t-0.40 -0.42 -0.41
S-2\tleer
H-2\t-0.90\t
D-2\t-0.90\t
S-0\tdie Katze
H-0\t-0.20\t▁the ▁cat
D-0\t-0.20\tthe cat
Generate test with beam=5: BLEU4 = 12.34
"""


def write_raw(folder, refs=REFS, origins=ORIGINS, split="test"):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{split}.en"), "w", encoding="utf-8") as f:
        f.writelines(r + "\n" for r in refs)
    if origins:
        with open(os.path.join(folder, f"{split}.origin"), "w", encoding="utf-8") as f:
            f.writelines(o + "\n" for o in origins)
    return str(folder)


def test_read_hypotheses_keys_by_sentence_id(tmp_path):
    path = tmp_path / "generate-test.txt"
    path.write_text(GENERATE_TEST, encoding="utf-8")
    assert read_hypotheses(str(path)) == {0: "the cat", 1: "a dog barked", 2: ""}


def test_identical_hypotheses_score_100(tmp_path):
    raw = write_raw(tmp_path / "raw")
    result = score(dict(enumerate(REFS)), raw, str(tmp_path / "eval"))
    assert (result["sacrebleu"], result["sentences"]) == (100.0, 4)
    assert result["by_origin"] == {"ding": 100.0, "libreoffice": 100.0}
    assert "tok:13a" in result["signature"]  # detokenized text, sacreBLEU's own tokenizer


def test_the_validation_split_scores_against_its_own_references(tmp_path):
    raw = write_raw(tmp_path / "raw", refs=REFS[:2], origins=ORIGINS[:2], split="valid")
    write_raw(tmp_path / "raw")  # the test set is longer: scoring valid must not read it
    result = score(dict(enumerate(REFS[:2])), raw, str(tmp_path / "eval"), split="valid")
    assert (result["sacrebleu"], result["sentences"]) == (100.0, 2)
    assert os.path.isfile(tmp_path / "eval" / "hyp.valid.en")


def test_scores_split_by_origin_and_hypotheses_written_in_order(tmp_path):
    raw = write_raw(tmp_path / "raw")
    hyps = {3: "xx yy zz", 0: REFS[0], 2: "xx yy zz", 1: REFS[1]}  # libreoffice: no word right
    result = score(hyps, raw, str(tmp_path / "eval"))
    assert result["by_origin"] == {"ding": 100.0, "libreoffice": 0.0}
    assert 0.0 < result["sacrebleu"] < 100.0
    written = (tmp_path / "eval" / "hyp.test.en").read_text(encoding="utf-8").splitlines()
    assert written == [REFS[0], REFS[1], "xx yy zz", "xx yy zz"]


def test_no_origin_file_no_split(tmp_path):
    raw = write_raw(tmp_path / "raw", origins=None)
    assert score(dict(enumerate(REFS)), raw, str(tmp_path / "eval"))["by_origin"] == {}


@pytest.mark.parametrize("hyps", [dict(enumerate(REFS[:3])), {0: "a", 1: "b", 2: "c", 4: "d"}],
                         ids=["one-missing", "wrong-id"])
def test_count_mismatch_is_one_clear_line(tmp_path, hyps):
    raw = write_raw(tmp_path / "raw")
    with pytest.raises(JobError, match=f"gave {len(hyps)} hypotheses for 4 test references") as err:
        score(hyps, raw, str(tmp_path / "eval"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "eval" / "hyp.test.en").exists()


def test_generate_command_flags():
    cmd = generate_command("data-bin", "model.pt", "out", 128)
    flags = dict(zip(cmd[2::2], cmd[3::2]))  # the data folder first, then flag/value pairs
    assert cmd[1] == "data-bin" and os.path.basename(cmd[0]) == "fairseq-generate"
    assert flags["--path"] == "model.pt" and flags["--results-path"] == "out" and flags["--batch-size"] == "128"
    assert flags["--beam"] == "5" and flags["--gen-subset"] == "test"
    assert flags["--required-batch-size-multiple"] == "1"  # fairseq's default 8 drops sentences
    valid = generate_command("data-bin", "model.pt", "out", 128, split="valid")
    assert dict(zip(valid[2::2], valid[3::2]))["--gen-subset"] == "valid"


def test_generate_and_score_a_tiny_model(toy_data, tmp_path):
    """A 1-epoch model on the toy task: every test sentence comes back once, in test-set order."""
    stock = [a if a != "transformer_pass_iwslt" else "transformer_iwslt_de_en" for a in TINY_MODEL]
    save = train(toy_data, tmp_path / "model", *stock, *TRAIN_COMMON, "--criterion", "label_smoothed_cross_entropy",
                 "--label-smoothing", "0.1", "--max-epoch", "1")
    out = str(tmp_path / "eval")
    # batch size 16 with 50 sentences: the last batch is not a multiple of 8 and must not be dropped
    hyps, seconds = generate(toy_data, os.path.join(save, "checkpoint_last.pt"), out, 16)
    assert sorted(hyps) == list(range(50)) and seconds > 0
    assert os.path.getsize(os.path.join(out, "generate.log")) > 0
    # --remove-bpe sentencepiece joins the toy words ("w3 w5" -> "w3w5"): so are the references
    raw_dir = os.path.join(os.path.dirname(toy_data), "raw")
    with open(os.path.join(raw_dir, "test.src"), encoding="utf-8") as f:
        sources = ["".join(line.split()) for line in f]
    with open(os.path.join(out, "generate-test.txt"), encoding="utf-8") as f:
        shown = dict(line.rstrip("\n").split("\t")[:2] for line in f if line.startswith("S-"))
    assert [shown[f"S-{i}"] for i in range(50)] == sources  # sentence id = line of the test set
    with open(os.path.join(raw_dir, "test.tgt"), encoding="utf-8") as f:
        refs = ["".join(line.split()) for line in f]
    result = score(hyps, write_raw(tmp_path / "raw", refs, origins=None), out)
    assert result["sentences"] == 50 and 0.0 <= result["sacrebleu"] <= 100.0
    assert len((tmp_path / "eval" / "hyp.test.en").read_text(encoding="utf-8").splitlines()) == 50
