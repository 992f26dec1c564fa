"""Decoder-only language models end to end: a stock ``transformer_lm`` fine-tuned into
``transformer_lm_pass`` with PASS to exactly K heads (``language_modeling_pass``,
``pass_cross_entropy``), pruned; fairseq-eval-lm gives the same perplexity for the gated,
pruned and stock-format models, the sequence generator the same tokens; the benchmark
times their generation. Tiny models on a generated reversal language (``a b c = c b a``)."""
import contextlib
import csv
import io
import os
import subprocess
import sys

import pytest
import torch

from conftest import USER_DIR, load_state, pruned_and_stock, train
from pass_fairseq.bench.data import prompt_batches
from pass_fairseq.cli import bench_inference
from pass_fairseq.gate_report import gate_report
from pass_fairseq.experiments.toy_task import binarize_monolingual, write_reversal_lm_corpus

K = 2  # of 8 heads: 2 layers of 4
#: stock --arch transformer_lm_gpt2_tiny and gated transformer_lm_pass_gpt2_tiny with these flags
LM_MODEL = ["--decoder-attention-heads", "4", "--decoder-ffn-embed-dim", "128", "--share-decoder-input-output-embed"]
LM_COMMON = [
    *LM_MODEL, "--tokens-per-sample", "64", "--sample-break-mode", "complete", "--lr", "0.003",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50", "--max-tokens", "1500", "--no-epoch-checkpoints",
    "--num-workers", "0", "--log-format", "simple", "--log-interval", "100", "--no-progress-bar",
]
STOCK_LM = ["--task", "language_modeling", "--arch", "transformer_lm_gpt2_tiny", "--criterion", "cross_entropy",
            "--optimizer", "adam", *LM_COMMON]
PASS_LM = ["--task", "language_modeling_pass", "--arch", "transformer_lm_pass_gpt2_tiny", "--criterion",
           "pass_cross_entropy", "--optimizer", "pass_adam", "--pass-target-heads", str(K), "--pass-reg-scaling",
           "token", "--best-checkpoint-metric", "pass_loss", *LM_COMMON]
#: fairseq-eval-lm with the stock checkpoint, in a process without the plugin; prints the loss
STOCK_EVAL_LM = """
import sys
from fairseq import options
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq_cli import eval_lm
args = options.parse_args_and_arch(options.get_eval_lm_parser(), sys.argv[1:])
print(repr(float(eval_lm.main(convert_namespace_to_omegaconf(args))["loss"])))
assert "pass_fairseq" not in sys.modules
"""


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    raw = write_reversal_lm_corpus(str(root / "raw"), n_train=800, n_valid=100, n_test=50, vocab=30, max_len=8)
    with contextlib.redirect_stdout(io.StringIO()):
        return binarize_monolingual(raw, str(root / "data-bin"))


@pytest.fixture(scope="module")
def stock_lm(lm_data, tmp_path_factory):
    save = train(lm_data, tmp_path_factory.mktemp("stock_lm"), *STOCK_LM, "--max-epoch", "4")
    return os.path.join(save, "checkpoint_last.pt")


@pytest.fixture(scope="module")
def pass_lm(lm_data, stock_lm, tmp_path_factory):
    """PASS fine-tuned from the stock model: the gates start open (the stock model itself)."""
    return train(lm_data, tmp_path_factory.mktemp("pass_lm"), *PASS_LM, "--finetune-from-model", stock_lm,
                 "--max-epoch", "24", "--seed", "1")


@pytest.fixture(scope="module")
def converted(pass_lm, tmp_path_factory):
    """(gated, pruned, stock-format) checkpoint paths."""
    return pruned_and_stock(os.path.join(pass_lm, "checkpoint_best.pt"), str(tmp_path_factory.mktemp("converted")))


def eval_lm_loss(data, checkpoint):
    """fairseq-eval-lm in process on the test split: the loss per token (base 2)."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import eval_lm

    argv = [data, "--user-dir", USER_DIR, "--path", str(checkpoint), "--cpu", "--gen-subset", "test",
            "--tokens-per-sample", "64", "--max-tokens", "2000"]
    args = options.parse_args_and_arch(options.get_eval_lm_parser(), argv)
    return float(eval_lm.main(convert_namespace_to_omegaconf(args))["loss"])


def generated_tokens(data, checkpoint, beam=2):
    """The sequence generator's continuations of 12 test prompts (language_modeling's
    inference_step: incremental decoding, beam reordering of the key/value caches)."""
    from fairseq import checkpoint_utils
    from fairseq.sequence_generator import SequenceGenerator

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides={"data": data})
    model = models[0].eval()
    batches, n = prompt_batches(task, data, "test", 12, 6, 4, torch.device("cpu"))
    assert n == 12
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_b=16)
    with torch.no_grad():
        return [h[0]["tokens"].tolist() for batch in batches for h in task.inference_step(generator, [model], batch)]


def test_pass_ends_with_exactly_k_binary_gates(pass_lm):
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        state = load_state(os.path.join(pass_lm, name))
        report = gate_report(state["model"])
        assert (report["heads_total"], report["open"], report["nonbinary"]) == (8, K, 0), name
        assert [m["name"] for m in report["modules"]] == ["decoder.layers.0.self_attn", "decoder.layers.1.self_attn"]
        assert int(state["model"]["pass_epoch"]) == 24
    assert state["cfg"]["task"]["_name"] == "language_modeling_pass"


def test_pruned_and_stock_lms_score_and_generate_as_the_gated_one(converted, lm_data, tmp_path):
    gated, pruned, stock = converted
    pruned_state = load_state(pruned)
    assert pruned_state["cfg"]["model"].arch == "transformer_lm_pass_pruned"
    kept = pruned_state["pass_pruned_heads"]
    assert sum(len(h) for h in kept.values()) == K
    assert pruned_state["model"]["decoder.layers.0.self_attn.q_proj.weight"].size(0) == 16 * len(
        kept["decoder.layers.0.self_attn"])
    stock_state = load_state(stock)
    assert stock_state["cfg"]["model"]["_name"] == "transformer_lm"
    assert stock_state["cfg"]["task"]["_name"] == "language_modeling"

    losses = [eval_lm_loss(lm_data, path) for path in (gated, pruned)]
    env = dict(os.environ, PYTHONPATH="")  # nothing that would bring the plugin in
    proc = subprocess.run([sys.executable, "-c", STOCK_EVAL_LM, lm_data, "--path", stock, "--cpu", "--gen-subset",
                           "test", "--tokens-per-sample", "64", "--max-tokens", "2000"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses.append(float(proc.stdout.strip().splitlines()[-1]))
    assert 0 < losses[0] < 6
    assert abs(losses[1] - losses[0]) < 1e-5 and abs(losses[2] - losses[0]) < 1e-5, losses

    tokens = [generated_tokens(lm_data, path) for path in (gated, pruned, stock)]
    assert tokens[0] == tokens[1] == tokens[2]
    assert all(len(t) > 5 for t in tokens[0])


def test_bench_times_lm_generation(converted, tmp_path, capsys):
    work = str(tmp_path / "bench")
    assert bench_inference.main([converted[0], "--heads", f"{K},4", "--layouts", "topk", "--sentences", "6",
                                 "--batch-size", "3", "--prompt-len", "4", "--out-len", "5", "--beam", "2",
                                 "--repeats", "1", "--warmup", "0", "--threads", "1", "--work-dir", work]) == 0
    printed = capsys.readouterr().out
    assert "6 4-token prompts" in printed
    with open(os.path.join(work, "bench.csv")) as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"unpruned (stock transformer_lm)", "gated (transformer_lm_pass)",
                         "no attention (all skipped)", f"pruned K={K} topk", "pruned K=4 topk"}
    assert float(rows["unpruned (stock transformer_lm)"]["speedup"]) == 1.0
    assert int(rows["no attention (all skipped)"]["skipped_modules"]) == 2
    assert float(rows[f"pruned K={K} topk"]["time_over_ideal"]) > 0
    # 6 prompts, 5 generated tokens and the end of sentence each: the prompts are not counted
    tokens = float(rows["gated (transformer_lm_pass)"]["tok_per_s"]) / float(rows["gated (transformer_lm_pass)"]["sent_per_s"])
    assert tokens == pytest.approx(6.0, rel=0.02)


def test_stock_lm_weights_load_into_the_gated_lm_unchanged(lm_data):
    """Both gated LM architectures mirror their stock ones: same shapes and, with the gates
    a stock checkpoint's missing entries get (open), the same outputs."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    for stock_arch, gated_arch, flags in (("transformer_lm", "transformer_lm_pass", ["--decoder-layers", "2"]),
                                          ("transformer_lm_gpt2_tiny", "transformer_lm_pass_gpt2_tiny", LM_MODEL)):
        models = []
        for task, arch in (("language_modeling", stock_arch), ("language_modeling_pass", gated_arch)):
            argv = [lm_data, "--user-dir", USER_DIR, "--task", task, "--arch", arch, "--cpu", *flags]
            cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
            models.append(tasks.setup_task(cfg.task).build_model(cfg.model).eval())
        stock, gated = models
        gated.load_state_dict(stock.state_dict())  # fairseq's upgrade fills the gates and buffers
        assert len(gated.gated_attentions()) == 2
        tokens = torch.randint(4, 30, (3, 9))
        assert torch.allclose(stock(tokens)[0], gated(tokens)[0], atol=1e-5), stock_arch


def test_concentrator_is_logged_for_an_lm(lm_data, stock_lm, tmp_path, caplog):
    caplog.set_level("INFO", logger="train")
    save = train(lm_data, tmp_path, *PASS_LM, "--finetune-from-model", stock_lm, "--pass-concentrator",
                 "--pass-conc-end-epoch", "1", "--max-epoch", "2")
    epochs = [r.getMessage() for r in caplog.records if r.name == "train"]  # one summary line per epoch
    conc = [float(line.split("pass_conc ")[1].split(" ")[0]) for line in epochs]
    assert len(conc) == 2 and conc[0] > 0 and conc[1] == 0.0
    assert all("pass_open " in line and "ppl " in line for line in epochs)
    assert int(load_state(os.path.join(save, "checkpoint_last.pt"))["model"]["pass_epoch"]) == 2


@pytest.mark.parametrize("change, message", [
    ({"language_modeling_pass": "language_modeling"},
     "needs a task that runs the gate schedule, --task translation_pass or language_modeling_pass"),
    ({"transformer_lm_pass_gpt2_tiny": "transformer_lm_gpt2_tiny"}, "needs a gated model"),
], ids=["stock-task", "stock-arch"])
def test_lm_misuse_is_a_one_line_error(lm_data, tmp_path, capsys, change, message):
    with pytest.raises(SystemExit) as e:
        train(lm_data, tmp_path, *[change.get(a, a) for a in PASS_LM], "--max-epoch", "1")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("pass_fairseq: error:") == 1
