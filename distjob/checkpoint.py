"""Rank 0's checkpoints: one directory per epoch, written whole, then published.

    output_dir/checkpoints/epoch-0003/{model.params, trainer.states, vocab.json, config.yaml, meta.json}
        + model-symbol.json, model-0000.params   best checkpoints: the exported graph (model.export)
    output_dir/checkpoints/last, best      one line: the directory name they point to

A directory is written under a temporary name and renamed (atomic), then the `last`
and `best` pointers are replaced atomically, then older epochs are pruned: a crash at
any moment leaves the previous checkpoint intact.
"""
import json
import os
import shutil
import tempfile
import warnings

import mxnet as mx
import numpy as np
import yaml
from gluonnlp import Vocab

from .config import UserError
from .model import PREDICT_BATCH_SIZE, build_model

MODEL, TRAINER, VOCAB, CONFIG, META = "model.params", "trainer.states", "vocab.json", "config.yaml", "meta.json"
EXPORT_PREFIX = "model"  # model.export writes model-symbol.json and model-0000.params
EXPORT_SYMBOL, EXPORT_PARAMS = EXPORT_PREFIX + "-symbol.json", EXPORT_PREFIX + "-0000.params"


def _write_pointer(root, name, target):
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}.")
    with os.fdopen(fd, "w") as f:
        f.write(target + "\n")
    os.replace(tmp, os.path.join(root, name))


def read_pointer(root, name):
    try:
        with open(os.path.join(root, name)) as f:
            return os.path.join(root, f.read().strip())
    except FileNotFoundError:
        return None


def save(output_dir, epoch, model, trainer, vocab, config, meta, is_best):
    root = os.path.join(output_dir, "checkpoints")
    os.makedirs(root, exist_ok=True)
    name = f"epoch-{epoch:04d}"
    tmp = tempfile.mkdtemp(dir=root, prefix=f".{name}.")
    model.save_parameters(os.path.join(tmp, MODEL))
    if is_best:  # graph + weights that load without distjob's model code (SymbolBlock.imports)
        model.export(os.path.join(tmp, EXPORT_PREFIX))
    trainer.save_states(os.path.join(tmp, TRAINER))
    with open(os.path.join(tmp, VOCAB), "w") as f:
        f.write(vocab.to_json())
    with open(os.path.join(tmp, CONFIG), "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    with open(os.path.join(tmp, META), "w") as f:
        json.dump({"epoch": epoch, **meta}, f, indent=2)
    final = os.path.join(root, name)
    if os.path.exists(final):  # rewriting an epoch (a resumed run that crashed mid-save)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _write_pointer(root, "last", name)
    if is_best:
        _write_pointer(root, "best", name)
    keep = {os.path.basename(read_pointer(root, p) or "") for p in ("last", "best")}
    for entry in os.listdir(root):
        if entry.startswith("epoch-") and entry not in keep:
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
    return final


def find(path, which="last"):
    """A checkpoint directory from an output dir (its last/best) or a checkpoint dir itself."""
    if os.path.exists(os.path.join(path, META)):
        return path
    return read_pointer(os.path.join(path, "checkpoints"), which)


def load(checkpoint_dir):
    """-> dict of everything but the model parameters: meta, config, vocab json, trainer state bytes."""
    try:
        with open(os.path.join(checkpoint_dir, META)) as f:
            meta = json.load(f)
        with open(os.path.join(checkpoint_dir, CONFIG)) as f:
            config = yaml.safe_load(f)
        with open(os.path.join(checkpoint_dir, VOCAB)) as f:
            vocab_json = f.read()
        with open(os.path.join(checkpoint_dir, TRAINER), "rb") as f:
            trainer_states = f.read()
    except (OSError, ValueError) as e:
        raise UserError(f"{checkpoint_dir}: not a readable distjob checkpoint ({e})") from None
    return {"dir": checkpoint_dir, "meta": meta, "config": config, "vocab_json": vocab_json,
            "trainer_states": trainer_states}


def resolve(path, which="best"):
    """A user's CHECKPOINT argument (an output dir or a checkpoint dir) -> the checkpoint dir."""
    found = find(path, which) if os.path.isdir(path) else None
    if found is None or not os.path.isdir(found):
        raise UserError(f"{path}: no distjob checkpoint there (expected a training output dir "
                        f"holding checkpoints/{which}, or a checkpoint dir holding {META})")
    return found


def run_dir(checkpoint_dir):
    """The training output dir a checkpoint dir belongs to (itself if it was copied elsewhere)."""
    parent = os.path.dirname(os.path.abspath(checkpoint_dir))
    return os.path.dirname(parent) if os.path.basename(parent) == "checkpoints" else checkpoint_dir


def embedding_shape(checkpoint_dir):
    """(vocabulary size, width) of the embedding saved in a checkpoint's model.params."""
    try:
        return mx.nd.load(os.path.join(checkpoint_dir, MODEL))["embedding.weight"].shape
    except (mx.base.MXNetError, KeyError) as e:
        raise UserError(f"{checkpoint_dir}/{MODEL}: not readable distjob model parameters ({e})") from None


def load_model(path, ctx, exported=False):
    """-> (model, vocab, config dict) from an output dir (its best checkpoint) or a checkpoint dir.

    The embedding is in the saved parameters, so no GloVe files are needed. exported=True
    loads the graph written by model.export instead of rebuilding TopicClassifier.
    """
    checkpoint_dir = resolve(path)
    state = load(checkpoint_dir)
    config, vocab = state["config"], Vocab.from_json(state["vocab_json"])
    if exported:
        model = _import_exported(checkpoint_dir, ctx)
    else:
        shape = embedding_shape(checkpoint_dir)
        model = build_model(np.zeros(shape, np.float32), config["pooling"], config["max_tokens"], ctx,
                            PREDICT_BATCH_SIZE)
        model.load_parameters(os.path.join(checkpoint_dir, MODEL), ctx=ctx)
    return model, vocab, config


def _import_exported(checkpoint_dir, ctx):
    symbol, params = (os.path.join(checkpoint_dir, name) for name in (EXPORT_SYMBOL, EXPORT_PARAMS))
    if not os.path.exists(symbol):
        raise UserError(f"{checkpoint_dir}: no exported model ({EXPORT_SYMBOL}); it is written "
                        "with each best checkpoint")
    with warnings.catch_warnings():  # "cannot decide type for data": ids arrive as int32 at run time
        warnings.simplefilter("ignore", UserWarning)
        return mx.gluon.SymbolBlock.imports(symbol, ["data"], params, ctx=ctx)
