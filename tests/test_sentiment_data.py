"""The classification example's corpus: ratings become labels, every sentence lands in one
split only, and the split is the same for the same seed."""
import pytest

from pass_fairseq.experiments.sentiment_data import DataError, label_sentences, read_snippets, split

TEXT = ("1\t2.27\tA gripping film.\r\n2\t-0.6\tEffective but too tepid biopic\r\n3\t0\tIt is a film.\r\n"
        "4\t1.5\tA gripping film.\r\n5\t-1\tToo long.\r\n6\t2\tToo long.\r\n")


def test_ratings_become_labels_and_each_sentence_is_kept_once():
    rows = read_snippets(TEXT)
    assert rows[1] == (-0.6, "Effective but too tepid biopic")
    pairs, dropped = label_sentences(rows)
    assert pairs == [("A gripping film.", "positive"), ("Effective but too tepid biopic", "negative")]
    assert dropped == {"neutral": 1, "duplicates": 2, "disagreeing": 1}


def test_the_split_is_seeded_and_disjoint():
    pairs = [(f"sentence {i}", "positive") for i in range(50)]
    parts = split(pairs, valid=10, test=5, seed=3)
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [35, 10, 5]
    seen = [s for part in parts.values() for s, _ in part]
    assert sorted(seen) == sorted(s for s, _ in pairs)
    assert split(pairs, 10, 5, seed=3) == parts and split(pairs, 10, 5, seed=4) != parts
    with pytest.raises(DataError, match="leave no training sentences"):
        split(pairs, 40, 10, seed=1)


def test_a_malformed_line_is_a_data_error():
    with pytest.raises(DataError, match="line 2 is not id<TAB>rating<TAB>sentence"):
        read_snippets("1\t2\tfine\r\nbroken line\r\n")
