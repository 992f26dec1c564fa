"""pass-convert-bert: a Hugging Face BERT folder becomes a fairseq roberta checkpoint that
computes what Hugging Face's own BertModel computes with the same weights (the reference),
and bad folders are one-line errors."""
import json
import os

import pytest
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from transformers import BertConfig, BertModel

from pass_fairseq.bert_conversion import ConversionError, bert_shape, fairseq_rows
from pass_fairseq.cli import convert_bert
from conftest import USER_DIR

VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)] + ["##s"]
LAYERS, WIDTH, HEADS = 2, 32, 4


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random BertModel in Hugging Face's format, every weight drawn (layer norms too), so
    that any key mapped to the wrong place shows."""
    folder = tmp_path_factory.mktemp("bert")
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=64, max_position_embeddings=24, layer_norm_eps=1e-12)
    torch.manual_seed(0)
    model = BertModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "LayerNorm.weight" in name else 0.0))
    model.save_pretrained(folder)
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB))
    return str(folder), model.eval()


def convert(tmp_path, hf_dir, *flags):
    out = tmp_path / "converted"
    assert convert_bert.main([hf_dir, str(out), *flags]) == 0
    return out


def build_encoder(out, arch_flags, arch="roberta_pass"):
    """The fairseq model a sentence_prediction_pass run builds from the converted folder,
    with the converted weights loaded as --finetune-from-model loads them (strict)."""
    data = out / "data"
    (data / "input0").mkdir(parents=True)
    (data / "label").mkdir()
    (data / "input0" / "dict.txt").write_text((out / "dict.txt").read_text())
    (data / "label" / "dict.txt").write_text("0 1\n1 1\n")
    argv = [str(data), "--user-dir", USER_DIR, "--task", "sentence_prediction_pass", "--num-classes", "2",
            "--arch", arch, "--criterion", "sentence_prediction", *arch_flags]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(out / "model.pt"))
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    return model.eval(), task


def batch():
    """Two sentences in BERT ids ([CLS] ... [SEP]), the second shorter (right padding), and
    the same in fairseq ids (wordpiece i is 4 + i; [CLS] is <s>, [SEP] is </s>)."""
    sentences = [[6, 9, 12, 46, 20, 7, 7], [30, 11, 2]]
    width = max(map(len, sentences)) + 2
    bert = torch.zeros(2, width, dtype=torch.long)
    fairseq = torch.ones(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.long)
    for i, s in enumerate(sentences):
        bert[i, :len(s) + 2] = torch.tensor([3, *s, 4])
        fairseq[i, :len(s) + 2] = torch.tensor([0, *(t + 4 for t in s), 2])
        mask[i, :len(s) + 2] = 1
    return bert, mask, fairseq


def test_the_converted_encoder_computes_what_bert_computes(tiny_bert, tmp_path, capsys):
    hf_dir, reference = tiny_bert
    out = convert(tmp_path, hf_dir)
    flags = capsys.readouterr().out.split()
    assert flags[flags.index("--layer-norm-eps") + 1] == "1e-12"
    model, _ = build_encoder(out, flags)
    bert, mask, fairseq = batch()
    with torch.no_grad():
        expected = reference(input_ids=bert, attention_mask=mask)
        features, _ = model(fairseq, features_only=True)
        pooled = torch.tanh(model.classification_heads["sentence_classification_head"].dense(features[:, 0]))
    real = mask.bool()
    assert (features[real] - expected.last_hidden_state[real]).abs().max() < 1e-5
    assert (pooled - expected.pooler_output).abs().max() < 1e-5


def test_fairseq_layer_norm_eps_is_the_one_difference(tiny_bert, tmp_path, capsys):
    """Built with fairseq's eps (1e-5) the same weights give other features: the flag matters."""
    hf_dir, reference = tiny_bert
    out = convert(tmp_path, hf_dir)
    flags = capsys.readouterr().out.split()
    i = flags.index("--layer-norm-eps")
    model, _ = build_encoder(out, flags[:i] + flags[i + 2:])
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    bert, mask, fairseq = batch()
    with torch.no_grad():
        expected = reference(input_ids=bert, attention_mask=mask).last_hidden_state
        features, _ = model(fairseq, features_only=True)
    assert (features[mask.bool()] - expected[mask.bool()]).abs().max() > 1e-5


def test_dictionary_and_positions(tiny_bert, tmp_path, capsys):
    hf_dir, _ = tiny_bert
    out = convert(tmp_path, hf_dir, "--max-positions", "10", "--num-classes", "3")
    flags = capsys.readouterr().out.split()
    assert flags[flags.index("--max-positions") + 1] == "10"
    assert (out / "dict.txt").read_text().splitlines() == [f"{t} 1" for t in VOCAB]
    state = torch.load(out / "model.pt", weights_only=True)["model"]
    assert state["encoder.sentence_encoder.embed_positions.weight"].shape == (12, WIDTH)
    assert state["classification_heads.sentence_classification_head.out_proj.weight"].shape == (3, WIDTH)
    model, task = build_encoder(out, flags)
    assert task.source_dictionary.index("w0") == 4 + VOCAB.index("w0")
    assert len(task.source_dictionary) == len(VOCAB) + 5  # 4 specials + <mask>
    assert fairseq_rows(VOCAB)[:4].tolist() == [3, 0, 4, 2] and fairseq_rows(VOCAB)[-1] == 5


@pytest.mark.parametrize("change, message", [
    (lambda d: os.remove(os.path.join(d, "vocab.txt")), "has no vocab.txt: give a Hugging Face BERT folder"),
    (lambda d: open(os.path.join(d, "model.safetensors"), "w").write("not safetensors"),
     "cannot read it as safetensors"),
    (lambda d: _edit_config(d, hidden_act="relu"), "hidden_act 'relu'"),
    (lambda d: _edit_config(d, vocab_size=99), "vocab.txt has 47 tokens, config.json's vocab_size is 99"),
    (lambda d: open(os.path.join(d, "vocab.txt"), "w").write("".join(t + "\n" for t in VOCAB[:-1] + ["w0"])),
     "vocab.txt lists 'w0' twice"),
], ids=["no-vocab", "bad-weights", "activation", "vocab-size", "duplicate"])
def test_bad_folders_are_one_line_errors(tiny_bert, tmp_path, capsys, change, message):
    hf_dir = tmp_path / "bert"
    os.makedirs(hf_dir)
    for name in os.listdir(tiny_bert[0]):
        with open(os.path.join(tiny_bert[0], name), "rb") as src, open(hf_dir / name, "wb") as dst:
            dst.write(src.read())
    change(str(hf_dir))
    with pytest.raises(SystemExit) as e:
        convert_bert.main([str(hf_dir), str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out" / "model.pt")


def _edit_config(folder, **changes):
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(changes)
    with open(path, "w") as f:
        json.dump(config, f)


def test_bert_shape_refuses_what_roberta_cannot_compute():
    base = dict(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=8, vocab_size=10,
                max_position_embeddings=8)
    assert bert_shape(base).layer_norm_eps == 1e-12
    with pytest.raises(ConversionError, match="relative_key"):
        bert_shape(dict(base, position_embedding_type="relative_key"))
    with pytest.raises(ConversionError, match="not a multiple"):
        bert_shape(dict(base, num_attention_heads=3))
    with pytest.raises(ConversionError, match="no num_hidden_layers"):
        bert_shape({k: v for k, v in base.items() if k != "num_hidden_layers"})
