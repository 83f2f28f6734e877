"""Multi-process training on torch.distributed (gloo on CPU), with real processes.

Every run is tests/scripts/distributed_run.py, launched the ways users launch it: torchrun,
`devices=2` from plain python, ddp_spawn, a two-node torchrun rendezvous on 127.0.0.1, and SLURM's
variables. Each rank writes what it saw to JSON; the tests compare ranks with each other and with
a single-process run over the same global batches.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, TensorDataset

import fulmen as pl
from fulmen.checkpoint import load_checkpoint
from fulmen.dataloading import ShardedSampler, prepare_loader
from fulmen.errors import MisconfigurationException
from fulmen.strategies import DDPStrategy, FSDPStrategy
from fulmen.plugins.environments import LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment
from fulmen.strategies.environment import check_environment, detect_environment, first_host, free_port

SCRIPT = Path(__file__).parent / "scripts" / "distributed_run.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
TIMEOUT = 120  # seconds for one launch: far above a normal run (~5 s), far below CI's limit


def _free_port_in(candidates: range) -> int:
    """The first port of `candidates` nobody listens on (`free_port` lets the kernel pick any)."""
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {candidates}")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "LOCAL_RANK", "NODE_RANK"))}
    env.update(FULMEN_DOCTOR="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1", **extra)
    return env


def _launch_together(commands: list[tuple[list[str], dict[str, str]]], logs: Path) -> None:
    """Start every command at once (they rendezvous with each other) and wait for all to succeed.
    Output goes to files: a pipe nobody reads yet could fill up and stall its process."""
    procs = []
    for i, (cmd, env) in enumerate(commands):
        log = open(logs / f"launch{i}.log", "w")  # noqa: SIM115 (closed below)
        procs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        proc.wait(timeout=TIMEOUT)
        log.close()
        assert proc.returncode == 0, Path(log.name).read_text()[-4000:]


def _launch(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env or _clean_env(), capture_output=True, text=True, timeout=TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def _torchrun(out: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    return _launch([*TORCHRUN, f"--nproc_per_node={nproc}", f"--master_port={free_port()}", str(SCRIPT),
                    "--out", str(out), *args])


def _ranks(out: Path, n: int = 2) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]


def _single_process(out: Path, *args: str) -> dict:
    """The same script in this process, one device (the reference for a 2-rank run with half the batch)."""
    spec = importlib.util.spec_from_file_location("distributed_run", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--out", str(out), "--strategy", "auto", "--devices", "1", *args])
    return json.loads((out / "rank0.json").read_text())


def _assert_params_close(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(torch.tensor(a[key]), torch.tensor(b[key]), atol=atol), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """One process, global batch 8, two epochs: what two ranks with batch 4 each must reproduce."""
    return _single_process(tmp_path_factory.mktemp("single"), "--batch-size", "8")


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("torchrun")
    _torchrun(out)
    return out, _ranks(out)


# --- DDP under torchrun -----------------------------------------------------------------------
def test_torchrun_ranks_see_disjoint_shards_and_end_with_the_single_process_weights(torchrun_run, reference):
    out, (r0, r1) = torchrun_run
    assert (r0["rank"], r1["rank"], r0["world_size"], r0["strategy"]) == (0, 1, 2, "ddp")
    epoch_batches = 64 // (4 * 2)
    for epoch in range(2):
        mine = [i for batch in r0["seen"][epoch * epoch_batches:(epoch + 1) * epoch_batches] for i in batch]
        theirs = [i for batch in r1["seen"][epoch * epoch_batches:(epoch + 1) * epoch_batches] for i in batch]
        assert not set(mine) & set(theirs)
        assert sorted(mine + theirs) == list(range(64))
    assert r0["params"] == r1["params"]  # DDP: bit-identical after every step
    _assert_params_close(r0["params"], reference["params"])
    assert r0["global_step"] == r1["global_step"] == reference["global_step"] == 16


def test_sync_dist_reduces_epoch_values_across_ranks(torchrun_run, reference):
    _, (r0, r1) = torchrun_run
    assert r0["callback_metrics"]["rank_value"] == r1["callback_metrics"]["rank_value"] == 0.5  # mean of 0 and 1
    assert r0["callback_metrics"]["rank_sum"] == r1["callback_metrics"]["rank_sum"] == 8 * 1 + 8 * 2  # 8 steps each
    # A step value with sync_dist=True: reduced when logged (0 on rank 0, 1 on rank 1 unreduced).
    assert r0["callback_metrics"]["rank_step"] == r1["callback_metrics"]["rank_step"] == 0.5
    for key in ("train_loss_epoch", "val_loss"):
        assert r0["callback_metrics"][key] == r1["callback_metrics"][key]
        assert r0["callback_metrics"][key] == pytest.approx(reference["callback_metrics"][key], rel=1e-4)


def test_checkpoints_and_logs_are_written_once_by_rank_zero(torchrun_run):
    out, (r0, r1) = torchrun_run
    assert r0["checkpoints"] == r1["checkpoints"] == ["epoch=0-step=8.ckpt", "epoch=1-step=16.ckpt"]
    assert r0["best_model_path"] == r1["best_model_path"] == str(out / "ckpt" / "epoch=1-step=16.ckpt")
    saved = torch.load(r0["best_model_path"], weights_only=True)
    assert {k: v.flatten().tolist() for k, v in saved["state_dict"].items()} == r0["params"]
    assert [p.name for p in (out / "logs").iterdir()] == ["version_0"]  # one logger run, not one per rank
    assert r0["log_dir"] == r1["log_dir"] == str(out / "logs" / "version_0")
    assert (r0["progress_bar_enabled"], r1["progress_bar_enabled"]) == (True, False)
    rows = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    step_col, loss_col = header.index("step"), header.index("train_loss_step")
    logged_steps = [int(r.split(",")[step_col]) for r in rows[1:] if r.split(",")[loss_col]]
    assert logged_steps == list(range(16))  # each step once: rank 1 wrote nothing
    rank_col = header.index("rank_step")
    assert {float(r.split(",")[rank_col]) for r in rows[1:] if r.split(",")[rank_col]} == {0.5}  # all-ranks mean


def test_predict_covers_every_sample_exactly_once(torchrun_run):
    _, ranks = torchrun_run
    indices = [i for r in ranks for batch in r["predictions"] for i in batch["idx"]]
    assert sorted(indices) == list(range(64))  # no padding for predict, unlike training and validation


# --- other launchers ---------------------------------------------------------------------------
def test_devices_two_from_plain_python_starts_the_second_process(tmp_path, torchrun_run):
    _launch([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--devices", "2"])
    r0, r1 = _ranks(tmp_path)
    assert r0["pid"] != r1["pid"] and (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["params"] == r1["params"] == torchrun_run[1][0]["params"]


def test_ddp_spawn_brings_rank_zero_results_back(tmp_path, torchrun_run):
    _launch([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--devices", "2", "--strategy", "ddp_spawn"])
    (r0,) = _ranks(tmp_path, 1)  # only the calling process runs the script past fit
    assert r0["strategy"] == "ddp_spawn" and r0["global_step"] == 16
    assert r0["params"] == torchrun_run[1][0]["params"]  # the spawned ranks' weights, loaded back
    assert r0["best_model_path"].endswith("epoch=1-step=16.ckpt")
    assert r0["callback_metrics"]["rank_value"] == 0.5


def test_two_nodes_rendezvous_on_localhost(tmp_path, torchrun_run):
    port = free_port()
    _launch_together([
        ([*TORCHRUN, "--nnodes=2", f"--node_rank={node}", "--nproc_per_node=1", "--master_addr=127.0.0.1",
          f"--master_port={port}", str(SCRIPT), "--out", str(tmp_path), "--num-nodes", "2"], _clean_env())
        for node in (0, 1)
    ], tmp_path)
    r0, r1 = _ranks(tmp_path)
    assert (r0["node_rank"], r1["node_rank"], r0["local_rank"], r1["local_rank"]) == (0, 1, 0, 0)
    assert r0["params"] == r1["params"] == torchrun_run[1][0]["params"]


def test_slurm_variables_place_each_task(tmp_path, torchrun_run):
    port = _free_port_in(range(15000, 25000))  # SLURM's port is 15000 + the job id's last four digits
    slurm = dict(SLURM_NTASKS="2", SLURM_NODEID="0", SLURM_JOB_NODELIST="127.0.0.1", SLURM_JOB_ID=str(port - 15000),
                 SLURM_JOB_NAME="train", SLURM_NTASKS_PER_NODE="2")
    _launch_together([
        ([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--devices", "2"],
         _clean_env(SLURM_PROCID=str(r), SLURM_LOCALID=str(r), **slurm))
        for r in (0, 1)
    ], tmp_path)
    r0, r1 = _ranks(tmp_path)
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["params"] == r1["params"] == torchrun_run[1][0]["params"]


def test_slurm_and_torchrun_detection(monkeypatch):
    """One detection for the whole package: the environment classes' own detect(), in Lightning's order."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "MASTER_", "TORCHELASTIC_")) or name in (
                "RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK"):
            monkeypatch.delenv(name)
    for name, value in dict(SLURM_NTASKS="8", SLURM_NTASKS_PER_NODE="4", SLURM_PROCID="5", SLURM_LOCALID="1",
                            SLURM_NODEID="1", SLURM_JOB_NUM_NODES="2", SLURM_JOB_NODELIST="gpu[007-008]",
                            SLURM_JOB_ID="4821337").items():
        monkeypatch.setenv(name, value)
    env = detect_environment()
    assert isinstance(env, SLURMEnvironment)
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (8, 5, 1, 1)
    assert (env.main_address, env.main_port) == ("gpu007", 15000 + 1337)
    check_environment(env, devices=4, num_nodes=2)
    with pytest.raises(ValueError, match=r"SLURM runs 4 tasks per node, but the Trainer asks for 2 devices"):
        check_environment(env, devices=2, num_nodes=2)
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: not a managed job
    assert isinstance(detect_environment(), LightningEnvironment)
    # torchrun's variables win over SLURM's: torchrun inside an allocation starts the processes.
    for name, value in dict(TORCHELASTIC_RUN_ID="r1", RANK="3", GROUP_RANK="1", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2",
                            WORLD_SIZE="4", MASTER_ADDR="10.0.0.7", MASTER_PORT="29400").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_JOB_NAME")
    env = detect_environment()
    assert isinstance(env, TorchElasticEnvironment) and env.creates_processes_externally
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (4, 3, 1, 1)
    assert (env.main_address, env.main_port) == ("10.0.0.7", 29400)
    check_environment(env, devices=2, num_nodes=2)
    with pytest.raises(ValueError, match=r"torchrun started 4 processes, but the Trainer asks for 8"):
        check_environment(env, devices=4, num_nodes=2)
    with pytest.raises(ValueError, match=r"torchrun started 2 processes on this node.*devices=4"):
        check_environment(env, devices=4, num_nodes=1)


@pytest.mark.parametrize("nodelist, host", [
    ("node1", "node1"), ("gpu[003-005,007],cpu1", "gpu003"), ("a-b[10,12]", "a-b10"), ("x1,x2", "x1"),
])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


# --- every rank agrees -------------------------------------------------------------------------
def test_early_stopping_on_one_rank_stops_every_rank_at_the_same_epoch(tmp_path):
    _torchrun(tmp_path, "--stop-rank", "1", "--epochs", "5")
    r0, r1 = _ranks(tmp_path)
    # Rank 1's metric stops improving after epoch 0, rank 0's keeps improving: both stop after epoch 1.
    assert r0["epochs_run"] == r1["epochs_run"] == 2
    assert r0["global_step"] == r1["global_step"] == 16


def test_should_stop_set_by_one_rank_mid_epoch_stops_both_one_batch_later_when_steps_are_slow(tmp_path):
    # Steps of 30 ms: longer than a vote period, so the ranks vote after every batch.
    _torchrun(tmp_path, "--user-stop-step", "3", "--epochs", "3", "--step-sleep", "0.03")
    r0, r1 = _ranks(tmp_path)
    # The ranks agree one batch after the request (the vote is not waited for within a batch).
    assert r0["global_step"] == r1["global_step"] == 5
    assert r0["params"] == r1["params"]


def test_should_stop_set_by_one_rank_with_fast_steps_stops_both_at_the_same_batch(tmp_path):
    # Fast steps share a vote among many batches: the stop comes at a later vote, at the latest
    # where the epoch's end settles it (8 batches an epoch), on both ranks at the same batch.
    _torchrun(tmp_path, "--user-stop-step", "3", "--epochs", "3")
    r0, r1 = _ranks(tmp_path)
    assert r0["global_step"] == r1["global_step"]
    assert 5 <= r0["global_step"] <= 8
    assert r0["params"] == r1["params"]


@pytest.mark.parametrize("launcher", ["fulmen", "torchrun"])
def test_an_exception_on_one_rank_ends_every_rank(tmp_path, launcher):
    args = ["--out", str(tmp_path), "--fail-rank", "1", "--timeout", "30"]
    if launcher == "fulmen":
        proc = _launch([sys.executable, str(SCRIPT), "--devices", "2", *args], check=False)
        assert "Rank 1 of 2 failed" in proc.stderr and "DistributedFailure" in proc.stderr
    else:
        proc = _launch([*TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", str(SCRIPT), *args], check=False)
    assert proc.returncode != 0  # and it returned at all: no rank was left waiting (TIMEOUT would raise)
    assert "planted failure on rank 1" in proc.stderr
    assert not list(tmp_path.glob("rank*.json"))


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while being read
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_copy_ends_with_rank_zero_even_while_it_waits_in_the_rendezvous(tmp_path):
    # A rendezvous address nobody answers at: both ranks wait in init_process_group (for up to
    # --timeout), where the copy has no connection to rank 0 whose loss it could notice.
    env = _clean_env(MASTER_ADDR="10.255.255.1", MASTER_PORT=str(free_port()))
    rank0 = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--devices", "2", "--timeout", "600"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # the copy appears once rank 0 reaches fit (imports first)
            copies = _children(rank0.pid)
            if copies:
                break
            time.sleep(0.1)
        assert copies, "rank 0 started no copy"
        time.sleep(3)  # let the copy get into its rendezvous too (if it is slower, it finds rank 0 gone)
        assert _alive(copies[0]) and rank0.poll() is None  # both still waiting
    finally:
        rank0.kill()  # SIGKILL: no atexit, no watcher thread, nothing of rank 0 runs any more
        rank0.wait()
    try:
        for _ in range(600):
            if not _alive(copies[0]):
                break
            time.sleep(0.1)
        assert not _alive(copies[0]), "the copy outlived rank 0 (it would wait for the whole --timeout)"
    finally:
        if _alive(copies[0]):
            os.kill(copies[0], signal.SIGKILL)


def test_a_preemption_signal_on_one_rank_saves_once_stops_all_and_resumes_exactly(tmp_path, torchrun_run):
    args = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--devices", "2"]
    proc = _launch([*args, "--preempt-step", "5"], check=False)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "received SIGTERM" in proc.stdout
    saved = torch.load(tmp_path / "ckpt" / "preempted.ckpt", weights_only=True)
    # Noticed after step 5's batch; agreed at a later vote (at the latest the epoch's end, step 8),
    # acted on after the next batch.
    assert 7 <= saved["global_step"] <= 9
    assert not list(tmp_path.glob("rank*.json"))  # neither rank went on training
    _launch([*args, "--resume", "last"])
    r0, r1 = _ranks(tmp_path)
    assert r0["global_step"] == r1["global_step"] == 16
    assert r0["params"] == r1["params"] == torchrun_run[1][0]["params"]  # as if never interrupted


def test_accumulation_syncs_gradients_once_per_window_and_matches_one_process(tmp_path, reference):
    _torchrun(tmp_path, "--batch-size", "2", "--accumulate", "2")
    r0, r1 = _ranks(tmp_path)
    assert r0["params"] == r1["params"]
    _assert_params_close(r0["params"], reference["params"])  # 2 ranks x 2 batches of 2 = one batch of 8
    assert r0["global_step"] == 16 and r0["batches_trained"] == 32
    # Gradients crossed the network once per optimizer step (one bucket: a small model), not once per batch.
    assert r0["synced_buckets"] == r1["synced_buckets"] == 16


# --- FSDP2 ---------------------------------------------------------------------------------------
def test_fsdp_trains_like_ddp_and_its_sharded_checkpoint_resumes_on_one_process(tmp_path, torchrun_run):
    sharded = tmp_path / "fsdp"
    _torchrun(sharded, "--strategy", "fsdp", "--state-dict-type", "sharded", "--epochs", "1")
    r0, r1 = _ranks(sharded)
    assert r0["strategy"] == "fsdp" and r0["params"] == r1["params"]
    ckpt = sharded / "ckpt" / "epoch=0-step=8.ckpt"
    assert ckpt.is_dir() and (ckpt / "meta.pt").is_file() and list(ckpt.glob("*.distcp"))
    # 2 ranks -> 1 process: the second epoch continues exactly where the sharded run stopped.
    resumed = _single_process(tmp_path / "resumed", "--batch-size", "8", "--resume", str(ckpt))
    _assert_params_close(resumed["params"], torchrun_run[1][0]["params"])
    whole = load_checkpoint(ckpt)  # the plain loader reads the directory too, with whole tensors
    assert {k: v.flatten().tolist() for k, v in whole["state_dict"].items()} == r0["params"]
    assert whole["epoch"] == 0 and whole["global_step"] == 8


@pytest.mark.parametrize("empty_init", [False, True])
def test_fsdp_resumes_a_single_process_checkpoint_on_two_ranks(tmp_path, torchrun_run, empty_init):
    first = _single_process(tmp_path / "one", "--batch-size", "8", "--epochs", "1")
    ckpt = tmp_path / "one" / "ckpt" / "epoch=0-step=8.ckpt"
    assert first["global_step"] == 8 and ckpt.is_file()
    out = tmp_path / "two"
    # 1 process -> 2 ranks, full state dict; with empty_init the model is built on the meta device
    # (trainer.init_module(empty_init=True)) and only gets memory, one shard per rank, at set-up.
    _torchrun(out, "--strategy", "fsdp", "--resume", str(ckpt), *(["--empty-init"] if empty_init else []))
    r0, r1 = _ranks(out)
    assert r0["built_on_meta"] == r1["built_on_meta"] == empty_init
    assert r0["global_step"] == 16
    _assert_params_close(r0["params"], torchrun_run[1][0]["params"])
    saved = torch.load(out / "ckpt" / "epoch=1-step=16.ckpt", weights_only=True)  # one ordinary file
    assert isinstance(next(iter(saved["optimizer_states"][0]["state"])), int)  # torch.optim's own format


# --- data sharding, without processes ---------------------------------------------------------
def _trainer_for_two_ranks(tmp_path, **kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(), logger=False, default_root_dir=tmp_path,
                      enable_progress_bar=False, **kwargs)


def test_distributed_sampler_keeps_shuffle_and_drop_last(tmp_path, monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    trainer = _trainer_for_two_ranks(tmp_path)
    data = TensorDataset(torch.arange(10.0))
    shuffled = prepare_loader(trainer, DataLoader(data, batch_size=2, shuffle=True, drop_last=True), train=True)
    assert isinstance(shuffled.sampler, DistributedSampler)
    assert (shuffled.sampler.shuffle, shuffled.sampler.seed, shuffled.drop_last) == (True, 7, True)
    assert (shuffled.sampler.num_replicas, shuffled.sampler.rank) == (2, 0)
    shuffled.sampler.set_epoch(0)
    epoch0 = list(shuffled.sampler)
    shuffled.sampler.set_epoch(1)
    assert list(shuffled.sampler) != epoch0 and len(epoch0) == 5
    plain = prepare_loader(trainer, DataLoader(data, batch_size=2), train=False)
    assert plain.sampler.shuffle is False and list(plain.sampler) == [0, 2, 4, 6, 8]
    off = prepare_loader(
        _trainer_for_two_ranks(tmp_path, use_distributed_sampler=False), DataLoader(data, shuffle=True), train=True)
    assert isinstance(off.sampler, RandomSampler)


def test_sharded_sampler_pads_for_training_but_not_for_predict():
    inner = list(range(5))
    assert [list(ShardedSampler(inner, 2, r)) for r in (0, 1)] == [[0, 2, 4], [1, 3, 0]]
    assert [list(ShardedSampler(inner, 2, r, pad=False)) for r in (0, 1)] == [[0, 2, 4], [1, 3]]
    assert [len(ShardedSampler(inner, 2, r, pad=False)) for r in (0, 1)] == [3, 2]


def test_strategy_objects_reject_bad_options():
    with pytest.raises(MisconfigurationException, match=r"start_method=.*Received: start_method='fork'"):
        DDPStrategy(start_method="fork")
    with pytest.raises(MisconfigurationException, match=r"Received: 'partial'"):
        FSDPStrategy(state_dict_type="partial")


def test_a_sharded_save_killed_mid_way_is_cleaned_up_or_put_back(tmp_path):
    """What save_sharded can leave when killed: a staging directory (removed), or the previous
    checkpoint moved aside as .<name>.old with the new one not in place yet (put back)."""
    ckpt = tmp_path / "ckpt"
    (ckpt / ".epoch=0-step=8.ckpt.x1y2.tmp").mkdir(parents=True)
    (ckpt / ".epoch=0-step=8.ckpt.x1y2.tmp" / "__0_0.distcp").write_bytes(b"partial")
    (ckpt / ".epoch=1-step=16.ckpt.old").mkdir()
    (ckpt / ".epoch=1-step=16.ckpt.old" / "meta.pt").write_bytes(b"previous")
    (ckpt / "epoch=2-step=24.ckpt").mkdir()
    (ckpt / ".epoch=2-step=24.ckpt.old").mkdir()  # the swap finished: the aside copy is dropped
    from fulmen.callbacks import ModelCheckpoint

    callback = ModelCheckpoint(dirpath=ckpt)
    callback.setup(pl.Trainer(logger=False, default_root_dir=tmp_path, callbacks=[callback]), None, "fit")
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch=1-step=16.ckpt", "epoch=2-step=24.ckpt"]
    assert (ckpt / "epoch=1-step=16.ckpt" / "meta.pt").read_bytes() == b"previous"


def test_a_run_after_a_failed_one_uses_collectives_again(tmp_path):
    """`strategy.failing` turns collectives off while a failure is handled (the other ranks may be
    gone); the next run of the same Trainer must turn them back on."""
    from fulmen.demos import BoringModel

    class FailsOnce(BoringModel):
        failed = False

        def training_step(self, batch, batch_idx):
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise RuntimeError("first run fails")
            return super().training_step(batch, batch_idx)

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, max_steps=2, default_root_dir=tmp_path)
    model = FailsOnce()
    with pytest.raises(RuntimeError, match="first run fails"):
        trainer.fit(model)
    assert trainer.strategy.failing
    trainer.fit(model)
    assert not trainer.strategy.failing and trainer.global_step == 2


def test_shuffled_shards_are_disjoint_complete_and_redrawn_each_epoch(tmp_path):
    """shuffle=True under DDP: the DistributedSampler fulmen puts in gets set_epoch every epoch, so
    the order changes between epochs, identically on both ranks (same seed), and a second launch
    draws the same orders."""
    runs = []
    for launch in range(2):
        out = tmp_path / f"launch{launch}"
        assert _torchrun(out, "--shuffle").returncode == 0
        runs.append(_ranks(out))
    (r0, r1), again = runs
    epoch_batches = 64 // (4 * 2)
    orders = []
    for epoch in range(2):
        window = slice(epoch * epoch_batches, (epoch + 1) * epoch_batches)
        mine = [i for batch in r0["seen"][window] for i in batch]
        theirs = [i for batch in r1["seen"][window] for i in batch]
        assert sorted(mine + theirs) == list(range(64))  # disjoint and complete
        orders.append(mine)
    assert orders[0] != orders[1]  # redrawn for epoch 1
    assert orders[0] != sorted(orders[0])  # shuffled at all
    assert [again[0]["seen"], again[1]["seen"]] == [r0["seen"], r1["seen"]]
