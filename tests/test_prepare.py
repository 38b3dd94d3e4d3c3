"""Prepared ids: the same ids as tokenizing text by text, built once, checked, shared by map."""
import collections
import json
import shutil
import sys

import numpy as np
import pytest

from distjob import data, generated, prepare, readers
from distjob.config import UserError, parse_config
from distjob.text import tokenize, vocab_of_counts
from conftest import AGNEWS, horovodrun_cmd, run, train_cmd


def python_path_ids(train_texts, other_texts, max_tokens):
    """The ids tokenize() text by text gives, with a Counter vocabulary and dict lookups."""
    counts = collections.Counter(token for text in train_texts for token in tokenize(text))
    vocab = vocab_of_counts(counts)

    def encode(texts):
        ids = np.zeros((len(texts), max_tokens), np.int32)
        for row, text in enumerate(texts):
            for col, token in enumerate(tokenize(text)[:max_tokens]):
                ids[row, col] = vocab.token_to_idx.get(token, 1)
        return ids
    return vocab, encode(train_texts), [encode(texts) for texts in other_texts]


def edge_case_csv(path):
    """Rows a CSV reader can get wrong: quotes, escaped quotes, newlines and commas in values,
    CRLF, a byte-order mark, spaces around the class, non-ASCII words, empty text."""
    path.write_bytes(("\ufeff" + '"1","A ""quoted"" title","line one\nline two, with a comma"\r\n'
                      ' 2 ,Café naïve,İstanbul ŞEKER straße\r\n"3","",""\r\n"4","x²","a_b don\'t U.S."\r\n'
                      '"1","World","news"\r\n"2","Sports","game"\r\n').encode())


@pytest.mark.parametrize("source", ["edge cases", "test.csv", "train_10k.csv"])
def test_the_arrow_reader_reads_what_csv_reader_reads(tmp_path, source):
    if source == "edge cases":
        path = tmp_path / "train.csv"
        edge_case_csv(path)
    else:
        path = AGNEWS / source
        if not path.exists():
            pytest.skip(f"{path} not present")
    labels, texts = readers.read_labeled_arrow(path)
    expected_labels, expected_texts = readers.read_labeled_csv(path)
    assert np.array_equal(labels, expected_labels) and texts.to_pylist() == expected_texts


@pytest.mark.parametrize("setting", [["--test-mode"],
                                     ["--test-mode", "--holdout-from-train", 500, "--validation-size", 0],
                                     ["--data-dir", AGNEWS, "--train-file", "train_10k.csv", "--max-tokens", 30]])
def test_prepared_ids_are_the_text_by_text_ids(tmp_path, setting):
    if "--data-dir" in setting and not (AGNEWS / "train_10k.csv").exists():
        pytest.skip("real AG News not present")
    cfg = parse_config([*map(str, setting), "--cache-dir", str(tmp_path)])
    path, seconds = prepare.ensure(cfg)
    assert set(seconds) >= {"read", "tokenize", "vocab", "encode", "write"}
    prepared = prepare.open_prepared(path)
    splits = data.load_splits(cfg)
    others = [texts for texts in (splits.val_texts, splits.test_texts) if texts is not None]
    vocab, train_ids, other_ids = python_path_ids(splits.train_texts, others, cfg.max_tokens)
    assert prepared.vocab.idx_to_token == vocab.idx_to_token
    assert np.array_equal(prepared.train_ids, train_ids) and np.array_equal(prepared.test_ids, other_ids[-1])
    assert (prepared.val_ids is None) == (splits.val_texts is None)
    if prepared.val_ids is not None:
        assert np.array_equal(prepared.val_ids, other_ids[0])
    for split in ("train", "val", "test"):
        expected = getattr(splits, f"{split}_labels")
        assert (expected is None and getattr(prepared, f"{split}_labels") is None) or \
            np.array_equal(getattr(prepared, f"{split}_labels"), expected)
    assert prepared.classes == splits.classes
    # Mapped read-only: ranks share the pages, and none can write them.
    assert isinstance(prepared.train_ids, np.memmap) and not prepared.train_ids.flags.writeable


def test_chunks_and_threads_make_no_difference(tmp_path, monkeypatch):
    labels, texts = generated.generate_rows(3000, seed=1)
    generated.write_labeled_csv(tmp_path / "train.csv", labels, texts)
    generated.write_labeled_csv(tmp_path / "test.csv", labels[:300], texts[:300])
    cfg = parse_config(["--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "whole")])
    monkeypatch.setattr(prepare, "THREADS", 1)
    whole = prepare.open_prepared(prepare.ensure(cfg)[0])
    monkeypatch.setattr(prepare, "CHUNK_ROWS", 128)  # many chunks, and a last one cut short
    monkeypatch.setattr(prepare, "THREADS", 4)  # chunks finishing in any order
    cfg.cache_dir = str(tmp_path / "chunked")
    chunked = prepare.open_prepared(prepare.ensure(cfg)[0])
    assert whole.vocab.idx_to_token == chunked.vocab.idx_to_token
    for name in prepare.ARRAYS:
        assert np.array_equal(getattr(whole, name), getattr(chunked, name))


def test_the_entry_follows_the_inputs_contents_and_settings(tmp_path):
    labels, texts = generated.generate_rows(400, seed=2)
    generated.write_labeled_csv(tmp_path / "train.csv", labels, texts)
    generated.write_labeled_csv(tmp_path / "test.csv", labels[:40], texts[:40])
    base = ["--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    first = prepare.entry_path(parse_config(base))
    assert prepare.entry_path(parse_config(base + ["--epochs", "3", "--pooling", "mean"])) == first
    assert prepare.entry_path(parse_config(base + ["--max-tokens", "20"])) != first
    assert prepare.entry_path(parse_config(base + ["--seed", "1"])) != first
    shutil.copy(tmp_path / "train.csv", tmp_path / "copy.csv")
    assert prepare.entry_path(parse_config(base + ["--train-file", "copy.csv"])) == first  # contents, not names
    generated.write_labeled_csv(tmp_path / "train.csv", labels[:-1], texts[:-1])
    assert prepare.entry_path(parse_config(base)) != first


def run_training(tmp_path, out, *extra):
    return run(train_cmd("--test-mode", "--epochs", 1, "--no-progress", "--cache-dir", tmp_path / "cache",
                         "--output-dir", tmp_path / out, *extra))


@pytest.fixture(scope="module")
def first_prepared_run(tmp_path_factory):
    """A 1-epoch test-mode run that prepared its ids into cache/ (results in first/), and another
    entry, of --max-tokens 20, in other-cache/: each damage test damages a copy."""
    root = tmp_path_factory.mktemp("first-prepared")
    first = run_training(root, "first")
    assert first.returncode == 0 and "prepared the ids in" in first.stdout, first.stderr
    other = run([sys.executable, "-m", "distjob.prepare", "--test-mode", "--max-tokens", "20",
                 "--cache-dir", str(root / "other-cache")])
    assert other.returncode == 0, other.stderr
    return root


@pytest.mark.parametrize("damage", ["flipped byte", "another entry's file", "missing file"])
def test_a_damaged_entry_is_named_in_one_line_and_prepared_again(tmp_path, first_prepared_run, damage):
    shutil.copytree(first_prepared_run / "cache", tmp_path / "cache")
    shutil.copytree(first_prepared_run / "first", tmp_path / "first")
    entry = next((tmp_path / "cache" / "prepared").iterdir())
    ids = entry / "train_ids.npy"
    if damage == "flipped byte":
        raw = bytearray(ids.read_bytes())
        raw[-1] ^= 1
        ids.write_bytes(bytes(raw))
    elif damage == "another entry's file":
        other, = (first_prepared_run / "other-cache" / "prepared").iterdir()
        assert other.name != entry.name
        shutil.copy(other / "train_ids.npy", ids)
    else:
        ids.unlink()
    again = run_training(tmp_path, "again")
    assert again.returncode == 0, again.stderr
    notices = [line for line in again.stdout.splitlines() if "preparing them again" in line]
    reason = "train_ids.npy is missing" if damage == "missing file" else \
        "train_ids.npy is not the file it was written as"
    assert len(notices) == 1 and f"prepared ids {entry}: {reason}" in notices[0], again.stdout
    results = [json.loads((tmp_path / out / "results.json").read_text()) for out in ("first", "again")]
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"]


def test_prepare_ahead_then_the_job_starts_from_it(tmp_path):
    ahead = run([sys.executable, "-m", "distjob.prepare", "--test-mode", "--cache-dir", tmp_path / "cache"])
    assert ahead.returncode == 0 and "training" in ahead.stdout and "vocabulary of" in ahead.stdout, ahead.stderr
    job = run_training(tmp_path, "out")
    assert job.returncode == 0 and "prepared the ids" not in job.stdout, job.stdout
    again = run([sys.executable, "-m", "distjob.prepare", "--test-mode", "--cache-dir", tmp_path / "cache"])
    assert again.returncode == 0 and "it was there, and checks" in again.stdout


def test_under_horovodrun_one_rank_prepares_and_both_map_the_same_entry(tmp_path):
    result = run(horovodrun_cmd(2, "--test-mode", "--epochs", 1, "--cache-dir", tmp_path / "cache",
                                "--output-dir", tmp_path / "out"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("prepared the ids in") == 1
    mapped = {line.split("ids in ")[-1] for line in result.stdout.splitlines()
              if "training, " in line and "ids in" in line}
    assert len(mapped) == 1 and len(list((tmp_path / "cache" / "prepared").iterdir())) == 1, result.stdout[-3000:]


def test_a_cache_dir_that_cannot_be_written_is_one_error_line(tmp_path):
    (tmp_path / "cache").write_text("a file, not a directory")
    result = run_training(tmp_path, "out")
    assert result.returncode == 2 and "could not write the prepared ids" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_run_with_no_words_is_a_user_error_before_anything_is_written(tmp_path):
    (tmp_path / "train.csv").write_text('"1","--"\n"2","!!"\n')
    (tmp_path / "test.csv").write_text('"1","a"\n"2","b"\n')
    cfg = parse_config(["--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"), "--validation-size", "0"])
    with pytest.raises(UserError, match="no row of the training data holds a word"):
        prepare.ensure(cfg)
    assert not list((tmp_path / "cache" / "prepared").iterdir())  # the half-written entry is gone


def test_a_shard_reaches_the_device_block_by_block_as_one_gather(tmp_path):
    import mxnet as mx
    from distjob.train import rows_on_device
    ids = np.lib.format.open_memmap(tmp_path / "ids.npy", "w+", np.int32, (1000, 7))
    ids[:] = np.arange(7000).reshape(1000, 7)
    mapped = np.load(tmp_path / "ids.npy", mmap_mode="r")
    rows = np.random.default_rng(0).permutation(1000)[:333]
    on_device = rows_on_device(mapped, rows, mx.cpu(), "float32", rows_per_copy=50)  # 7 blocks, the last short
    assert on_device.dtype == np.float32 and np.array_equal(on_device.asnumpy(), mapped[rows].astype(np.float32))
