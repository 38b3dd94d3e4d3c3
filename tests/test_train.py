"""`python -m distjob.train` end to end, as a user runs it."""
import json
import shutil

import matplotlib.image
import mxnet as mx
import numpy as np
import pytest
import yaml
from gluonnlp import Vocab

from distjob import checkpoint, data, generated, store
from distjob.embeddings import embedding_matrix, load_glove
from distjob.model import build_model, frozen_table
from distjob.text import encode
from conftest import run, run_all, train_cmd


def test_test_mode_writes_checkpoint_metrics_and_plot(test_mode_run):
    out, result = test_mode_run
    assert str(out) in result.stdout  # it says where it wrote things
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))  # one line per epoch: one writer
    assert all(0 <= r[f"{split}_accuracy"] <= 1 for r in records for split in ("train", "val", "test"))
    image = matplotlib.image.imread(out / "confusion_matrix.png")
    assert image.ndim == 3 and image.shape[0] > 100
    results = json.loads((out / "results.json").read_text())
    chosen = max(records, key=lambda r: (r["val_accuracy"], -r["val_loss"]))  # among equal accuracies, the lower loss
    assert results["best_epoch"] == chosen["epoch"] and results["test_accuracy"] == chosen["test_accuracy"]
    assert results["chosen_by"] == "validation accuracy, then loss"


def test_checkpoint_loads_and_embedding_is_bit_identical_glove(test_mode_run):
    out, _ = test_mode_run
    best = checkpoint.resolve(str(out), "best")
    cfg = yaml.safe_load(open(f"{best}/config.yaml"))
    vocab = Vocab.from_json(open(f"{best}/vocab.json").read())
    glove_matrix, _ = embedding_matrix(vocab.idx_to_token, *load_glove(cfg["embedding"], ""))
    glove_matrix = frozen_table(glove_matrix, cfg["pooling"])
    model = build_model(np.zeros_like(glove_matrix), cfg["pooling"], cfg["max_tokens"], mx.cpu(), num_classes=4)
    model.load_parameters(f"{best}/model.params", ctx=mx.cpu())
    # The trained embedding is exactly what GloVe gives, bit for bit.
    assert np.array_equal(model.embedding.weight.data().asnumpy(), glove_matrix)
    # ... while the dense layers learned: the loaded model classifies the held-out rows well.
    labels, texts = generated.generate_rows(4000, cfg["seed"])
    _, held_out = data.stratified_holdout(labels, 800, cfg["seed"])
    ids = encode([texts[i] for i in held_out], vocab, cfg["max_tokens"])
    predictions = model(mx.nd.array(ids, dtype="int32")).argmax(axis=1).asnumpy()
    accuracy = (predictions == labels[held_out]).mean()
    assert accuracy == pytest.approx(json.load(open(out / "results.json"))["test_accuracy"])
    assert accuracy > 0.5  # 4 balanced classes: chance is 0.25


def test_rerun_resumes_from_the_last_checkpoint(two_epoch_run, tmp_path):
    tmp_path = tmp_path / "run"
    shutil.copytree(two_epoch_run, tmp_path)  # as `--test-mode --epochs 2 --output-dir` left it
    second = run(train_cmd("--test-mode", "--epochs", 3, "--output-dir", tmp_path))
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout and "(epoch 2)" in second.stdout
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    # The last 2 (--keep-checkpoints) and the best are kept, with the two pointers.
    best = checkpoint.resolve(str(tmp_path), "best").split("/")[-1]
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"last", "best", "epoch-0002",
                                                                     "epoch-0003", best}
    other = shutil.copytree(tmp_path, tmp_path.with_name("other"))  # a dir each: at once, one dir meets its lock
    refused, changed = run_all([train_cmd("--test-mode", "--output-dir", tmp_path, "--resume", "never"),
                                train_cmd("--test-mode", "--output-dir", other, "--pooling", "mean")])
    assert refused.returncode == 2 and "already holds checkpoints" in refused.stderr
    assert changed.returncode == 2 and "--pooling mean" in changed.stderr


def test_a_checkpoint_from_before_a_model_setting_existed_resumes_at_its_default(two_epoch_run, tmp_path):
    # head_width joined the run identity later: a checkpoint without it was trained at 128.
    out = shutil.copytree(two_epoch_run, tmp_path / "run")
    for meta_path in (out / "checkpoints").glob("epoch-*/meta.json"):
        meta = json.loads(meta_path.read_text())
        del meta["identity"]["head_width"]
        meta[store.DIGEST] = store.record_digest(meta)
        meta_path.write_text(json.dumps(meta))
    resumed, other = run_all([train_cmd("--test-mode", "--epochs", 3, "--output-dir", out),
                              train_cmd("--test-mode", "--epochs", 3, "--head-width", 64,
                                        "--output-dir", shutil.copytree(out, tmp_path / "other"))])
    assert resumed.returncode == 0 and "(epoch 2)" in resumed.stdout, resumed.stderr
    assert other.returncode == 2 and "--head-width 64 (the checkpoint's run: 128)" in other.stderr, other.stderr


def test_resume_required_without_checkpoint(tmp_path):
    result = run(train_cmd("--test-mode", "--output-dir", tmp_path, "--resume"))
    assert result.returncode == 2 and "no checkpoint" in result.stderr


def _write_csv(path, rows):
    path.write_text("".join(rows))


BAD_INPUTS = {  # case -> what its one line says
    "label": "train.csv:3: class must be a whole number from 1, got '0'",
    "columns": "train.csv:2: expected a class and 1 or more text columns, got 1",
    "empty": "train.csv: file is empty",
    "missing": "test.csv: file not found",
    "embedding": "glove.txt:3: expected 50 values",
    "yaml": "unknown config key(s) learning_rate",
}


def bad_input_command(tmp_path, case):
    """Write the case's inputs into tmp_path -> the train command that reads them."""
    good = '"1","Title","World news text"\n"2","Title","Sports news text"\n'
    _write_csv(tmp_path / "train.csv", {"label": good + '"0","t","d"\n', "columns": '"1","a","b"\n"2"\n',
                                       "empty": ""}.get(case, good))
    if case != "missing":
        _write_csv(tmp_path / "test.csv", good)
    args = ["--data-dir", tmp_path, "--output-dir", tmp_path / "out", "--epochs", 1, "--validation-size", 0]
    if case == "embedding":
        (tmp_path / "glove.txt").write_text("the" + " 0.1" * 50 + "\nnews" + " 0.2" * 50 + "\nbad 0.3 0.4\n")
        args += ["--embedding", tmp_path / "glove.txt"]
    if case == "yaml":
        (tmp_path / "c.yaml").write_text("learning_rate: 0.1\n")
        args += ["--config", tmp_path / "c.yaml"]
    return train_cmd(*args)


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """case -> (its directory, its result): every case's process started at once."""
    dirs = {case: tmp_path_factory.mktemp(case) for case in BAD_INPUTS}
    results = run_all([bad_input_command(directory, case) for case, directory in dirs.items()])
    return {case: (dirs[case], result) for case, result in zip(dirs, results)}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_ends_with_one_clear_message(bad_input_runs, case):
    tmp_path, result = bad_input_runs[case]
    assert result.returncode == 2
    assert BAD_INPUTS[case] in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1  # one line
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_horovod_cycle_that_is_not_a_number_is_one_line_naming_it(tmp_path):
    result = run(train_cmd("--test-mode", "--output-dir", tmp_path / "out"), env={"HOROVOD_CYCLE_TIME": "fast"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "HOROVOD_CYCLE_TIME=fast: not a number" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_real_agnews_small_config_reaches_87_percent(agnews_small_run):
    out, result = agnews_small_run
    assert "5700 training, 300 validation and 1600 test rows" in result.stdout
    accuracy = json.loads((out / "results.json").read_text())["test_accuracy"]
    assert accuracy >= 0.87, accuracy


def test_the_default_config_on_real_training_rows_reaches_88_8_percent_on_the_full_test_split(agnews_dir, tmp_path):
    # The closest check here of "full train.csv -> >= 89% on test.csv": 10,000 of its rows, with
    # every default (measured at the default seed and seeds 1-3: docs/performance.md, "Training
    # levers"; the margin is for other CPUs, whose rounding moves the chosen epoch).
    if not (agnews_dir / "train_10k.csv").exists():
        pytest.skip("train_10k.csv not present")
    result = run(train_cmd("--data-dir", agnews_dir, "--train-file", "train_10k.csv", "--output-dir", tmp_path),
                 timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "9500 training, 500 validation and 7600 test rows" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["chosen_by"] == "validation accuracy, then loss" and results["test_accuracy"] >= 0.888, results
