"""The practitioner's levers, run as a user runs them: validation chooses, the schedule, dropout,
clipping, label smoothing, the head's width and the weights' average resume exactly, patience
stops early, TensorBoard holds what metrics.jsonl holds."""
import hashlib
import json
import shutil
import struct

import pytest

from conftest import run, train_cmd

LEVERS = ("--test-mode", "--no-progress", "--epochs", 2, "--dropout", 0.2, "--clip-grad-norm", 0.5,
          "--warmup-steps", 10, "--lr-schedule", "linear", "--batch-size", 32, "--label-smoothing", 0.1,
          "--head-width", 64, "--ema-decay", 0.99)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metrics(out):
    """Every epoch's losses and accuracies (no times) of a run's metrics.jsonl."""
    return [{key: value for key, value in json.loads(line).items() if key.endswith(("_loss", "_accuracy"))}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_mid_epoch_resume_with_every_lever_on_is_bit_identical(tmp_path):
    straight = tmp_path / "straight"
    result = run(train_cmd(*LEVERS, "--checkpoint-every-steps", 40, "--keep-checkpoints", 9,
                           "--output-dir", straight))
    assert result.returncode == 0, result.stderr
    assert "10 warmup steps, then linear to 2e-05 by step 190" in result.stdout
    # The run as it stood at epoch 2, step 40: later checkpoints gone, as after a preemption.
    stopped = tmp_path / "stopped"
    shutil.copytree(straight, stopped)
    for later in ("epoch-0002-step-000080", "epoch-0002"):
        shutil.rmtree(stopped / "checkpoints" / later)
    resumed = run(train_cmd(*LEVERS, "--output-dir", stopped))
    assert resumed.returncode == 0 and "epoch-0002-step-000040 (epoch 2, step 40)" in resumed.stdout
    final = "checkpoints/epoch-0002/model.params"  # the weights' average (--ema-decay)
    weights = "checkpoints/epoch-0002/training.params"  # the weights themselves
    assert digest(stopped / final) == digest(straight / final)
    assert digest(stopped / weights) == digest(straight / weights) != digest(straight / final)
    assert metrics(stopped) == metrics(straight)
    # The final report scores the best checkpoint's model.params: the average each epoch was scored as.
    results = json.loads((straight / "results.json").read_text())
    assert results["test_accuracy"] == metrics(straight)[results["best_epoch"] - 1]["test_accuracy"]
    # ... and with other dropout masks it would differ: the levers do act.
    other = run(train_cmd(*LEVERS, "--seed", 43, "--output-dir", tmp_path / "other"))
    assert other.returncode == 0 and digest(tmp_path / "other" / final) != digest(straight / final)


def test_patience_stops_once_validation_stops_improving(tmp_path):
    result = run(train_cmd("--test-mode", "--no-progress", "--epochs", 30, "--patience", 1, "--lr", 0.01,
                           "--output-dir", tmp_path))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) < 30 and "no better validation accuracy (or loss at the same) for 1 epochs" in result.stdout
    accuracies = [r["val_accuracy"] for r in records]
    assert accuracies[-1] <= max(accuracies[:-1])  # the last epoch did not improve
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["val_accuracy"] == max(accuracies) and results["epochs"] == len(records)


def test_without_a_validation_set_the_test_set_chooses_and_says_so(tmp_path):
    result = run(train_cmd("--test-mode", "--no-progress", "--epochs", 2, "--validation-size", 0,
                           "--output-dir", tmp_path))
    assert result.returncode == 0 and "the test set chooses the best epoch" in result.stdout
    assert json.loads((tmp_path / "results.json").read_text())["chosen_by"] == "test accuracy (no validation set)"


def tensorboard_scalars(logdir):
    """{tag: [(step, value)]} read back from TensorBoard event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2
    scalars = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        while data:
            length = struct.unpack("<Q", data[:8])[0]
            event = event_pb2.Event.FromString(data[12:12 + length])
            data = data[12 + length + 4:]
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_holds_each_epochs_metrics_and_the_running_loss(tmp_path):
    # torch loaded after Horovod's MXNet library crashes the process, and tensorboardX imports
    # it where it is installed (the bench's peers extra): a torch that ends the run stands for it.
    (tmp_path / "site" / "torch").mkdir(parents=True)
    (tmp_path / "site" / "torch" / "__init__.py").write_text("import os\nos._exit(99)\n")
    result = run(train_cmd("--test-mode", "--no-progress", "--epochs", 3, "--log-every-steps", 10,
                           "--output-dir", tmp_path), env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.returncode == 0, result.stderr
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for tag in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "test/loss", "test/accuracy"):
        assert [value for _, value in scalars[tag]] == pytest.approx([r[tag.replace("/", "_")] for r in records])
    steps = [step for step, _ in scalars["val/accuracy"]]
    assert steps == sorted(steps) and len(set(steps)) == 3
    assert len(scalars["train/running_loss"]) >= 3 * 4 and len(scalars["lr"]) == len(scalars["train/running_loss"])
