"""Pooled vectors once per data set: the parameters training from ids gives, the cache entry
built once, reused, keyed by what it follows from, and built again when damaged."""
import logging
import shutil
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from distjob import pooled, prepare
from distjob.config import parse_config
from distjob.model import POOLINGS, build_model
from conftest import horovodrun_cmd, run, run_all, train_cmd

# Dropout, clipping, warmup and a schedule on, and checkpoints every 40 steps: what a step
# does besides the pooling acts, and a run can be stopped mid-epoch.
LEVERS = ("--test-mode", "--pooling", "mean", "--epochs", 2, "--dropout", 0.2, "--clip-grad-norm", 0.5,
          "--warmup-steps", 10, "--lr-schedule", "linear", "--batch-size", 32, "--checkpoint-every-steps", 40,
          "--keep-checkpoints", 9)
FINAL = "checkpoints/epoch-0002/model.params"
TRAINS_POOLED = "training the dense layers on mean pooled vectors"


def saved_params(path):
    return {name: array.asnumpy() for name, array in mx.nd.load(str(path)).items()}


def assert_same_params(got, expected):
    """Bit for bit: a text's pooled vector does not depend on which rows share its chunk or
    batch (each output element is the same operators' sum or max over that text's T tokens, in
    the same order), and the dense layers then run the same operators on the same inputs."""
    got, expected = saved_params(got), saved_params(expected)
    assert sorted(got) == sorted(expected)  # the same parameter names: either run's checkpoint loads anywhere
    for name in expected:
        assert got[name].dtype == expected[name].dtype and np.array_equal(got[name], expected[name]), name


def test_training_on_pooled_vectors_gives_the_parameters_training_from_ids_does_and_resumes_either_way(tmp_path):
    cache = ("--cache-dir", tmp_path / "cache")
    once, from_ids = run_all([train_cmd(*LEVERS, *cache, "--output-dir", tmp_path / "once"),
                              train_cmd(*LEVERS, *cache, "--no-pool-once", "--output-dir", tmp_path / "ids")])
    assert once.returncode == 0 and from_ids.returncode == 0, once.stderr[-2000:] + from_ids.stderr[-2000:]
    assert TRAINS_POOLED in once.stdout and "pooled the training rows' vectors into" in once.stdout
    assert TRAINS_POOLED not in from_ids.stdout and "pooled the training rows' vectors" not in from_ids.stdout
    for checkpoint in ("epoch-0001-step-000040", "epoch-0001", "epoch-0002-step-000040", "epoch-0002"):
        assert_same_params(tmp_path / "once" / "checkpoints" / checkpoint / "model.params",
                           tmp_path / "ids" / "checkpoints" / checkpoint / "model.params")
    # The pooled run as it stood at epoch 2, step 40 (later checkpoints gone, as after a
    # preemption), resumed pooled once and from ids: each ends where the straight run did.
    for resumed in ("resumed-once", "resumed-ids"):
        shutil.copytree(tmp_path / "once", tmp_path / resumed)
        for later in ("epoch-0002-step-000080", "epoch-0002"):
            shutil.rmtree(tmp_path / resumed / "checkpoints" / later)
    again_once, again_ids = run_all([train_cmd(*LEVERS, *cache, "--output-dir", tmp_path / "resumed-once"),
                                     train_cmd(*LEVERS, *cache, "--no-pool-once", "--output-dir",
                                               tmp_path / "resumed-ids")])
    for again in (again_once, again_ids):
        assert again.returncode == 0 and "epoch-0002-step-000040 (epoch 2, step 40)" in again.stdout, again.stderr
    # The second pooled run reuses the entry the first built.
    assert TRAINS_POOLED in again_once.stdout and "pooled the training rows' vectors into" not in again_once.stdout
    for resumed in ("resumed-once", "resumed-ids"):
        assert_same_params(tmp_path / resumed / FINAL, tmp_path / "once" / FINAL)


@pytest.fixture(scope="module")
def test_mode_ids(tmp_path_factory):
    """The test mode's prepared ids."""
    cfg = parse_config(["--test-mode", "--cache-dir", str(tmp_path_factory.mktemp("prepared-cache"))])
    return prepare.open_prepared(prepare.ensure(cfg)[0])


def model_for(cfg, prepared, pooling, seed=0, dim=8):
    table = np.random.default_rng(seed).standard_normal((len(prepared.vocab), dim)).astype(np.float32)
    return build_model(table, pooling, cfg.max_tokens, mx.cpu(), 16, num_classes=4)


@pytest.mark.parametrize("pooling", [name for name, entry in POOLINGS.items() if entry.pooled_once])
def test_the_pooled_vectors_are_the_models_own_in_any_chunks(test_mode_ids, monkeypatch, tmp_path, pooling):
    prepared = test_mode_ids
    cfg = parse_config(["--test-mode", "--pooling", pooling, "--cache-dir", str(tmp_path)])
    model = model_for(cfg, prepared, pooling)
    monkeypatch.setattr(pooled, "CHUNK_BYTES", 7 * cfg.max_tokens * 8 * 4)  # chunks of 7 rows, the last cut short
    path, seconds = pooled.ensure(cfg, prepared, model)
    vectors = pooled.open_pooled(path)
    # What the model's own graph pools the whole training set to, at once.
    whole = model.pooled(mx.nd, mx.nd.array(prepared.train_ids, dtype="int32")).asnumpy()
    assert seconds is not None and vectors.shape == whole.shape and np.array_equal(vectors, whole)
    assert isinstance(vectors, np.memmap) and not vectors.flags.writeable  # mapped read-only: shared pages


def test_the_entry_is_reused_and_follows_the_ids_the_table_and_the_pooling(test_mode_ids, tmp_path):
    prepared = test_mode_ids
    cfg = parse_config(["--test-mode", "--pooling", "mean", "--cache-dir", str(tmp_path)])
    model = model_for(cfg, prepared, "mean")
    first, built = pooled.ensure(cfg, prepared, model)
    assert built is not None and pooled.ensure(cfg, prepared, model) == (first, None)  # there, and checks
    assert pooled.entry_path(cfg, prepared, pooled.table_of(model), "cpu") == first
    assert pooled.entry_path(cfg, prepared, pooled.table_of(model), "gpu") != first  # another device's rounding
    cfg.pooling = "max"
    assert pooled.entry_path(cfg, prepared, pooled.table_of(model_for(cfg, prepared, "max")), "cpu") != first
    cfg.pooling = "mean"
    for other in (model_for(cfg, prepared, "mean", seed=1), model_for(cfg, prepared, "mean", dim=9)):
        assert pooled.entry_path(cfg, prepared, pooled.table_of(other), "cpu") != first  # other vectors, width
    shorter = parse_config(["--test-mode", "--max-tokens", "20", "--cache-dir", str(tmp_path)])
    shorter_ids = prepare.open_prepared(prepare.ensure(shorter)[0])
    assert pooled.entry_path(cfg, shorter_ids, pooled.table_of(model), "cpu") != first  # other ids


@pytest.mark.parametrize("damage", ["flipped byte", "missing file"])
def test_a_damaged_entry_is_named_in_one_line_and_pooled_again(test_mode_ids, tmp_path, caplog, damage):
    prepared = test_mode_ids
    cfg = parse_config(["--test-mode", "--pooling", "meanmax", "--cache-dir", str(tmp_path)])
    model = model_for(cfg, prepared, "meanmax")
    path, _ = pooled.ensure(cfg, prepared, model)
    vectors = Path(path) / pooled.VECTORS
    original = vectors.read_bytes()
    if damage == "flipped byte":
        raw = bytearray(original)
        raw[-1] ^= 1
        vectors.write_bytes(bytes(raw))
    else:
        vectors.unlink()
    with caplog.at_level(logging.WARNING, logger="distjob"):
        again, seconds = pooled.ensure(cfg, prepared, model)
    reason = "train_pooled.npy is missing" if damage == "missing file" else \
        "train_pooled.npy is not the file it was written as (digest differs)"
    notices = [record.getMessage() for record in caplog.records if "pooling them again" in record.getMessage()]
    assert notices == [f"pooled vectors {path}: {reason}; pooling them again"]
    assert again == path and seconds is not None and vectors.read_bytes() == original


def test_under_horovodrun_one_rank_pools_and_both_map_the_same_entry(tmp_path):
    result = run(horovodrun_cmd(2, "--test-mode", "--pooling", "mean", "--epochs", 1, "--cache-dir", tmp_path / "cache",
                                "--output-dir", tmp_path / "out"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("pooled the training rows' vectors into") == 1
    mapped = [line.split(") in ")[-1] for line in result.stdout.splitlines() if TRAINS_POOLED in line]
    assert len(mapped) == 2 and len(set(mapped)) == 1, result.stdout[-3000:]
    assert len(list((tmp_path / "cache" / "pooled").iterdir())) == 1
