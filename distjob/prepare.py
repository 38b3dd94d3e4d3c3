"""Text -> ids once per data set, kept on disk and memory-mapped by every rank.

A run's ids follow from its input files' contents and the settings that choose its rows and
tokens (config.IDS_FOLLOW_FROM); their digest names a directory under <cache_dir>/prepared.
Local rank 0 of each host builds it, or checks the one there, while the host's other ranks
wait; then every rank maps its arrays read-only, so the host's page cache holds one copy for
all of them. Ranks keep ids, never texts.

    python -m distjob.prepare [train's flags]   # the same step ahead of a job (a PVC, say)
"""
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from gluonnlp import Vocab

from . import store
from .config import IDS_FOLLOW_FROM, UserError, parse_config, run_main
from .data import Rows, load_splits
from .logs import log
from .readers import check_inputs, input_files, read_labeled_arrow
from .text import encode, ids_of, layout, tokenize_all, vocab_of_counts

FORMAT = 1  # the tokenizer, the vocabulary's rules and this layout: a change misses every older entry
ARRAYS = ("train_ids", "train_labels", "val_ids", "val_labels", "test_ids", "test_labels")
VOCAB = "vocab.json"
DAMAGE = {  # what check says of an entry that does not verify
    store.MISSING: "{file} is missing",
    store.NOT_READABLE: store.META + " is unreadable ({error})",
    store.NOT_A_RECORD: store.META + " is unreadable ({error})",
    store.CHANGED: "{file} is not the file it was written as (digest differs)",
    store.RECORD_CHANGED: store.META + " is not the record it was written as (its own digest differs)",
    store.NO_DIGEST: store.META + " has no digest of its own (written by an older distjob)",
}
CHUNK_ROWS = 1 << 16  # texts tokenized at a time: what tokenizing holds in memory stays small
THREADS = len(os.sched_getaffinity(0))  # chunks at once: pyarrow and numpy let go of the GIL


@dataclass
class Prepared:
    """A run's rows as ids (N, max_tokens) and labels, memory-mapped read-only; val_* None
    without a validation set."""
    train_ids: np.ndarray
    train_labels: np.ndarray
    val_ids: Optional[np.ndarray]
    val_labels: Optional[np.ndarray]
    test_ids: np.ndarray
    test_labels: np.ndarray
    vocab: Vocab
    classes: list
    source: str  # where the rows came from, for the log
    path: str


def entry_key(cfg):
    """The digest of everything the ids follow from: the input files by content (in their
    roles: training, test, class names), the settings, and FORMAT."""
    files = [store.file_digest(path) for path in input_files(cfg)]
    settings = {name: getattr(cfg, name) for name in IDS_FOLLOW_FROM}
    return hashlib.sha256(json.dumps([FORMAT, files, settings], sort_keys=True).encode()).hexdigest()


def entry_path(cfg):
    return os.path.join(cfg.cache_dir, "prepared", entry_key(cfg)[:32])


def ensure(cfg):
    """Local rank 0: the entry for cfg, checked, or built if missing or damaged (one line says
    which file and why). -> (its path, seconds per stage of a build; {} when it was there)."""
    path = entry_path(cfg)
    if os.path.isdir(path):
        problem = check(path)
        if problem is None:
            return path, {}
        log.warning("prepared ids %s: %s; preparing them again", path, problem)
        shutil.rmtree(path, ignore_errors=True)
    return path, build(cfg, path)


def check(path):
    """-> why the entry at path cannot be used (a file missing, or its digest not the one
    meta.json records), or None."""
    return store.verify(path, DAMAGE)


def build(cfg, path):
    """Read, split, tokenize, count, encode and write cfg's rows into a new entry at path,
    atomically. -> seconds per stage."""
    stage = StageSeconds()
    if pa.default_memory_pool().backend_name == "jemalloc":  # pyarrow's default
        pa.jemalloc_set_decay_ms(0)  # freed buffers go back at once, or the texts' passing copies add up
    splits = load_splits(cfg, reader=read_labeled_arrow, take=Rows)
    texts = {split: getattr(splits, f"{split}_texts") for split in ("train", "val", "test")}  # arrays, or Rows
    labels = {split: getattr(splits, f"{split}_labels") for split in ("train", "val", "test")}
    record = {"format": FORMAT, "classes": splits.classes, "source": splits.source}
    stage("read")

    def fill(tmp):
        ids = {split: np.lib.format.open_memmap(os.path.join(tmp, f"{split}_ids.npy"), "w+", np.int32,
                                                (len(split_texts), cfg.max_tokens))
               for split, split_texts in texts.items() if split_texts is not None}
        with ThreadPoolExecutor(THREADS) as pool:
            vocab = vocab_and_ids(texts["train"], cfg.max_tokens, ids["train"], pool, stage)
            if len(vocab) == 2:  # padding and unknown alone
                raise UserError(f"{record['source']}: no row of the training data holds a word")
            for split in ("val", "test"):
                if texts[split] is not None:
                    encode_in_chunks(texts[split], vocab, cfg.max_tokens, ids[split], pool)
        stage("encode")
        for split, array in ids.items():
            array.flush()
            np.save(os.path.join(tmp, f"{split}_labels.npy"), labels[split].astype(np.int32))
        with open(os.path.join(tmp, VOCAB), "w") as f:
            f.write(vocab.to_json())

    try:
        store.write_dir(path, fill, record, replace=False)  # a host sharing the cache may have named its copy first
    except OSError as e:
        raise UserError(f"{e.filename or path}: could not write the prepared ids ({e.strerror or e}); "
                        f"--cache-dir {cfg.cache_dir} must be writable") from None
    stage("write")
    return dict(stage)


class StageSeconds(dict):
    """Seconds per stage: each call adds the time since the one before to the stage it names."""

    def __init__(self):
        super().__init__()
        self.lap = time.perf_counter()

    def __call__(self, name):
        now = time.perf_counter()
        self[name], self.lap = self.get(name, 0.0) + now - self.lap, now


def vocab_and_ids(texts, max_tokens, out, pool, stage):
    """The training texts' vocabulary, and their ids written into out, each text tokenized
    once, a chunk on each core: until the vocabulary is known, a chunk's ids wait in out as
    indices into that chunk's own words (-1: no token)."""
    def words_of_chunk(start):
        tokens = tokenize_all(texts.slice(start, CHUNK_ROWS))
        words = pc.dictionary_encode(tokens.flat)  # each distinct word once, an index per token
        indices = words.indices.to_numpy()
        out[start:start + tokens.n_rows] = layout(indices, tokens.offsets, max_tokens, fill=-1)
        return words.dictionary, np.bincount(indices, minlength=len(words.dictionary))

    starts = range(0, len(texts), CHUNK_ROWS)
    chunk_words, chunk_counts = zip(*pool.map(words_of_chunk, starts))
    stage("tokenize")
    every_word = pc.dictionary_encode(pa.concat_arrays(chunk_words))  # each chunk's words, in one table
    counts = np.bincount(every_word.indices.to_numpy(), np.concatenate(chunk_counts),
                         minlength=len(every_word.dictionary)).astype(np.int64)
    vocab = vocab_of_counts(dict(zip(every_word.dictionary.to_pylist(), counts.tolist())))
    stage("vocab")
    ids = ids_of(every_word.dictionary, vocab)[every_word.indices.to_numpy()]  # chunk after chunk
    firsts = np.cumsum([0] + [len(words) for words in chunk_words])

    def ids_of_chunk(chunk):
        to_id = np.append(ids[firsts[chunk]:firsts[chunk + 1]], np.int32(0))  # and index -1 -> padding's id 0
        block = out[starts[chunk]:starts[chunk] + CHUNK_ROWS]
        block[...] = to_id[block]

    list(pool.map(ids_of_chunk, range(len(starts))))
    stage("encode")
    return vocab


def encode_in_chunks(texts, vocab, max_tokens, out, pool):
    def encode_chunk(start):
        out[start:start + CHUNK_ROWS] = encode(texts.slice(start, CHUNK_ROWS), vocab, max_tokens)

    list(pool.map(encode_chunk, range(0, len(texts), CHUNK_ROWS)))


def open_prepared(path):
    """Every rank: the entry's arrays, memory-mapped read-only (shared in the page cache)."""
    meta = store.read_record(path)
    with open(os.path.join(path, VOCAB)) as f:
        vocab = Vocab.from_json(f.read())
    arrays = {name: np.load(os.path.join(path, f"{name}.npy"), mmap_mode="r")
              if f"{name}.npy" in meta["files"] else None for name in ARRAYS}
    return Prepared(**arrays, vocab=vocab, classes=meta["classes"], source=meta["source"], path=path)


def main(argv=None):
    def prepare_ahead():
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                            stream=sys.stdout)
        cfg = parse_config(argv, description="Prepare a run's token ids ahead of the job (train's flags; "
                                             "those that do not change the ids are ignored).")
        check_inputs(cfg)
        started = time.perf_counter()
        path, seconds = ensure(cfg)
        prepared = open_prepared(path)
        stages = ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items()) or "it was there, and checks"
        print(f"{path}: {len(prepared.train_ids)} training, "
              f"{0 if prepared.val_ids is None else len(prepared.val_ids)} validation, {len(prepared.test_ids)} "
              f"test rows, vocabulary of {len(prepared.vocab)}; {time.perf_counter() - started:.2f} s ({stages})")
    run_main(prepare_ahead)


if __name__ == "__main__":
    main()
