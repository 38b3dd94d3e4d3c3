"""Rank 0's checkpoints: one directory per save, verified by digests, never the only copy.

    output_dir/checkpoints/epoch-0003/              the end of epoch 3
    output_dir/checkpoints/epoch-0004-step-000120/  mid-epoch: 120 steps into epoch 4
        model.params, trainer.states, vocab.json, config.yaml, meta.json
        + training.params                          with --ema-decay: the trained weights (model.params: their average)
        + model-symbol.json, model-0000.params   best checkpoints: the exported graph (model.export)
    output_dir/checkpoints/last, best              one line each: a directory name (a hint for people)

meta.json records where the run was (epoch, steps, running sums, every finished epoch's
metrics), what defines its data and model (`identity`), its class names (`classes`, label 0
first), a SHA-256 of every other file, and its own (store.record_digest).
A checkpoint is used only if its record and every file match their digests, so resume takes
the newest one that verifies and reports each one that does not, moving it to
checkpoints/damaged/: nothing writes over it or prunes it. Rank 0 holds the output dir's lock
(lock.py) from its first check to the run's end. A directory is written under a temporary
name, fsynced and renamed; only then are older ones pruned, keeping the last few and the best.
"""
import dataclasses
import errno
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import mxnet as mx
import numpy as np
import yaml
from gluonnlp import Vocab

from . import lock, readers, store
from .logs import log
from .config import MODEL_FOLLOWS_FROM, Config, UserError
from .download import AGNEWS_CLASSES
from .ema import averaged
from .model import build_model
from .store import META

MODEL, TRAINER, VOCAB, CONFIG = "model.params", "trainer.states", "vocab.json", "config.yaml"
WEIGHTS = "training.params"  # with --ema-decay: the weights being trained; model.params holds their average
EXPORT_PREFIX = "model"  # model.export writes model-symbol.json and model-0000.params
EXPORT_SYMBOL, EXPORT_PARAMS = EXPORT_PREFIX + "-symbol.json", EXPORT_PREFIX + "-0000.params"
DAMAGED = "damaged"  # checkpoints/damaged/: checkpoints that did not verify, moved aside, never written over
DAMAGE = {  # what verify says of a checkpoint that does not verify
    store.MISSING: "{file}: missing",
    store.NOT_READABLE: "{file}: not readable ({error.strerror})",
    store.NOT_A_RECORD: META + ": not a distjob checkpoint record (damaged, or written by an older distjob)",
    store.CHANGED: "{file}: its contents do not match the digest saved with it (truncated or changed)",
    store.RECORD_CHANGED: META + ": its contents do not match the digest inside it (edited or damaged)",
    store.NO_DIGEST: META + ": no digest of its own (written by a distjob before records vouched for "
                            "themselves); not trusted",
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


def checkpoint_files(model, trainer, vocab, config, is_best, ema=None):
    """-> {name: bytes} of a checkpoint's files but meta.json. With an ema, model.params (and the
    export) hold the average, what the checkpoint predicts with; training.params the weights."""
    files = {}
    if ema is not None:
        files.update(mxnet_written(lambda d: model.save_parameters(os.path.join(d, WEIGHTS))))
    with averaged(ema):
        files.update(mxnet_written(lambda d: model.save_parameters(os.path.join(d, MODEL))))
        if is_best:  # graph + weights that load without distjob's model code (SymbolBlock.imports)
            files.update(mxnet_written(lambda d: model.export(os.path.join(d, EXPORT_PREFIX))))
    files.update(mxnet_written(lambda d: trainer.save_states(os.path.join(d, TRAINER))))
    files[VOCAB] = vocab.to_json().encode()
    files[CONFIG] = yaml.safe_dump(config, sort_keys=False).encode()
    return files


def write(root, name, files, record):
    """The checkpoint root/name of these files, with record as its meta.json, written
    atomically -> its path. A failed write raises UserError naming the path and the OS error,
    after removing what it wrote: the checkpoints that were there stay as they were."""
    final = os.path.join(root, name)

    def fill(tmp):
        for file, data in files.items():
            path = os.path.join(tmp, file)
            with store.naming_errors(path), open(path, "wb") as f:  # open(): the umask's modes, so others can read it
                f.write(data)

    if os.path.exists(final) and verify(final):
        log.warning("checkpoint %s does not verify: moved to %s", final, set_aside(final))
    try:
        os.makedirs(root, exist_ok=True)
        store.write_dir(final, fill, record, replace=True)  # there already, and verified: the same point again
    except OSError as e:  # named as the checkpoint, or the file of it being written
        target = e.filename if str(e.filename).startswith(final + os.sep) else final
        raise UserError(f"{target}: could not save the checkpoint: {e.strerror or e}; "
                        "the checkpoints saved before are intact") from None
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
    found, damaged = verified_and_damaged(output_dir)
    for path, problem in damaged:
        report(f"skipping checkpoint {path}: {problem}")
    return found


def verified_and_damaged(output_dir):
    """-> (the checkpoints that verify, oldest first; [(path, why not)] of those that do not)."""
    found, damaged = [], []
    for path in _checkpoint_dirs(output_dir):
        problem = verify(path)
        if problem:
            damaged.append((path, problem))
        else:
            found.append(Checkpoint(path, store.read_record(path)))
    return found, damaged


def set_aside(path):
    """Move a checkpoint that does not verify to checkpoints/damaged/ (a free name there), so
    that nothing writes over it or prunes it -> its new path."""
    root = os.path.join(os.path.dirname(path), DAMAGED)
    name, n = os.path.basename(path), 1
    target = os.path.join(root, name)
    try:
        os.makedirs(root, exist_ok=True)
        while os.path.lexists(target):
            n += 1
            target = os.path.join(root, f"{name}.{n}")
        os.rename(path, target)
    except OSError as e:
        raise UserError(f"{path}: does not verify, and cannot be moved aside to {target}: "
                        f"{e.strerror or e}") from None
    return target


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


def selection_key(record):
    """Epochs compare by selection accuracy, and among equal ones by the lower loss on the same
    rows: 500 validation rows often give several epochs the same accuracy."""
    return selection_accuracy(record), -(record["val_loss"] if "val_accuracy" in record else record["test_loss"])


def best_of(checkpoints):
    """The finished epoch with the best selection_key (the earliest of equals)."""
    finished = [c for c in checkpoints if c.meta["finished"]]
    return max(finished, key=lambda c: (selection_key(c.meta), -c.meta["epoch"]), default=None)


def prune(output_dir, keep_last):
    """Remove the checkpoints that verify but are older than the newest keep_last, except the
    best. One that does not verify is never removed: resume moves it aside."""
    good = scan(output_dir, report=lambda line: None)
    best = best_of(good)
    keep = {c.dir for c in good[-keep_last:]} | ({best.dir} if best else set())
    for checkpoint in good:
        if checkpoint.dir not in keep:
            shutil.rmtree(checkpoint.dir, ignore_errors=True)


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


def take_output_dir(output_dir_lock, output_dir):
    """The run's lock on its output dir, or one line saying who holds it (UserError, exit 2)."""
    try:
        previous = output_dir_lock.acquire()
    except lock.InUse as e:
        raise UserError(f"--output-dir {output_dir}: in use by another run ({e}); wait for it to end, "
                        "or choose another --output-dir") from None
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
            raise UserError(f"--output-dir {output_dir}: its file system does not support locks "
                            f"({e.strerror}), so the run cannot own it; choose a local or NFS directory "
                            "mounted with locking") from None
        raise UserError(f"--output-dir {output_dir}: cannot write there: {e.strerror} ({e.filename})") from None
    if previous:
        log.info("took over the lock of %s, left by a run that ended (%s)", output_dir_lock.path,
                 lock.describe(previous))


def remove_interrupted_saves(output_dir):
    """Directories a save left behind when it was killed: never a checkpoint, always removable."""
    return store.remove_interrupted(os.path.join(output_dir, "checkpoints"))


@dataclass
class Saved:
    """A checkpoint's contents but the model parameters (rank 0 reads them; every rank gets a copy)."""
    dir: str
    meta: dict
    config: dict
    vocab_json: str
    trainer_states: bytes


def load(checkpoint_dir):
    """-> the Saved checkpoint at checkpoint_dir."""
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
    return Saved(checkpoint_dir, meta, config, vocab_json, trainer_states)


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
    saved = load(checkpoint_dir)
    config, vocab, classes = saved.config, Vocab.from_json(saved.vocab_json), class_names(saved.meta)
    if exported:
        model = _import_exported(checkpoint_dir, ctx)
    else:
        shape = embedding_shape(checkpoint_dir)
        model = build_model(np.zeros(shape, np.float32), config["pooling"], config["max_tokens"], ctx,
                            num_classes=len(classes), head_width=config.get("head_width", 128))
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


# ---- one run's checkpoints: what it resumes, when it saves ------------------------------
NOT_LOGGED = ("output_dir", "resume", "progress")  # settings whose change on resume says nothing


def run_identity(cfg):
    """What a checkpoint resumes only into: the settings the rows and the model follow from,
    and the data files by content."""
    identity = {key: getattr(cfg, key) for key in MODEL_FOLLOWS_FROM}
    identity["embedding"] = os.path.basename(cfg.embedding)  # the vectors, wherever the file is now
    identity["data"] = {os.path.basename(path): store.file_digest(path) for path in readers.input_files(cfg)}
    return identity


def identity_changes(saved, current):
    """-> what differs between a checkpoint's run identity and this run's, one phrase each."""
    # A setting newer than the checkpoint had, then, the one value there was: its default.
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    changes = [f"--{key.replace('_', '-')} {current[key]} (the checkpoint's run: {saved.get(key, defaults[key])})"
               for key in MODEL_FOLLOWS_FROM if saved.get(key, defaults[key]) != current[key]]
    old, new = saved.get("data", {}), current["data"]
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            changes.append(f"{name} " + ("is not read now" if name not in new else "was not read before"
                                         if name not in old else "has other contents"))
    return changes


def find_resume(cfg, identity, world_size):
    """Rank 0, before any work: the newest checkpoint that verifies, if --resume wants one and
    it is this run's -> Saved or None.
    Those that do not verify are moved aside (checkpoints/damaged/), one line each."""
    found, damaged = verified_and_damaged(cfg.output_dir)
    root = os.path.join(cfg.output_dir, "checkpoints")
    if not found and cfg.resume == "require":
        raise UserError(f"--resume: no checkpoint in {root} to resume from"
                        + (f" ({len(damaged)} there do not verify: {damaged[-1][1]})" if damaged else ""))
    if found and cfg.resume == "never":
        raise UserError(f"--resume never: {cfg.output_dir} already holds checkpoints; choose another "
                        "--output-dir or move that one away")
    for path, problem in damaged:
        log.warning("skipping checkpoint %s: %s; moved it to %s", path, problem, set_aside(path))
    if not found:
        if damaged:
            log.warning("starting from scratch (epoch 1): none of the %d checkpoint(s) in %s verified",
                        len(damaged), root)
        return None
    saved = load(found[-1].dir)
    check_identity(cfg, saved, identity)
    log_changes(cfg, saved, world_size)
    return saved


def check_identity(cfg, saved, identity):
    changes = identity_changes(saved.meta["identity"], identity)
    if changes:
        raise UserError(f"--output-dir {cfg.output_dir} holds another run's checkpoints: "
                        f"{'; '.join(changes)}. Rerun with the settings it was trained with to "
                        "resume it, or start fresh with another --output-dir")


def saved_world_size(meta):
    """The world size a checkpoint was saved by (older ones: its last finished epoch's), or None."""
    history = meta.get("history") or [{}]
    return meta.get("world_size", history[-1].get("world_size"))


def log_changes(cfg, saved, world_size):
    """One line for the settings (and the world size) that differ from the checkpoint's run."""
    changed = [f"{key} {value} -> {getattr(cfg, key)}" for key, value in saved.config.items()
               if key not in NOT_LOGGED and value != getattr(cfg, key, value)]
    before = saved_world_size(saved.meta)
    if before is not None and before != world_size:
        changed.append(f"world size {before} -> {world_size} worker(s)")
    if changed:
        log.info("resuming with changed settings: %s", ", ".join(changed))


class CheckpointManager:
    """One run's checkpoints, for the loop to ask: before any work, what to resume (rank 0);
    at each step, whether a save is due (every rank, the same answer); rank 0 saves and prunes."""

    def __init__(self, cfg, is_root, world_size=1):
        self.cfg, self.is_root, self.world_size = cfg, is_root, world_size
        self.identity = self.vocab = self.classes = None  # rank 0's, known before it saves
        self.last_saved = time.time()
        self.lock = lock.OutputDirLock(cfg.output_dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """The output dir's lock released (rank 0): another run may write there now."""
        self.lock.release()

    def check_and_find(self):
        """Rank 0, before any work: the output dir locked for this run, interrupted saves
        removed, the output dir writable, the checkpoint to resume -> Saved or None."""
        take_output_dir(self.lock, self.cfg.output_dir)
        for path in remove_interrupted_saves(self.cfg.output_dir):
            log.info("removed %s, left by an interrupted save", path)
        check_writable(self.cfg.output_dir)
        self.identity = run_identity(self.cfg)
        return find_resume(self.cfg, self.identity, self.world_size)

    def due(self, steps_done, control, loss_sum, where):
        """After a step that is not the epoch's last -> "stop" (a signal: save, then stop), "save"
        or None. --checkpoint-every-steps counts steps, the same on every rank;
        --checkpoint-every-minutes is rank 0's clock and a signal any rank's, shared by control."""
        minutes = self.cfg.checkpoint_every_minutes
        clock_due = bool(self.is_root and minutes and time.time() - self.last_saved >= 60 * minutes)
        decision = control.after_step(steps_done, loss_sum, clock_due, where)
        every = self.cfg.checkpoint_every_steps
        return decision or ("save" if every and steps_done % every == 0 else None)

    def save(self, state, model, trainer, record=None, is_best=False, ema=None):
        """Rank 0: a checkpoint of state (the end of its epoch when record, the epoch's metrics,
        is given; else where it is mid-epoch), then prune -> its directory."""
        finished = record is not None
        name = dir_name(state.epoch, state.steps, finished)
        meta = {"epoch": state.epoch, "steps": state.steps, "finished": finished, "world_size": self.world_size,
                "identity": self.identity, "classes": self.classes, "history": state.history,
                **(record if finished else state.to_meta())}
        files = checkpoint_files(model, trainer, self.vocab, self.cfg.to_dict(), is_best, ema)
        root = os.path.join(self.cfg.output_dir, "checkpoints")
        path = write(root, name, files, meta)
        for pointer in ("last", "best") if is_best else ("last",):
            _write_pointer(root, pointer, name)
        prune(self.cfg.output_dir, self.cfg.keep_checkpoints)
        self.last_saved = time.time()
        return path
