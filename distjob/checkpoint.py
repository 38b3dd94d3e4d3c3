"""Rank 0's checkpoints: one directory per save, verified by digests, never the only copy.

    output_dir/checkpoints/epoch-0003/              the end of epoch 3
    output_dir/checkpoints/epoch-0004-step-000120/  mid-epoch: 120 steps into epoch 4
        model.params, trainer.states, vocab.json, config.yaml, meta.json
        + model-symbol.json, model-0000.params   best checkpoints: the exported graph (model.export)
    output_dir/checkpoints/last, best              one line each: a directory name (a hint for people)

meta.json records where the run was (epoch, steps, running sums, every finished epoch's
metrics), what defines its data and model (`identity`), its class names (`classes`, label 0
first), and a SHA-256 of every other file.
A checkpoint is used only if every file matches its digest, so resume takes the newest one
that verifies and reports each one that does not. A directory is written under a temporary
name, fsynced and renamed; only then are older ones pruned, keeping the last few and the best.
"""
import json
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass

import mxnet as mx
import numpy as np
import yaml
from gluonnlp import Vocab

from . import store
from .config import UserError
from .download import AGNEWS_CLASSES
from .model import build_model
from .store import META

MODEL, TRAINER, VOCAB, CONFIG = "model.params", "trainer.states", "vocab.json", "config.yaml"
EXPORT_PREFIX = "model"  # model.export writes model-symbol.json and model-0000.params
EXPORT_SYMBOL, EXPORT_PARAMS = EXPORT_PREFIX + "-symbol.json", EXPORT_PREFIX + "-0000.params"
DAMAGE = {  # what verify says of a checkpoint that does not verify
    store.MISSING: "{file}: missing",
    store.NOT_READABLE: "{file}: not readable ({error.strerror})",
    store.NOT_A_RECORD: META + ": not a distjob checkpoint record (damaged, or written by an older distjob)",
    store.CHANGED: "{file}: its contents do not match the digest saved with it (truncated or changed)",
}


@dataclass
class Checkpoint:
    dir: str
    meta: dict


def dir_name(epoch, steps, finished):
    return f"epoch-{epoch:04d}" if finished else f"epoch-{epoch:04d}-step-{steps:06d}"


def position(name):
    """A checkpoint directory's place in the run, comparable: the end of an epoch comes after
    every mid-epoch checkpoint of it. None for a name dir_name did not make."""
    parts = name.split("-")
    try:
        if len(parts) == 2 and parts[0] == "epoch":
            return int(parts[1]), float("inf")
        if len(parts) == 4 and parts[0] == "epoch" and parts[2] == "step":
            return int(parts[1]), int(parts[3])
    except ValueError:
        pass
    return None


def mxnet_written(save):
    """-> {name: bytes} of the files save(dir) writes. MXNet's own writer reports a full disk as
    'FileStream.Write incomplete', naming neither file nor reason: it writes to a scratch dir
    here, and python writes the checkpoint, so a failure is an OSError with its errno."""
    with tempfile.TemporaryDirectory(prefix="distjob-save-") as scratch:
        try:
            save(scratch)
        except mx.base.MXNetError as e:
            raise UserError(f"{scratch}: MXNet could not write a checkpoint file to this scratch "
                            f"dir (set TMPDIR to another): {str(e).strip().splitlines()[0]}") from None
        files = {}
        for name in os.listdir(scratch):
            with open(os.path.join(scratch, name), "rb") as f:
                files[name] = f.read()
        return files


def save(output_dir, progress, model, trainer, vocab, config, meta, is_best, keep_last):
    """Write a checkpoint at progress (epoch, steps done in it, epoch finished) and prune.
    -> its directory. A failed write raises UserError naming the path and the OS error, after
    removing what it wrote: the checkpoints that were there stay as they were."""
    root = os.path.join(output_dir, "checkpoints")
    epoch, steps, finished = progress
    name = dir_name(epoch, steps, finished)
    files = mxnet_written(lambda d: model.save_parameters(os.path.join(d, MODEL)))
    if is_best:  # graph + weights that load without distjob's model code (SymbolBlock.imports)
        files.update(mxnet_written(lambda d: model.export(os.path.join(d, EXPORT_PREFIX))))
    files.update(mxnet_written(lambda d: trainer.save_states(os.path.join(d, TRAINER))))
    files[VOCAB] = vocab.to_json().encode()
    files[CONFIG] = yaml.safe_dump(config, sort_keys=False).encode()
    record = {"epoch": epoch, "steps": steps, "finished": finished, **meta}
    final = os.path.join(root, name)

    def fill(tmp):
        for file, data in files.items():
            with open(os.path.join(tmp, file), "wb") as f:  # open(): the umask's modes, so others can read it
                f.write(data)

    try:
        os.makedirs(root, exist_ok=True)
        store.write_dir(final, fill, record, replace=True)  # there already: a resumed run that stopped mid-save
    except OSError as e:  # named as the checkpoint, or the file of it being written
        target = e.filename if str(e.filename).startswith(final + os.sep) else final
        raise UserError(f"{target}: could not save the checkpoint: {e.strerror or e}; "
                        "the checkpoints saved before are intact") from None
    for pointer in ("last", "best") if is_best else ("last",):
        _write_pointer(root, pointer, name)
    prune(output_dir, keep_last)
    return final


def _write_pointer(root, name, target):
    try:
        store.write_file(os.path.join(root, name), target + "\n")
    except OSError:  # a hint only: the directories are the record
        pass


def verify(checkpoint_dir):
    """-> None if every file of the checkpoint matches its recorded digest, else why not."""
    return store.verify(checkpoint_dir, DAMAGE)


def scan(output_dir, report):
    """-> the output dir's checkpoints that verify, oldest first. Each one that does not is
    reported in one line (report(line)) and left out."""
    found = []
    for path in _checkpoint_dirs(output_dir):
        problem = verify(path)
        if problem:
            report(f"skipping checkpoint {path}: {problem}")
            continue
        found.append(Checkpoint(path, store.read_record(path)))
    return found


def _checkpoint_dirs(output_dir):
    """The output dir's checkpoint directories, oldest first."""
    root = os.path.join(output_dir, "checkpoints")
    try:
        names = [name for name in os.listdir(root) if position(name) is not None]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(root, name) for name in sorted(names, key=position)]


def selection_accuracy(record):
    """What chooses the best epoch: its validation accuracy, or without a validation set its test accuracy."""
    return record["val_accuracy"] if "val_accuracy" in record else record["test_accuracy"]


def best_of(checkpoints):
    """The finished epoch with the highest selection accuracy (the earliest of equals)."""
    finished = [c for c in checkpoints if c.meta["finished"]]
    return max(finished, key=lambda c: (selection_accuracy(c.meta), -c.meta["epoch"]), default=None)


def prune(output_dir, keep_last):
    """Remove what is older than the newest keep_last checkpoints that verify, except the best:
    nothing goes unless a newer checkpoint verifies."""
    good = scan(output_dir, report=lambda line: None)
    if not good:
        return
    best = best_of(good)
    keep = {c.dir for c in good[-keep_last:]} | ({best.dir} if best else set())
    newest = position(os.path.basename(good[-1].dir))
    for path in _checkpoint_dirs(output_dir):
        if path not in keep and position(os.path.basename(path)) < newest:
            shutil.rmtree(path, ignore_errors=True)


def check_writable(output_dir):
    """Before any work: a real write into output_dir/checkpoints, so that a read-only, full or
    impossible path fails now, in one line, not after an epoch of training. Directories the
    check made are removed again: a run that fails later leaves nothing behind."""
    root = os.path.abspath(os.path.join(output_dir, "checkpoints"))
    made, path = [], root
    while not os.path.lexists(path):
        made.append(path)
        path = os.path.dirname(path)
    probe = os.path.join(root, f".write-test-{os.getpid()}")
    try:
        os.makedirs(root, exist_ok=True)
        store.write_file(probe, b"distjob")
        os.remove(probe)
    except OSError as e:
        raise UserError(f"--output-dir {output_dir}: cannot write there: {e.strerror} "
                        f"({e.filename})") from None
    finally:
        for path in made:  # innermost first
            try:
                os.rmdir(path)
            except OSError:
                pass


def remove_interrupted_saves(output_dir):
    """Directories a save left behind when it was killed: never a checkpoint, always removable."""
    return store.remove_interrupted(os.path.join(output_dir, "checkpoints"))


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
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UserError(f"{checkpoint_dir}: not a readable distjob checkpoint ({e})") from None
    return {"dir": checkpoint_dir, "meta": meta, "config": config, "vocab_json": vocab_json,
            "trainer_states": trainer_states}


def resolve(path, which="best"):
    """A user's CHECKPOINT argument -> a checkpoint dir that verifies: a training output dir's
    best (or last) checkpoint, or a checkpoint dir itself."""
    if os.path.exists(os.path.join(path, META)):
        problem = verify(path)
        if problem:
            raise UserError(f"{path}: {problem}")
        return path
    good = scan(path, report=lambda line: print(f"distjob: {line}", file=sys.stderr))
    found = (best_of(good) if which == "best" else None) or (good[-1] if good else None)
    if found is None:
        raise UserError(f"{path}: no distjob checkpoint there (expected a training output dir "
                        f"holding checkpoints/epoch-*, or a checkpoint dir holding {META})")
    return found.dir


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


def class_names(meta):
    """The class names a checkpoint's model was trained on, label 0 first. Checkpoints from
    before they were recorded are AG News's: the only data set distjob trained then."""
    return meta.get("classes", list(AGNEWS_CLASSES))


def load_model(path, ctx, exported=False):
    """-> (model, vocab, config dict, class names) from an output dir (its best checkpoint) or
    a checkpoint dir.

    The embedding is in the saved parameters, so no GloVe files are needed. exported=True
    loads the graph written by model.export instead of rebuilding TopicClassifier.
    """
    checkpoint_dir = resolve(path)
    state = load(checkpoint_dir)
    config, vocab, classes = state["config"], Vocab.from_json(state["vocab_json"]), class_names(state["meta"])
    if exported:
        model = _import_exported(checkpoint_dir, ctx)
    else:
        shape = embedding_shape(checkpoint_dir)
        model = build_model(np.zeros(shape, np.float32), config["pooling"], config["max_tokens"], ctx,
                            num_classes=len(classes))
        model.load_parameters(os.path.join(checkpoint_dir, MODEL), ctx=ctx)
    return model, vocab, config, classes


def _import_exported(checkpoint_dir, ctx):
    symbol, params = (os.path.join(checkpoint_dir, name) for name in (EXPORT_SYMBOL, EXPORT_PARAMS))
    if not os.path.exists(symbol):
        raise UserError(f"{checkpoint_dir}: no exported model ({EXPORT_SYMBOL}); it is written "
                        "with each best checkpoint")
    with warnings.catch_warnings():  # "cannot decide type for data": ids arrive as int32 at run time
        warnings.simplefilter("ignore", UserWarning)
        return mx.gluon.SymbolBlock.imports(symbol, ["data"], params, ctx=ctx)
