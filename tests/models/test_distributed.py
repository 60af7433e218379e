"""`train-teacher` and `distill` under torchrun: two CPU processes (gloo) on 127.0.0.1.

Every run goes through `ddp_probe.py`, which calls the `edgelstm` CLI (or `fit`) in the
launched process and saves what each rank's `fit` calls ended with, so the tests compare the
ranks' weights with each other and with the checkpoint rank 0 saved.

Why a two-process run is compared with one process at twice the batch: DDP averages the ranks'
gradients, so two ranks at batch b step with the mean gradient of 2b windows, the same as one
process at batch 2b, but DistributedSampler deals the windows out in another order (its own
permutation, then every other window to each rank), so the batches hold other windows. (Both
runs use train.lr as it is: train.lr_scaling keeps its default, `none`.)

- When one batch holds the whole training split (`fit` on 256 synthetic windows: one process
  at batch 256, two at 128) the order cannot matter: the runs differ only by float32 rounding
  (sums over 256 windows against two sums over 128, all-reduced). Measured: weights within
  1.0e-6, losses within 2e-7 after 3 epochs. Asserted: weights within 1e-4, losses within
  1e-5 relative, accuracies within one window.
- With several batches per epoch (one process at 64, two at 32, 3 epochs) the two-process run
  is as far from the one-process run as a one-process run with another data order is. Measured
  over order seeds 1-3 against seed 0 (same initial weights): losses up to 0.012 apart,
  accuracies up to 0.083 (8 of 96 validation windows); two processes against seed 0: losses
  within 0.008, accuracies within 0.052. Asserted: losses within 0.02, accuracies within 0.1.
- The teacher through `edgelstm train-teacher` (batch 128 against 2 x 64, 2 epochs, class
  weights, learning fast at lr 0.01 on 666 windows): measured train loss within 0.007, val loss
  within 0.057, accuracies within 0.026, test macro-F1 within 0.054. Asserted with the margins
  in TEACHER_TOLERANCE: a sanity check; the tight check is the full-batch one.

The ranks themselves end with identical weights (DDP replicas; measured difference 0.0), and
that is asserted exactly. NCCL on CUDA and real multi-host runs are not tested here: the two
"nodes" of the last test are two torchrun launchers on this host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from edge_lstm.local_broker import free_port
from tests.conftest import REPO, write_config

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend",
)

PROBE = Path(__file__).with_name("ddp_probe.py")
TIMEOUT_S = 150  # per launch; a run takes 5-20 s on two busy cores
DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TEACHER_FILES = {"model.pt", "model.json", "metrics.json", "training_curve.png"}
STUDENT_FILES = {"model.pt", "model.json", "metrics.json", "training_curve.png"}
CACHE_FILES = {"teacher_logits.npy", "teacher_logits.json"}
TABLE_FILES = {"comparison.json", "comparison.md"}
SEARCH_FILES = {"search/search.json", "search/search.md", "search/pareto.png"}
TEACHER_TOLERANCE = {"train_loss": 0.05, "train_acc": 0.06, "val_loss": 0.15, "val_acc": 0.08}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo on the loopback interface, never the LAN
    return env


def _torchrun(*launcher: str) -> list[str]:
    """`torchrun LAUNCHER... ddp_probe.py` (torchrun is `python -m torch.distributed.run`)."""
    return [sys.executable, "-m", "torch.distributed.run", *launcher, str(PROBE)]


def _one_node(nproc: int = 2) -> list[str]:
    return _torchrun(
        "--nnodes", "1", "--nproc_per_node", str(nproc), "--rdzv_backend", "c10d",
        "--rdzv_endpoint", f"127.0.0.1:{free_port()}",
    )  # fmt: skip


def _start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """Starts `cmd` in `cwd`, its stdout and stderr going to cwd/../console.log (a file, not a
    pipe: a launcher waiting on a full pipe would stall the other ranks at a collective)."""
    cwd.mkdir(parents=True, exist_ok=True)
    with open(cwd.parent / "console.log", "w") as log:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout ends torchrun and workers
        )


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _finish(procs: list[subprocess.Popen], cwds: list[Path], deadline: float) -> list[str]:
    """Waits for every process until `deadline`; their console output. Whatever fails or runs
    late, none is left running."""
    try:
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{proc.args} ran past {TIMEOUT_S} s")
    finally:
        for proc in procs:
            _kill(proc)
    outputs = [(cwd.parent / "console.log").read_text() for cwd in cwds]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{out[-6000:]}"
    return outputs


def _run(cmd: list[str], cwd: Path) -> tuple[str, float]:
    """Runs `cmd` in `cwd`; returns its output (stdout and stderr) and its wall time."""
    started = time.monotonic()
    out = _finish([_start(cmd, cwd)], [cwd], started + TIMEOUT_S)[0]
    return out, time.monotonic() - started


def _records(probe: Path) -> dict[int, list[dict]]:
    """rank -> what its `fit` calls ended with, in call order."""
    by_rank: dict[int, list[dict]] = {}
    for path in sorted(probe.glob("rank*-*.pt")):
        record = torch.load(path, weights_only=True)
        by_rank.setdefault(record["rank"], []).append(record)
    return by_rank


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def _saved(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _history_gaps(a: list[dict], b: list[dict]) -> dict[str, float]:
    assert len(a) == len(b)
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    return {k: max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True)) for k in keys}


class Runs:
    """Output folders, per-rank records and console output of the launches of a fixture."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config: Path | None = None  # the config of the launches, where they share one
        self.seconds: dict[str, float] = {}
        self.output: dict[str, str] = {}

    def launch(self, name: str, cmd: list[str], *args: str) -> None:
        out, seconds = _run([*cmd, str(self.probe(name)), *args], self.cwd(name))
        self.output[name], self.seconds[name] = out, seconds

    def probe(self, name: str) -> Path:
        return self.root / name / "probe"

    def cwd(self, name: str) -> Path:
        return self.root / name / "cwd"

    def out(self, name: str) -> Path:
        return self.root / name / "out"


@pytest.fixture(scope="module")
def teacher_runs(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The teacher trained by two processes at batch 64 and by one at batch 128, 2 epochs."""
    runs = Runs(tmp_path_factory.mktemp("ddp-teacher"))
    for name, batch in (("two", 64), ("one", 128)):
        config = write_config(
            runs.root / f"{name}.yaml", tiny_data, train={"epochs": 2, "batch_size": batch}
        )
        cmd = _one_node() if name == "two" else [sys.executable, str(PROBE)]
        args = ("cli", "train-teacher", "--config", str(config), "--out", str(runs.out(name)))
        runs.launch(name, cmd, *args)
    return runs


def test_train_teacher_on_two_ranks_writes_one_set_of_files(teacher_runs: Runs) -> None:
    two, one = teacher_runs.out("two"), teacher_runs.out("one")
    assert _tree(two) >= TEACHER_FILES
    assert _tree(two) == _tree(one)  # nothing per rank, nothing a single process lacks
    assert not any(teacher_runs.cwd("two").iterdir())  # no leftovers where torchrun ran
    records = _records(teacher_runs.probe("two"))
    assert sorted(records) == [0, 1] and all(len(r) == 1 for r in records.values())
    assert records[1][0]["world_size"] == 2 and _records(teacher_runs.probe("one"))[0]
    printed = teacher_runs.output["two"].splitlines()
    assert sum(line.startswith("teacher: test macro-F1") for line in printed) == 1


def test_train_teacher_ranks_end_with_the_weights_rank_0_saved(teacher_runs: Runs) -> None:
    records = _records(teacher_runs.probe("two"))
    rank0, rank1 = records[0][0]["state"], records[1][0]["state"]
    print(f"teacher: max weight difference across ranks {_max_diff(rank0, rank1):.3g}")
    assert _max_diff(rank0, rank1) == 0.0
    assert _max_diff(_saved(teacher_runs.out("two")), rank0) == 0.0
    histories = [[{**e, "seconds": None} for e in r[0]["history"]] for r in records.values()]
    assert histories[0] == histories[1]  # the same (all-reduced) metrics on every rank


def test_train_teacher_metrics_near_one_process_at_twice_the_batch(teacher_runs: Runs) -> None:
    two = _records(teacher_runs.probe("two"))[0][0]
    one = _records(teacher_runs.probe("one"))[0][0]
    gaps = _history_gaps(two["history"], one["history"])
    f1 = [
        json.loads((teacher_runs.out(n) / "metrics.json").read_text())["teacher"]["macro_f1"]
        for n in ("two", "one")
    ]
    print(f"teacher 2x64 vs 1x128: {gaps}, test macro-F1 {f1[0]:.4f} vs {f1[1]:.4f}")
    print(f"seconds: {teacher_runs.seconds}")
    for key, tolerance in TEACHER_TOLERANCE.items():
        assert gaps[key] <= tolerance, (key, gaps)
    assert abs(f1[0] - f1[1]) <= 0.15


def _fit_runs(root: Path, batch: int, epochs: int) -> tuple[dict, dict, dict]:
    """Rank 0 and rank 1 of two processes at `batch`, and one process at 2 x `batch`."""
    runs = Runs(root)
    runs.launch("two", _one_node(), "fit", str(batch), str(epochs))
    runs.launch("one", [sys.executable, str(PROBE)], "fit", str(2 * batch), str(epochs))
    two, one = _records(runs.probe("two")), _records(runs.probe("one"))
    print(f"seconds: {runs.seconds}")
    return two[0][0], two[1][0], one[0][0]


def test_fit_full_batch_on_two_ranks_equals_one_process(tmp_path: Path) -> None:
    rank0, rank1, one = _fit_runs(tmp_path, batch=128, epochs=3)  # 256 windows: one batch
    assert _max_diff(rank0["state"], rank1["state"]) == 0.0
    weights = _max_diff(rank0["state"], one["state"])
    gaps = _history_gaps(rank0["history"], one["history"])
    print(f"full batch 2x128 vs 1x256: weights {weights:.3g}, {gaps}")
    assert weights <= 1e-4
    for two_epoch, one_epoch in zip(rank0["history"], one["history"], strict=True):
        for key in ("train_loss", "val_loss"):
            assert two_epoch[key] == pytest.approx(one_epoch[key], rel=1e-5), key
        for key in ("train_acc", "val_acc"):  # at most one window decided otherwise
            assert abs(two_epoch[key] - one_epoch[key]) <= 1 / 96 + 1e-9, key


def test_fit_minibatches_on_two_ranks_near_one_process(tmp_path: Path) -> None:
    rank0, rank1, one = _fit_runs(tmp_path, batch=32, epochs=3)  # 4 steps an epoch
    assert _max_diff(rank0["state"], rank1["state"]) == 0.0
    gaps = _history_gaps(rank0["history"], one["history"])
    print(f"mini-batch 2x32 vs 1x64: weights {_max_diff(rank0['state'], one['state']):.3g}, {gaps}")
    assert gaps["train_loss"] <= 0.02 and gaps["val_loss"] <= 0.02, gaps
    assert gaps["train_acc"] <= 0.1 and gaps["val_acc"] <= 0.1, gaps


@pytest.fixture(scope="module")
def distill_runs(teacher_runs: Runs, tiny_data: Path) -> Runs:
    """`distill --search` (with the hard-label control) by two processes, from the teacher the
    two processes trained; the probe cuts the search grid to two candidates."""
    runs = Runs(teacher_runs.root / "distill")
    runs.root.mkdir()
    config = write_config(runs.root / "distill.yaml", tiny_data, distill={"baseline": True})
    teacher = teacher_runs.out("two")
    args = ("--teacher", str(teacher), "--config", str(config), "--out", str(runs.out("two")))
    runs.launch("two", _one_node(), "cli", "distill", *args, "--search")
    runs.config = config
    return runs


def test_distill_with_search_on_two_ranks(distill_runs: Runs) -> None:
    out = distill_runs.out("two")
    baseline = {f"baseline/{name}" for name in STUDENT_FILES}
    assert _tree(out) == STUDENT_FILES | CACHE_FILES | TABLE_FILES | baseline | SEARCH_FILES
    assert not any(distill_runs.cwd("two").iterdir())
    printed = distill_runs.output["two"].splitlines()
    assert sum(line.startswith("wrote model.pt") for line in printed) == 1
    assert sum(line.startswith("rank 1 of 2: trained in step") for line in printed) == 1

    records = _records(distill_runs.probe("two"))
    descs = ["distill", "hard labels", "search 1/2 student-gru4", "search 2/2 student-lstm4"]
    assert [r["desc"] for r in records[0]] == [r["desc"] for r in records[1]] == descs
    diffs = [_max_diff(a["state"], b["state"]) for a, b in zip(*records.values(), strict=True)]
    print(f"distill: max weight difference across ranks per fit call {diffs}")
    print(f"seconds: {distill_runs.seconds}")
    assert diffs == [0.0] * 4
    assert _max_diff(_saved(out), records[0][0]["state"]) == 0.0
    assert _max_diff(_saved(out / "baseline"), records[0][1]["state"]) == 0.0

    cached = _sha256(np.load(out / "teacher_logits.npy"))  # what rank 1 received is rank 0's
    for rank in (0, 1):
        softs = [r["soft_sha256"] for r in records[rank]]
        assert softs == [cached, None, cached, cached]

    search = json.loads((out / "search" / "search.json").read_text())
    assert [c["name"] for c in search["candidates"]] == ["student-gru4", "student-lstm4"]
    assert all(c["latency_ms_b1"] > 0 for c in search["candidates"])  # rank 0 timed them
    table = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in table["rows"]] == [
        "teacher",
        "student-gru8",
        "student-gru8-hard",
        "gbm-window-stats",
    ]


def test_distill_on_two_nodes_needs_no_shared_file_system(
    distill_runs: Runs, teacher_runs: Runs
) -> None:
    """Two torchrun launchers (`--nnodes 2`, c10d rendezvous on 127.0.0.1), one process each,
    each with its own --out seeded with the logits cache: the node of rank 0 reuses its cache
    and writes; the other node receives the logits and leaves its folder as it was."""
    root = distill_runs.root / "nodes"
    endpoint = f"127.0.0.1:{free_port()}"
    launcher = _torchrun(
        "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", endpoint, "--rdzv_id", "edgelstm-test",
    )  # fmt: skip
    seeded = {}
    cwds = [root / f"node{node}" / "cwd" for node in (0, 1)]
    args = ("--teacher", str(teacher_runs.out("two")), "--config", str(distill_runs.config))
    for cwd in cwds:
        (cwd.parent / "out").mkdir(parents=True)
        for name in CACHE_FILES:
            shutil.copy(distill_runs.out("two") / name, cwd.parent / "out" / name)
            seeded[name] = (cwd.parent / "out" / name).read_bytes()
    started = time.monotonic()
    procs = []
    for cwd in cwds:
        node = cwd.parent
        cmd = [*launcher, str(node / "probe"), "cli", "distill", *args, "--out", str(node / "out")]
        procs.append(_start([*cmd, "--no-baseline"], cwd))
    outputs = _finish(procs, cwds, started + TIMEOUT_S)
    print(f"two nodes: {time.monotonic() - started:.1f} s")
    for cwd in cwds:
        assert not any(cwd.iterdir())

    ranks = [sorted(_records(root / f"node{n}" / "probe")) for n in (0, 1)]
    assert sorted(ranks) == [[0], [1]]  # c10d gives rank 0 to either launcher
    main, other = (0, 1) if ranks[0] == [0] else (1, 0)
    main_out, other_out = root / f"node{main}" / "out", root / f"node{other}" / "out"
    assert _tree(main_out) == STUDENT_FILES | CACHE_FILES | TABLE_FILES
    assert _tree(other_out) == CACHE_FILES
    for folder in (main_out, other_out):
        assert all((folder / name).read_bytes() == seeded[name] for name in CACHE_FILES)
    assert "reusing cached teacher logits" in outputs[main]
    rank0 = _records(root / f"node{main}" / "probe")[0][0]
    rank1 = _records(root / f"node{other}" / "probe")[1][0]
    cached = _sha256(np.load(main_out / "teacher_logits.npy"))
    assert rank0["soft_sha256"] == rank1["soft_sha256"] == cached
    assert _max_diff(rank0["state"], rank1["state"]) == 0.0
    assert _max_diff(_saved(main_out), rank0["state"]) == 0.0
