"""Pooled vectors once per data set, kept on disk beside the prepared ids and memory-mapped.

The embedding is frozen, so for a pooling with no learned weights (POOLINGS' pooled_once:
sum, mean, max, meanmax) a training text's pooled vector follows from its ids and the table
alone: the same in every epoch and on every rank. It is computed once, by the model's own
pooling (TopicClassifier.pooled) a chunk of rows at a time, and training runs the dense
layers on it (model.PooledClassifier).

An entry's key is the digest of what the vectors follow from: the prepared ids (their
entry's record digest, which covers every file's SHA-256), the frozen table the pooling
reads (its contents and shape: the embedding and its dimension, by content, not name), the
pooling, the device type and FORMAT. It names a directory under <cache_dir>/pooled. As for prepared ids,
local rank 0 of each host builds it, or checks the one there (a damaged entry is named in
one line and built again), while the others wait; then every rank maps it read-only, so the
host's page cache holds one copy for all of them.
"""
import hashlib
import json
import os
import shutil
import time

import mxnet as mx
import numpy as np

from . import store
from .config import UserError
from .logs import log
from .model import pooled_width
from .prepare import DAMAGE

FORMAT = 1  # the pooling operators' meaning and this layout: a change misses every older entry
VECTORS = "train_pooled.npy"  # (training rows, pooled width) float32
CHUNK_BYTES = 64 << 20  # one chunk's embedded (rows, T, D) float32 vectors: what building holds at a time


def table_of(model):
    """The (V, D) table the model's pooling reads: GloVe with this pooling's padding row."""
    return model.embedding.weight.data().asnumpy()


def entry_key(prepared, table, pooling, device_type):
    """The digest of everything the pooled vectors follow from, and FORMAT. The device type too:
    a GPU's reductions may round otherwise, and a run's vectors are those its device computes."""
    ids_digest = store.read_record(prepared.path)[store.DIGEST]
    table_digest = hashlib.sha256(np.ascontiguousarray(table, np.float32).data).hexdigest()
    key = [FORMAT, ids_digest, table_digest, list(table.shape), pooling, device_type]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def entry_path(cfg, prepared, table, device_type):
    return os.path.join(cfg.cache_dir, "pooled", entry_key(prepared, table, cfg.pooling, device_type)[:32])


def ensure(cfg, prepared, model):
    """Local rank 0: the entry of the training rows' pooled vectors, checked, or built if missing
    or damaged (one line says which file and why). -> (its path, seconds to build; None when it was there)."""
    table = table_of(model)
    path = entry_path(cfg, prepared, table, model.embedding.weight.list_ctx()[0].device_type)
    if os.path.isdir(path):
        problem = store.verify(path, DAMAGE)
        if problem is None:
            return path, None
        log.warning("pooled vectors %s: %s; pooling them again", path, problem)
        shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    build(cfg, path, prepared, model, table)
    return path, time.perf_counter() - started


def build(cfg, path, prepared, model, table):
    """Every training text's pooled vector, by the model's own pooling, a chunk of rows at a
    time (so memory holds one chunk's embedded vectors), written into a new entry atomically."""
    ids = prepared.train_ids
    vocab_size, embed_dim = table.shape
    record = {"format": FORMAT, "pooling": cfg.pooling, "embedding": cfg.embedding,
              "table_shape": [vocab_size, embed_dim], "prepared": prepared.path,
              "prepared_digest": store.read_record(prepared.path)[store.DIGEST]}

    def fill(tmp):
        shape = (len(ids), pooled_width(model.pooling, embed_dim, model.max_tokens))
        # Written, not mapped: the file's pages stay page cache, out of this process's own memory.
        with store.naming_errors(os.path.join(tmp, VECTORS)), open(os.path.join(tmp, VECTORS), "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
            for vectors in pooled_chunks(model, ids):
                f.write(vectors.astype("<f4", copy=False).tobytes())

    try:
        store.write_dir(path, fill, record, replace=False)  # a host sharing the cache may have named its copy first
    except OSError as e:
        raise UserError(f"{e.filename or path}: could not write the pooled vectors ({e.strerror or e}); "
                        f"--cache-dir {cfg.cache_dir} must be writable") from None


def pooled_chunks(model, ids):
    """ids' pooled vectors by the model's own pooling (TopicClassifier.pooled), as numpy arrays a
    chunk of rows at a time: memory holds one chunk's embedded vectors (about CHUNK_BYTES)."""
    ctx = model.embedding.weight.list_ctx()[0]
    rows_per_chunk = max(1, CHUNK_BYTES // (ids.shape[1] * model.embedding.weight.shape[1] * 4))
    for start in range(0, len(ids), rows_per_chunk):
        yield model.pooled(mx.nd, mx.nd.array(ids[start:start + rows_per_chunk], ctx=ctx, dtype="int32")).asnumpy()


def open_pooled(path):
    """Every rank: the training rows' pooled vectors, memory-mapped read-only (shared in the page cache)."""
    return np.load(os.path.join(path, VECTORS), mmap_mode="r")
