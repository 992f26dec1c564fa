"""Data-parallel training on 2 CPU processes: the real fairseq-train under torchrun, with
torch.distributed's gloo backend (pass_fairseq.distributed, pass-train-distributed)."""
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import PASS_CRITERION, TINY_MODEL, TRAIN_COMMON, USER_DIR, load_state, train
from pass_fairseq.distributed import LaunchError, torchrun_command, train_rank, worker_env
from pass_fairseq.gate_report import gate_report
from pass_fairseq.gate_schedule import reopen_probabilities, sample_reopen
from pass_fairseq.gates import worker_uniform

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(ROOT, "tests", "dist_probe.py")
LAUNCHER = ["-m", "pass_fairseq.cli.train_distributed"]
K, SEED, CLIP_MIN, REOPEN_UNTIL, REOPEN_DECAY = 4, 1, -6.0, 10, 1.0
#: 2 ranks x 4 batches of --max-tokens 750 an epoch: 4 updates of ~1,300 target tokens. The
#: gates move fast (--pass-gate-lr 0.5, lambda from 1) and close at -6, so closed gates meet
#: reopening (undecayed) at the epoch starts up to 10; the run is on target from epoch 18 of
#: 24. No dropout: nothing then draws random numbers of a rank's batch shape before the first
#: gate, so without per-rank gate noise both ranks would draw the same gates.
RUN = [*TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION, "--pass-target-heads", str(K), "--max-tokens", "750",
       "--dropout", "0", "--pass-gate-lr", "0.5", "--pass-lambda-init", "1", "--pass-clip-min", str(CLIP_MIN),
       "--pass-reopen-until-epoch", str(REOPEN_UNTIL), "--pass-reopen-decay", str(REOPEN_DECAY),
       "--disable-validation", "--seed", str(SEED), "--max-epoch", "24"]
#: statistics each rank gathers for itself (all-reduced only when reopening reads them)
RANK_LOCAL = ("conf_mean", "conf_count")
#: a 2-rank run here takes under a minute; a hung rendezvous or collective ends the test
TIMEOUT_S = 300


def run_ok(cmd, env):
    """Run ``cmd`` (torchrun and its 2 processes, in a session of their own) and fail with
    its last lines if it fails; after ``TIMEOUT_S`` the whole session is killed."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:8])} ... still running after {TIMEOUT_S} s:\n{out[-3000:]}")
    tail = "\n".join(out.splitlines()[-30:])
    assert proc.returncode == 0, f"{' '.join(cmd[:8])} ... exited {proc.returncode}:\n{tail}"


@pytest.fixture(scope="module")
def two_ranks(toy_data, tmp_path_factory):
    """A 24-epoch PASS run on 2 ranks; each rank records its epoch starts and final state
    (tests/dist_probe.py). Returns (save dir, [rank 0 record, rank 1 record])."""
    out = tmp_path_factory.mktemp("two_ranks")
    args = [toy_data, "--user-dir", USER_DIR, "--save-dir", str(out / "save"), *RUN]
    env = dict(worker_env(os.environ, threads=1), PASS_PROBE_DIR=str(out))
    run_ok(torchrun_command(2, args, entry=[PROBE]), env)
    return str(out / "save"), [load_state(out / f"rank{r}.pt") for r in (0, 1)]


def test_two_ranks_end_with_exactly_k_binary_gates(two_ranks):
    save, ranks = two_ranks
    for name, state in [("checkpoint_last.pt", load_state(os.path.join(save, "checkpoint_last.pt"))["model"]),
                        ("rank 0", ranks[0]["state"]), ("rank 1", ranks[1]["state"])]:
        report = gate_report(state)
        assert (report["open"], report["nonbinary"], report["closed"]) == (K, 0, 24 - K), name


def test_both_ranks_reopen_the_same_gates_from_the_all_reduced_confidences(two_ranks):
    """At every epoch start with reopening, both ranks hold the same gates, compute the same
    probabilities, draw with the run's seed and mark the same gates; the probabilities are
    those of the confidences of both ranks' passes together (count-weighted means of each
    rank's own statistics), which differ from either rank's own."""
    epochs = [r["epochs"] for r in two_ranks[1]]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(2, REOPEN_UNTIL + 1))
    local_differ, closed_seen, reopened = False, 0, 0
    for epoch in range(2, REOPEN_UNTIL + 1):
        a, b = epochs[0][epoch], epochs[1][epoch]
        for key in ("log_alpha", "probabilities", "chosen", "pending"):
            assert torch.equal(a[key], b[key]), f"epoch {epoch}: the ranks' {key} differ"
        assert a["seed"] == b["seed"] == SEED, f"epoch {epoch}: the ranks draw with seeds {a['seed']}, {b['seed']}"
        counts = (a["conf_count"] + b["conf_count"]).float().unsqueeze(-1)
        both = (a["conf_mean"] * a["conf_count"].unsqueeze(-1) + b["conf_mean"] * b["conf_count"].unsqueeze(-1))
        closed = a["log_alpha"] <= CLIP_MIN
        expected = reopen_probabilities((both / counts).flatten(), closed, epoch, REOPEN_DECAY)
        assert torch.allclose(a["probabilities"], expected, atol=1e-6), \
            f"epoch {epoch}: not the probabilities of the all-reduced confidences"
        assert torch.equal(a["chosen"], sample_reopen(expected, SEED, epoch)), f"epoch {epoch}"
        assert torch.equal(a["pending"], a["chosen"]), f"epoch {epoch}"
        local_differ |= not torch.allclose(a["conf_mean"], b["conf_mean"])
        closed_seen += int(closed.sum())
        reopened += int(a["chosen"].sum())
    assert local_differ, "the ranks' own confidences never differed: the all-reduce was not tested"
    assert closed_seen and reopened, f"{closed_seen} closed gates and {reopened} reopened: reopening was not tested"


def test_gates_and_weights_are_identical_across_ranks(two_ranks):
    save, ranks = two_ranks
    saved = load_state(os.path.join(save, "checkpoint_last.pt"))["model"]
    first, second = ranks[0]["state"], ranks[1]["state"]
    assert first.keys() == second.keys()
    shared = [k for k in first if k.rsplit(".", 1)[-1] not in RANK_LOCAL]
    assert any(k.endswith("gate.log_alpha") for k in shared) and "pass_lambda_steps" in shared
    for key in shared:
        assert torch.equal(first[key], second[key]), f"{key} differs between the ranks"
        assert torch.equal(first[key], saved[key]), f"{key}: rank 0's checkpoint is not its final model"


# ---- the regulariser's gradient: 2 ranks against 1 process with --update-freq 2 -----------------
#: no dropout, gates without noise at log_alpha 5: every gate is exactly 1 (its clamp saturated),
#: so the translation loss gives log_alpha no gradient and the gate gradient is the
#: regulariser's alone (lambda 0.1 x dR/dlog_alpha / the update's target tokens, the same for
#: all 24 gates)
ONE_UPDATE = [*TINY_MODEL, *TRAIN_COMMON, *PASS_CRITERION, "--pass-target-heads", str(K), "--max-tokens", "750",
              "--dropout", "0", "--pass-gate-noise", "none", "--pass-gate-init", "5", "--max-update", "1"]


def first_gradients(save_dir):
    """The gradients of the run's one update, as fairseq handed them to the optimizer (all-
    reduced, divided by the update's sample size), from Adam's first moment (1 - beta1) g:
    (gate gradients, every parameter's gradient in optimizer order)."""
    state = load_state(os.path.join(save_dir, "checkpoint_last.pt"))["last_optimizer_state"]
    grads = {i: s["exp_avg"] / (1 - 0.9) for i, s in state["state"].items()}
    groups = state["param_groups"]
    assert len(groups) == 2 and all(s["step"] == 1 for s in state["state"].values())
    return torch.cat([grads[i] for i in groups[1]["params"]]), [grads[i] for g in groups for i in g["params"]]


def test_regulariser_gradient_matches_one_process_with_update_freq_2(toy_data, tmp_path):
    """fairseq shards an epoch's batches by index (rank r gets batches r, r + 2, ...), and
    --update-freq 2 puts batches 0 and 1 in the first update: the same two batches as the
    first update of 2 ranks. The regulariser, added to every micro-batch's loss, must count
    once per update either way (each micro-batch adds R / (update_freq x world size))."""
    args = [toy_data, "--user-dir", USER_DIR, *ONE_UPDATE]
    single = train(toy_data, tmp_path / "single", *ONE_UPDATE, "--update-freq", "2")
    env = worker_env(os.environ, threads=1)
    run_ok([sys.executable, *LAUNCHER, "--nproc", "2", "--threads", "1", "--", *args, "--save-dir",
            str(tmp_path / "ranks")], env)
    gates_1, all_1 = first_gradients(single)
    gates_2, all_2 = first_gradients(tmp_path / "ranks")
    assert gates_1.numel() == 24 and bool((gates_1 > 0).all()) and torch.allclose(gates_1, gates_1[0].expand(24))
    assert torch.allclose(gates_2, gates_1, rtol=1e-5, atol=0), \
        f"gate gradient: 2 ranks {gates_2[0]:.6g}, 1 process {gates_1[0]:.6g}"
    # the same batches: every parameter's gradient agrees (summation order aside)
    for i, (g1, g2) in enumerate(zip(all_1, all_2)):
        assert (g1 - g2).abs().max() <= 1e-4 * g1.abs().max() + 1e-12, f"parameter {i}: not the same batches"


# ---- gate noise: each rank its own ----------------------------------------------------------------
def test_each_rank_draws_its_own_gate_noise(two_ranks):
    """fairseq seeds every rank alike (seed + update number), yet the ranks' gate draws differ
    (as a single process draws anew for each micro-batch): each keeps its own row of a draw
    for all ranks (pass_fairseq.gates.worker_uniform)."""
    first = [r["first_gate_draw"] for r in two_ranks[1]]
    assert first[0].shape == (4,) and not torch.equal(first[0], first[1]), "both ranks drew the same gates"


def test_one_process_draws_as_torch_rand():
    torch.manual_seed(0)
    alone = worker_uniform((6,))
    torch.manual_seed(0)
    assert torch.equal(alone, torch.rand(6))


# ---- one-line errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--nproc", "2", "--", "data", "--distributed-world-size", "4"], "--distributed-world-size: set by the"),
    (["--nproc", "2", "--", "data", "--ddp-backend=pytorch_ddp"], "--ddp-backend: set by the"),
    (["--nproc", "2"], "no fairseq-train arguments"),
    (["--nproc", "0", "--", "data"], "--nproc and --threads must be at least 1"),
])
def test_launcher_errors_are_one_line(capsys, argv, message):
    from pass_fairseq.cli.train_distributed import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1, err


def test_rank_entry_outside_torchrun_is_a_one_line_error():
    with pytest.raises(LaunchError, match="start this module with torchrun"):
        train_rank(["data"], environ={})
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run([sys.executable, "-m", "pass_fairseq.distributed", "data"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "start this module with torchrun" in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
