"""Real Horovod over Gloo on this machine: horovodrun with 2 and 4 CPU workers."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import mxnet as mx
import numpy as np

from distjob.machine import compute_threads, creation_order
from distjob.model import build_model
from conftest import BIN, ROOT, horovodrun_cmd, rank_process, run, wait_for_path


def shard_rows_by_rank(stdout):
    """{(rank, epoch): [first rows]} from the rank-tagged log lines."""
    found = {}
    shard_line = r"\[rank (\d)/\d\] epoch (\d+): shard of \d+ rows, first rows (\[.*?\])"
    for rank, epoch, rows in re.findall(shard_line, stdout):
        found[int(rank), int(epoch)] = json.loads(rows)
    return found


def timeline_tensor_names(path):
    text = path.read_text().rstrip().rstrip(",")
    events = json.loads(text if text.endswith("]") else text + "]")
    return {e["args"]["name"] for e in events if e.get("name") == "process_name" and "name" in e.get("args", {})}


def test_two_workers_train_disjoint_shards_and_allreduce_only_dense_gradients(tmp_path, test_mode_run):
    timeline = tmp_path / "timeline.json"
    result = run(horovodrun_cmd(2, "--test-mode", "--log-level", "debug", "--output-dir", tmp_path / "out"),
                 env={"HOROVOD_TIMELINE": str(timeline)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shards = shard_rows_by_rank(result.stdout)
    epochs = {epoch for _, epoch in shards}
    assert epochs and all(not set(shards[0, e]) & set(shards[1, e]) for e in epochs)
    # Only rank 0 writes: the same files as a 1-process run, one metrics line per epoch.
    out = tmp_path / "out"
    single_out, _ = test_mode_run
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single_out.iterdir())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(epochs)
    assert "[rank 1/2]" in result.stdout and "[1]<stdout>:test accuracy" not in result.stdout
    # lr scaled by the 2 workers, so it warms up over an epoch: 3040 rows / 2 workers / 16 a step.
    assert "learning rate 0.004 (--lr 0.002 x 2 scaled for the workers), 95 warmup steps" in result.stdout

    # What went through Horovod: broadcasts and allreduces of the trainable parameters only.
    names = timeline_tensor_names(timeline)
    model = build_model(np.zeros((10, 50), np.float32), "attention", 50, mx.cpu(), 64, num_classes=4)
    trainable = [name.split("_", 1)[1] for name in model.trainable_params().keys()]  # drop the block prefix
    broadcast = {n.split("_", 2)[2] for n in names if n.startswith("horovod_broadcast.topicclassifier")}
    allreduced = {n for n in names if n.startswith("horovod_allreduce.")}
    assert broadcast == set(trainable)
    assert not any("embedding" in n for n in names)
    assert len(allreduced) == len(trainable)  # one gradient per trainable parameter, none for the embedding


@pytest.fixture(scope="module")
def four_workers_via_launch_script(tmp_path_factory):
    """launch/run.sh -n 4 started from a directory of the caller's with a relative --output-dir:
    (that directory, the result). One horovodrun for the two tests below."""
    caller = tmp_path_factory.mktemp("caller")
    result = subprocess.run([str(ROOT / "launch" / "run.sh"), "-n", "4", "--cpu", "--output-dir", "out",
                             "--", "--test-mode", "--no-progress", "--log-level", "debug"],
                            cwd=caller, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return caller, result


def test_four_workers_via_launch_script_write_what_one_worker_writes(four_workers_via_launch_script, test_mode_run):
    caller, result = four_workers_via_launch_script
    assert result.stdout.startswith("+ OMP_NUM_THREADS=")  # it shows the command it runs
    assert {rank for rank, _ in shard_rows_by_rank(result.stdout)} == {0, 1, 2, 3}
    # Each worker runs on cores of its own: with more workers than cores, one core each, by rank.
    cores = dict(re.findall(r"\[rank (\d)/4\] world of 4 worker\(s\), training on cpu\(0\), CPU cores ([\d,-]+)",
                            result.stdout))
    if shutil.which("taskset"):
        assert cores == {str(rank): str(rank % os.cpu_count()) for rank in range(4)}, cores
    single_out, _ = test_mode_run
    assert sorted(p.name for p in (caller / "out").iterdir()) == sorted(p.name for p in single_out.iterdir())


def test_launch_script_keeps_the_callers_directory(four_workers_via_launch_script):
    # Relative --output-dir (and data, config, hostfile paths) are the caller's, not the repository's.
    caller, _ = four_workers_via_launch_script
    assert (caller / "out" / "results.json").exists()
    assert not (ROOT / "out").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_launch_script_leaves_each_cpu_worker_a_core_for_its_python_thread(workers):
    """launch/run.sh's shell arithmetic is machine.compute_threads' rule: one worker on
    this host's 2 cores computes on 1 (it used to get 2, and ran at half speed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT")}
    result = subprocess.run([str(ROOT / "launch" / "run.sh"), "-n", str(workers), "--cpu", "--", "--help"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    exported = int(re.match(r"\+ OMP_NUM_THREADS=(\d+) ", result.stdout).group(1))
    assert exported == compute_threads(max(1, len(os.sched_getaffinity(0)) // workers))


def test_killed_worker_fails_the_job_quickly_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "out"
    args = horovodrun_cmd(2, "--test-mode", "--epochs", 1000, "--output-dir", out)
    env = {"HOROVOD_GLOO_TIMEOUT_SECONDS": "30"}
    job = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, **env})
    try:
        wait_for_path(out / "checkpoints" / "last", job, 120)
        worker = rank_process(1, out)
        assert worker is not None, "rank 1 not found"
        worker.send_signal(signal.SIGKILL)
        killed_at = time.time()
        job.wait(timeout=90)  # bounded: raises TimeoutExpired instead of hanging the suite
        assert job.returncode != 0
        assert time.time() - killed_at < 90
    finally:
        if job.poll() is None:
            job.kill()
    last_epoch = json.loads((out / "checkpoints" / (out / "checkpoints" / "last").read_text().strip()
                             / "meta.json").read_text())["epoch"]
    assert last_epoch < 1000
    rerun = run(horovodrun_cmd(2, "--test-mode", "--epochs", last_epoch + 2, "--output-dir", out), env=env)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert f"(epoch {last_epoch})" in rerun.stdout and "resumed from" in rerun.stdout
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-2:] == [last_epoch + 1, last_epoch + 2]


GLOO_THREADS_SCRIPT = """
import json, os, time
import horovod.mxnet as hvd
from distjob.distributed import init_horovod
from distjob.machine import native_threads

before = native_threads()
lowered = list(init_horovod().idle_threads)
hvd.allreduce(__import__("mxnet").nd.ones(3), name="warm").wait_to_read()
time.sleep(0.3)  # idle: Gloo's event loops wait in epoll, Horovod's background thread sleeps
# Where each thread waits, sampled 50 times: a single look can catch a loop thread awake, as
# Horovod's 1 ms cycle wakes Gloo's loops, or runnable at SCHED_IDLE on a busy core.
wchans = {}
for _ in range(50):
    for tid in native_threads():
        try:
            wchans.setdefault(tid, []).append(open(f"/proc/self/task/{tid}/wchan").read())
        except OSError:  # a short-lived thread that has ended
            pass
    time.sleep(0.01)
threads = {}
for tid in native_threads() & set(wchans):  # the threads alive throughout
    try:
        threads[tid] = {"idle": os.sched_getscheduler(tid) == os.SCHED_IDLE,
                        "nice": os.getpriority(os.PRIO_PROCESS, tid), "wchans": wchans[tid],
                        "started_by_init": tid not in before}
    except OSError:
        pass
print("REPORT", json.dumps({"lowered": lowered, "threads": threads}), flush=True)
"""


def script_reports(tmp_path, script_text, n_workers, env=None):
    """Run script_text as n_workers processes (under real horovodrun when more than one)
    -> the JSON that each printed after "REPORT "."""
    script = tmp_path / "script.py"
    script.write_text(script_text)
    command = [sys.executable, str(script)]
    if n_workers > 1:
        command = [str(BIN / "horovodrun"), "-np", str(n_workers), "--gloo", *command]
    result = run(command, env={"PYTHONPATH": str(ROOT), **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(line.split("REPORT ", 1)[1]) for line in result.stdout.splitlines() if "REPORT " in line]


def test_only_gloos_event_loop_threads_are_lowered_to_sched_idle(tmp_path):
    reports = script_reports(tmp_path, GLOO_THREADS_SCRIPT, 2)
    assert len(reports) == 2
    for report in reports:
        threads = {int(tid): info for tid, info in report["threads"].items()}
        lowered = set(report["lowered"])
        assert lowered, "no Gloo thread was found"
        # Lowered: threads hvd.init() started, each one seen waiting in epoll (Gloo's TCP loops).
        assert all(threads[tid]["idle"] and threads[tid]["started_by_init"] for tid in lowered)
        assert all(any("epoll" in w for w in threads[tid]["wchans"]) for tid in lowered), threads
        # Everything else keeps its priority: the main thread, MXNet's, Horovod's background thread.
        others = [info for tid, info in threads.items() if tid not in lowered]
        assert not any(info["idle"] or info["nice"] for info in others)
        assert any(info["started_by_init"] for info in others), "Horovod's background thread was lowered"
        # ... and none of them is a Gloo loop: not once in 50 looks in epoll.
        assert not any("epoll" in w for info in others for w in info["wchans"]), (lowered, threads)


HOROVOD_CYCLE_SCRIPT = """
import json, time
import horovod.mxnet as hvd
import mxnet as mx
from distjob.distributed import init_horovod
from distjob.machine import creation_order, native_threads
before = native_threads()
cycle_ms = init_horovod().cycle_ms
hvd.allreduce(mx.nd.ones(3), name="warm").wait_to_read()
background = creation_order(native_threads() - before)[0]  # hvd.init() starts Horovod's thread first
def switches():
    with open(f"/proc/self/task/{background}/status") as f:
        return sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
first = switches()
time.sleep(0.5)  # idle: the background thread wakes once a cycle (and for Gloo's coordination)
print("REPORT", json.dumps({"cycle_ms": cycle_ms, "wakeups_per_s": (switches() - first) / 0.5}), flush=True)
"""


def test_workers_with_peers_run_horovods_cycle_at_a_tenth_of_a_millisecond(tmp_path):
    def cycles(n_workers, env):
        return script_reports(tmp_path, HOROVOD_CYCLE_SCRIPT, n_workers, env)

    short, default = cycles(2, {}), cycles(2, {"HOROVOD_CYCLE_TIME": "1"})  # the user's choice is kept
    assert [r["cycle_ms"] for r in short] == [0.1, 0.1] and [r["cycle_ms"] for r in default] == [1, 1]
    assert [r["cycle_ms"] for r in cycles(1, {})] == [1]  # alone: Horovod's default
    # Horovod runs the cycle it was given: its thread wakes several times as often.
    assert min(r["wakeups_per_s"] for r in short) > 2 * max(r["wakeups_per_s"] for r in default), (short, default)


def test_thread_creation_order_survives_the_id_wraparound():
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    assert creation_order({7, 5, 6}) == [5, 6, 7]
    # Ids reached pid_max and started again from the bottom between the 2nd and 3rd thread.
    assert creation_order({6, pid_max - 1, 5, pid_max - 2}) == [pid_max - 2, pid_max - 1, 5, 6]
