"""Train a text classifier (AG News, or any data set of its layout), data-parallel with Horovod.

    text -> ids -> frozen GloVe embedding -> pooled vector -> Dense 128 -> 64 -> K classes -> loss

    python -m distjob.train --test-mode                        # one CPU, generated data
    python -m distjob.train --data-dir DIR --config configs/agnews.yaml
    horovodrun -np 4 python -m distjob.train --data-dir DIR    # 4 workers

Rank 0 evaluates, checkpoints and writes reports; a rerun with the same output dir continues
from the newest checkpoint that verifies. SIGTERM or SIGINT stops every rank at one step,
after rank 0 has checkpointed it.
"""
import json
import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Optional

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np
import yaml
from mxnet import autograd

from . import pooled, prepare, readers, store
from .checkpoint import MODEL, WEIGHTS, CheckpointManager, resolve, saved_world_size, selection_key
from .config import Config, Stopped, UserError, parse_config
from .distributed import (HorovodWorld, RankControl, broadcast_object, errors_reach_every_rank, from_local_rank_0,
                          init_horovod, run_horovod_main, shard_rows)
from .ema import DenseEMA, averaged
from .embeddings import check_glove_file, embedding_matrix, load_glove
from .logs import log, setup_logging
from .machine import available_memory_bytes, cpu_cores, memory_mb, pick_context
from .model import TopicClassifier, build_model, parameter_counts, pooled_classifier, pooled_width, pooling_named, \
    row_blocks_for
from .optimizer import FusedAdam, WorldChangeWarmup, load_states
from .reports import RunLog, read_jsonl, write_report
from .scoring import StepLoss, loss_and_accuracy, predict_probs
from .state import TrainState


@dataclass
class Job:
    """What a run trains with, set up once: this rank's place and device, its rows as ids, the
    model, what a step runs and on which inputs, and the trainer."""
    cfg: Config
    world: HorovodWorld
    ctx: mx.Context
    data: prepare.Prepared
    model: TopicClassifier  # evaluated, checkpointed and reported on: always from ids
    step_model: mx.gluon.HybridBlock  # what a step runs: the model, or its dense layers on pooled vectors
    train_inputs: np.ndarray  # mapped read-only: the training rows' ids, or their pooled vectors
    trainer: hvd.DistributedTrainer
    loss: StepLoss
    batch_size: int  # rows per step on each rank
    ema: Optional[DenseEMA]  # rank 0's average of the dense weights (--ema-decay), else None

    @property
    def is_root(self):
        return self.world.rank == 0


def train(cfg):
    # --- Horovod step 1: one process per device, this one pinned to its local GPU (or CPU).
    world, ctx = start_worker(cfg)
    # Rank 0 owns the output dir (a lock) from its first check until the run ends, however it ends.
    with CheckpointManager(cfg, world.rank == 0, world.size) as checkpoints:
        saved = check_before_work(cfg, world, checkpoints)
        prepared = prepared_ids(cfg, world, saved)  # text -> ids
        batch_size = batch_for(cfg, len(prepared.train_ids), world)  # before the model: its row blocks follow it
        model = make_model(cfg, prepared, ctx, batch_size)  # ids -> frozen GloVe -> pooled vector -> dense layers
        ema = load_weights(cfg, model, saved, ctx) if world.rank == 0 else None
        step_model, train_inputs = training_inputs(cfg, world, prepared, model)  # pooled once, or ids every step

        # --- Horovod step 2: every rank starts from rank 0's dense weights.
        hvd.broadcast_parameters(model.trainable_params(), root_rank=0)

        # --- Horovod step 3: a DistributedTrainer averages the dense layers' gradients every step.
        trainer = make_trainer(cfg, model, len(prepared.train_ids), world.size, batch_size, saved)
        job = Job(cfg, world, ctx, prepared, model, step_model, train_inputs, trainer,
                  StepLoss(cfg.label_smoothing, len(prepared.classes)), batch_size, ema)
        checkpoints.vocab, checkpoints.classes = prepared.vocab, prepared.classes
        state = TrainState.from_meta(saved.meta) if saved else TrainState()
        if saved:
            log.info("resumed from %s (epoch %d%s)", saved.dir, saved.meta["epoch"],
                     "" if saved.meta["finished"] else f", step {saved.meta['steps']}")

        runlog = RunLog(cfg, job.is_root, state.history, trainer.optimizer.num_update)
        control = RankControl(ctx)  # from here on a signal stops every rank at the same step
        checkpoints.last_saved = time.time()  # --checkpoint-every-minutes counts from the first step
        try:
            while state.epoch <= cfg.epochs:
                # --- Horovod step 4: each rank trains on its own shard of the epoch.
                totals = run_epoch(job, state, checkpoints, control, runlog)
                # --- Horovod step 5: rank 0 alone evaluates and checkpoints.
                if end_epoch(job, state, checkpoints, control, runlog, totals):
                    break  # early stopping
        finally:
            control.close()
            runlog.close()
        peak, pss = memory_mb()
        log.debug("memory: peak RSS %.0f MB, PSS %s MB", peak, "?" if pss is None else f"{pss:.0f}")
        with errors_reach_every_rank():
            if job.is_root:
                write_final_report(job)


# ---- set-up: everything before the first step -------------------------------------------
def start_worker(cfg):
    """Horovod up, this rank's logs and seeds, its device -> (HorovodWorld, context)."""
    world = init_horovod()  # Horovod's cycle set before init, Gloo's busy-polling threads after
    setup_logging(world.rank, world.size, cfg.log_level)
    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    with errors_reach_every_rank():  # an error on any rank stops every rank, in one line
        ctx = pick_context(cfg.ctx, world.local_rank)
    log.info("world of %d worker(s), training on %s, CPU cores %s; Horovod cycle %g ms, "
             "%d Gloo thread(s) at SCHED_IDLE", world.size, ctx, cpu_cores(), world.cycle_ms,
             len(world.idle_threads))
    if world.rank == 0:  # what runs: defaults < --test-mode preset < YAML < flags
        log.info("config:\n%s", yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())
    return world, ctx


def check_before_work(cfg, world, checkpoints):
    """Everything that can be checked before any work is: the learning rates derived from the
    flags, the inputs, GloVe's file, the output dir (rank 0 locks it) and the checkpoint to
    resume -> Saved or None."""
    resumed = None
    with errors_reach_every_rank():
        check_derived_rates(cfg, world.size)
        readers.check_inputs(cfg)
        check_glove_file(cfg.embedding, cfg.embedding_root)
        if world.rank == 0:
            resumed = checkpoints.check_and_find()
    # Rank 0 read the checkpoint (if any) and hands every rank the same copy, so workers need
    # not see rank 0's disk.
    return broadcast_object(resumed, name="resume")


def prepared_ids(cfg, world, saved):
    """text -> ids, once per data set: local rank 0 of each host prepares them (or checks the
    copy its cache holds) while the others wait; then every rank maps them read-only."""
    with errors_reach_every_rank():
        path = None
        if world.local_rank == 0:
            path, seconds = prepare.ensure(cfg)
            if seconds:
                log.info("prepared the ids in %s: %s", path, ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
    # This exchange is the wait: after it, every host's ids are ready, and no other rank digests the inputs.
    path = from_local_rank_0(path, name="prepared")
    with errors_reach_every_rank():
        prepared = prepare.open_prepared(path)
        if saved and saved.vocab_json != prepared.vocab.to_json():
            raise UserError(f"{prepared.path}: its vocabulary is not the checkpoint's; delete that directory "
                            "to prepare the ids again")
    n_val = 0 if prepared.val_ids is None else len(prepared.val_ids)
    log.info("data: %s; %d training, %d validation and %d test rows; vocabulary of %d (%d words, "
             "padding and unknown); ids in %s", prepared.source, len(prepared.train_ids), n_val,
             len(prepared.test_ids), len(prepared.vocab), len(prepared.vocab) - 2, prepared.path)
    if prepared.val_ids is None:
        log.warning("--validation-size 0: the test set chooses the best epoch and stops early, so "
                    "its accuracy is optimistic")
    warn_of_absent_classes(prepared, world.rank == 0)
    return prepared


def warn_of_absent_classes(prepared, is_root):
    """A class with no training row is one the model never learns to predict: say which."""
    counts = np.bincount(np.asarray(prepared.train_labels), minlength=len(prepared.classes))
    absent = [name for name, count in zip(prepared.classes, counts) if count == 0]
    if absent and is_root:
        log.warning("%d of the %d classes have no training rows, so the model never predicts them: %s",
                    len(absent), len(prepared.classes), ", ".join(absent))


def make_model(cfg, prepared, ctx, batch_size):
    """The model, its row blocks sized for batch_size rows, its embedding the vocabulary's
    frozen GloVe vectors: every rank builds that matrix itself, so it is never sent."""
    with errors_reach_every_rank():
        glove_tokens, glove_vectors = load_glove(cfg.embedding, cfg.embedding_root)
    vocab = prepared.vocab
    glove_matrix, covered = embedding_matrix(vocab.idx_to_token, glove_tokens, glove_vectors)
    log.info("embedding %s: %d-d, GloVe covers %d of %d vocabulary tokens (%.1f%%)", cfg.embedding,
             glove_matrix.shape[1], covered, len(vocab) - 1, 100 * covered / max(len(vocab) - 1, 1))
    with errors_reach_every_rank():
        check_step_memory(cfg, batch_size, glove_matrix.shape[1], ctx)
    model = build_model(glove_matrix, cfg.pooling, cfg.max_tokens, ctx, batch_size,
                        num_classes=len(prepared.classes), dropout=cfg.dropout, head_width=cfg.head_width)
    frozen, trainable = parameter_counts(model)
    log.info("model: %s pooling, %d frozen (embedding) + %d trainable (dense) parameters",
             cfg.pooling, frozen, trainable)
    return model


def training_inputs(cfg, world, prepared, model):
    """-> (the block a step runs, the training rows it takes). A pooling with no learned weights
    (POOLINGS' pooled_once) under --pool-once: every training text's pooled vector, computed once
    per data set by local rank 0 of each host (pooled.py) and mapped read-only by every rank, and
    the model's dense layers on them. Otherwise the ids, and the whole model."""
    if not (cfg.pool_once and pooling_named(cfg.pooling).pooled_once):
        return model, prepared.train_ids
    with errors_reach_every_rank():
        path = None
        if world.local_rank == 0:
            path, seconds = pooled.ensure(cfg, prepared, model)
            if seconds is not None:
                log.info("pooled the training rows' vectors into %s in %.2f s", path, seconds)
    path = from_local_rank_0(path, name="pooled")  # the wait: after it, every host's vectors are ready
    with errors_reach_every_rank():
        vectors = pooled.open_pooled(path)
    log.info("training the dense layers on %s pooled vectors (%d x %d, once per data set) in %s",
             cfg.pooling, *vectors.shape, path)
    return pooled_classifier(model), vectors


def load_weights(cfg, model, saved, ctx):
    """Rank 0: the checkpoint's weights into the model, if resuming -> the average of the dense
    weights under --ema-decay (the checkpoint's model.params, or the weights where it saved none), else None."""
    if saved:
        model.load_parameters(os.path.join(saved.dir, MODEL), ctx=ctx)  # the average, where it saved one
    ema = DenseEMA(model.trainable_params(), cfg.ema_decay) if cfg.ema_decay else None
    if saved and os.path.exists(os.path.join(saved.dir, WEIGHTS)):
        model.load_parameters(os.path.join(saved.dir, WEIGHTS), ctx=ctx)
    return ema


def make_trainer(cfg, model, n_train_rows, world_size, batch_size, saved=None):
    """-> the trainer for batch_size rows per step on each rank, with a checkpoint's optimizer
    state when one is saved."""
    # The embedding is not given to the trainer, so it is never allreduced or updated.
    # num_groups=1: all gradients go out as one grouped allreduce per step, not one per
    # tensor; FusedAdam: Adam's update of all tensors in one call (both faster on CPU;
    # python -m distjob.bench measures them).
    lr, steps_per_epoch = scaled_lr(cfg, world_size), n_train_rows // world_size // batch_size
    schedule = lr_schedule(cfg, lr, steps_per_epoch, world_size)
    trainer = hvd.DistributedTrainer(
        model.trainable_params(),
        FusedAdam(learning_rate=lr, wd=cfg.weight_decay, lr_scheduler=schedule, max_grad_norm=cfg.clip_grad_norm),
        compression=hvd.Compression.fp16 if cfg.compression == "fp16" else hvd.Compression.none,
        num_groups=1)
    log.info("learning rate %g (--lr %g x %d scaled for the workers)%s", lr, cfg.lr,
             world_size if cfg.scale_lr else 1, describe(schedule, cfg))
    if saved:  # the saved moments and update count, with this run's schedule and clipping
        schedule = after_world_change(cfg, schedule, lr, saved, world_size, steps_per_epoch)
        load_states(trainer, saved.trainer_states, schedule, cfg.clip_grad_norm)
        if schedule is None:
            trainer.set_learning_rate(lr)  # the world size may differ from the saved run's
    return trainer


def scaled_lr(cfg, world_size):
    """--lr, multiplied by the workers under --scale-lr (the linear scaling rule)."""
    return cfg.lr * world_size if cfg.scale_lr else cfg.lr


def batch_for(cfg, n_train_rows, world):
    """Rows per step on each rank (rows_per_step), said in one line when not --batch-size."""
    with errors_reach_every_rank():
        batch_size = rows_per_step(cfg, n_train_rows, world.size)
    if batch_size < cfg.batch_size:
        log.info("--batch-size %d is more than each of %d worker(s) has of the %d training rows: "
                 "%d rows per step", cfg.batch_size, world.size, n_train_rows, batch_size)
    return batch_size


def rows_per_step(cfg, n_train_rows, world_size):
    """--batch-size, or all of each rank's rows when it has fewer (a small data set)."""
    if n_train_rows < world_size:
        raise UserError(f"{n_train_rows} training row(s) for {world_size} workers: each needs at least one; "
                        "fewer workers, or more data")
    return min(cfg.batch_size, n_train_rows // world_size)


def check_step_memory(cfg, batch_size, embed_dim, ctx):
    """Before the model is built: a step's embedded vectors (B, T, D) and their pooled copy, in
    row blocks on CPU, must fit this host's available memory, or the run swaps and stalls."""
    available = available_memory_bytes()
    if ctx.device_type != "cpu" or available is None:
        return
    blocks = row_blocks_for(batch_size, cfg.max_tokens, embed_dim, cfg.pooling, ctx)
    vectors = 4 * cfg.max_tokens * embed_dim * -(-batch_size // blocks)
    needed = 2 * vectors + 4 * batch_size * pooled_width(cfg.pooling, embed_dim, cfg.max_tokens) * 4
    if needed > available:
        raise UserError(f"--batch-size {cfg.batch_size}: a step of {batch_size} rows needs about "
                        f"{needed / 2**30:.1f} GiB for its vectors, more than the {available / 2**30:.1f} GiB "
                        f"this host has available; use a smaller --batch-size (or another --pooling)")


def check_derived_rates(cfg, world_size):
    """Before any work: every learning rate the optimizer will use (--lr scaled for the workers,
    the schedule's floor) finite in float32, the precision MXNet's optimizers compute in."""
    lr = scaled_lr(cfg, world_size)
    limit = float(np.finfo(np.float32).max)
    for value, what in ((lr, f"--lr {cfg.lr:g} x {world_size if cfg.scale_lr else 1} worker(s)"),
                        (lr * cfg.lr_floor, f"--lr-floor {cfg.lr_floor:g} x that")):
        if not (math.isfinite(value) and abs(value) <= limit):
            raise UserError(f"{what} is {value:g}, beyond the float32 range the optimizer computes in "
                            f"(at most {limit:.3g}); use a smaller --lr")


def lr_schedule(cfg, lr, steps_per_epoch, world_size):
    """MXNet's scheduler for --lr-schedule with its warmup, as a function of the optimizer's
    update count, which checkpoints save: a resumed run continues the same curve. None: lr throughout."""
    warmup = cfg.warmup_steps
    if warmup is None:  # a learning rate scaled up for many workers needs a warmup (Goyal et al.)
        warmup = steps_per_epoch if cfg.scale_lr and world_size > 1 else 0
    total = max(cfg.epochs * steps_per_epoch, 1)
    warmup = min(warmup, total - 1)
    if cfg.lr_schedule == "constant" and not warmup:
        return None
    kind = {"constant": dict(pwr=0), "linear": dict(pwr=1)}.get(cfg.lr_schedule)
    if kind is None:
        return mx.lr_scheduler.CosineScheduler(total, base_lr=lr, final_lr=lr * cfg.lr_floor, warmup_steps=warmup)
    return mx.lr_scheduler.PolyScheduler(total, base_lr=lr, final_lr=lr * cfg.lr_floor, warmup_steps=warmup, **kind)


def after_world_change(cfg, schedule, lr, saved, world_size, steps_per_epoch):
    """A resume on another number of workers (distjob.launch's restarts), with --scale-lr: the
    schedule, entered by a ramp from the saved world's learning rate (a lower one at once)."""
    saved_world = saved_world_size(saved.meta)
    if not cfg.scale_lr or not saved_world or saved_world == world_size:
        return schedule
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else steps_per_epoch
    log.info("world of %d worker(s), the checkpoint's had %d: learning rate x %d/%d%s", world_size, saved_world,
             world_size, saved_world, f", reached over {warmup} steps" if saved_world < world_size and warmup else "")
    return WorldChangeWarmup(schedule, lr, min(saved_world / world_size, 1.0), warmup)


def describe(schedule, cfg):
    if schedule is None:
        return ", constant"
    return (f", {schedule.warmup_steps} warmup steps, then {cfg.lr_schedule} to {schedule.final_lr:g} "
            f"by step {schedule.max_update}")


# ---- the loop ----------------------------------------------------------------------------
def train_step(model, trainer, loss, inputs, labels):
    """One step on this rank's batch (its ids, or its pooled vectors for a PooledClassifier) ->
    the batch's (loss sum, correct predictions), on the device: nothing here waits for the device."""
    with autograd.record():
        logits = model(inputs)
        batch_loss = loss.of(logits, labels)
    batch_loss.backward()
    trainer.step(inputs.shape[0])  # Horovod: the dense gradients averaged across ranks, then Adam
    return loss.totals(batch_loss, logits, labels)


def run_epoch(job, state, checkpoints, control, runlog):
    """Train this rank's shard of state.epoch from where state stands, saving when the
    checkpoint manager says -> the epoch's running (loss sum, correct) on the device."""
    cfg, world, B = job.cfg, job.world, job.batch_size
    # This rank's own shard, reshuffled every epoch.
    rows = shard_rows(len(job.data.train_ids), state.epoch, cfg.seed, world.rank, world.size, state.rows_done)
    log.debug("epoch %d: shard of %d rows, first rows %s", state.epoch, len(rows), rows[:5].tolist())
    inputs = batches_on_device(job.train_inputs, rows, B, job.ctx)  # ids or pooled vectors
    shard_labels = rows_on_device(job.data.train_labels, rows, job.ctx, "float32")
    first, last = state.steps, state.steps + len(rows) // B  # the same on every rank: full batches only
    totals = mx.nd.array([state.loss_sum, state.correct], ctx=job.ctx)  # on the device: no sync per step
    for step in runlog.steps(state.epoch, first, last):
        if cfg.dropout:  # dropout's masks follow from where the run is: a resume draws the same
            mx.random.seed(int(np.random.SeedSequence([cfg.seed, world.rank, state.epoch, step]).generate_state(1)[0]))
        at = (step - first) * B
        totals += train_step(job.step_model, job.trainer, job.loss, next(inputs), shard_labels[at:at + B])
        if job.ema:
            job.ema.update(job.trainer.optimizer.num_update)
        state.step_done(B, world.size)
        if runlog.wants_running_loss(state.steps):
            runlog.running_loss(totals[0].asscalar() / state.seen, job.trainer.learning_rate,
                                job.trainer.optimizer.num_update)
        if state.steps == last:
            break  # the epoch's end decides for its last step
        where = f"epoch {state.epoch}, step {state.steps}"
        decision = checkpoints.due(state.steps, control, totals[0:1], where)  # every rank: the same
        if decision:
            with errors_reach_every_rank():
                if job.is_root:
                    state.take_totals(totals)
                    log.info("%s: checkpoint %s", where, checkpoints.save(state, job.model, job.trainer, ema=job.ema))
        if decision == "stop":
            raise Stopped(control.signal, f"stopped by {signal.Signals(control.signal).name} at {where}; "
                          "run the same command again to continue from there", quiet=not job.is_root)
    return totals


def end_epoch(job, state, checkpoints, control, runlog, totals):
    """The epoch's record; rank 0 evaluates, checkpoints and logs it -> whether to stop early.
    State moves on to the next epoch."""
    cfg = job.cfg
    decision = control.at_epoch_end(totals[0:1], f"epoch {state.epoch}")
    state.take_totals(totals)
    seconds = state.epoch_seconds()
    record = {"epoch": state.epoch, "world_size": job.world.size, "lr": job.trainer.learning_rate,
              "train_loss": state.loss_sum / state.seen, "train_accuracy": state.correct / state.seen,
              "seconds": seconds, "finished_at": time.time(), "samples_per_sec_per_worker": state.seen / seconds}

    # Rank 0 alone evaluates and checkpoints. Validation chooses the best epoch; the test set is
    # scored for the report, never to choose.
    with errors_reach_every_rank():
        if job.is_root:
            with averaged(job.ema):  # the model as checkpointed: the average under --ema-decay
                for split, ids, labels in (("val", job.data.val_ids, job.data.val_labels),
                                           ("test", job.data.test_ids, job.data.test_labels)):
                    if ids is not None:
                        record[f"{split}_loss"], record[f"{split}_accuracy"] = \
                            loss_and_accuracy(predict_probs(job.model, ids, job.ctx), labels)
            state.history.append(record)
            is_best = epochs_without_improvement(state.history) == 0  # better than every earlier epoch
            saved = checkpoints.save(state, job.model, job.trainer, record, is_best, job.ema)
            runlog.epoch(record, job.trainer.optimizer.num_update, saved)
    if decision == "stop":
        raise Stopped(control.signal, f"stopped by {signal.Signals(control.signal).name} after epoch "
                      f"{state.epoch}; run the same command again to continue", quiet=not job.is_root)
    # Early stopping: rank 0 holds the history; every rank stops after the same epoch.
    if cfg.patience and broadcast_object(job.is_root and epochs_without_improvement(state.history) >= cfg.patience,
                                         name="patience"):
        log.info("no better validation accuracy (or loss at the same) for %d epochs: stopping after epoch %d",
                 cfg.patience, state.epoch)
        return True
    state.next_epoch()
    return False


def rows_on_device(array, rows, ctx, dtype, rows_per_copy=1 << 16):
    """array[rows] (array: the mapped ids or labels) as one NDArray on ctx, gathered a block of
    rows at a time, so host memory never holds the whole shard twice."""
    out = mx.nd.empty((len(rows),) + array.shape[1:], ctx=ctx, dtype=dtype)
    for start in range(0, len(rows), rows_per_copy):
        out[start:start + rows_per_copy] = array[rows[start:start + rows_per_copy]].astype(dtype)
    return out


def batches_on_device(array, rows, batch_size, ctx, copy_bytes=16 << 20):
    """array[rows] (the mapped ids or pooled vectors) in order, batch_size rows at a time, as
    NDArrays on ctx: gathered about copy_bytes (a whole number of batches) at a time and sliced,
    so a rank's own memory holds one such block, not its whole shard."""
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:]))
    rows_per_copy = batch_size * max(1, copy_bytes // row_bytes // batch_size)
    for start in range(0, len(rows), rows_per_copy):
        block = rows_on_device(array, rows[start:start + rows_per_copy], ctx, array.dtype)
        for at in range(0, len(block), batch_size):
            yield block[at:at + batch_size]


def epochs_without_improvement(history):
    """Epochs since the best epoch of the history (selection_key: its accuracy, then its loss)."""
    keys = [selection_key(record) for record in history]
    return len(keys) - 1 - keys.index(max(keys))


# ---- the end: the best checkpoint's report -------------------------------------------------
def write_final_report(job):
    """Rank 0: the best checkpoint's test accuracy, classification report and confusion matrix."""
    cfg, prepared = job.cfg, job.data
    best_dir = resolve(cfg.output_dir, "best")
    metrics_path = os.path.join(cfg.output_dir, "metrics.jsonl")
    chosen = store.read_record(best_dir)
    job.model.load_parameters(os.path.join(best_dir, MODEL), ctx=job.ctx)
    probs = predict_probs(job.model, prepared.test_ids, job.ctx)
    loss, accuracy = loss_and_accuracy(probs, prepared.test_labels)
    n_val = 0 if prepared.val_ids is None else len(prepared.val_ids)
    results = {"best_checkpoint": best_dir, "best_epoch": chosen["epoch"],
               "chosen_by": "validation accuracy, then loss" if "val_accuracy" in chosen
               else "test accuracy (no validation set)",
               "val_accuracy": chosen.get("val_accuracy"), "val_loss": chosen.get("val_loss"),
               "test_accuracy": accuracy, "test_loss": loss, "epochs": len(read_jsonl(metrics_path)),
               "split": f"{len(prepared.train_ids)} training, {n_val} validation, {len(prepared.test_ids)} "
                        f"test rows ({prepared.source})",
               "config": cfg.to_dict()}
    try:
        report, paths = write_report(cfg.output_dir, prepared.test_labels, probs.argmax(1), prepared.classes)
        paths["results.json"] = os.path.join(cfg.output_dir, "results.json")
        store.write_file(paths["results.json"], json.dumps(results, indent=2))
    except OSError as e:
        raise UserError(f"{e.filename or cfg.output_dir}: could not write the report: {e.strerror}") from None
    log.info("best checkpoint %s (epoch %d, chosen by %s): test accuracy %.4f\n%s", best_dir, chosen["epoch"],
             results["chosen_by"], accuracy, report)
    print(f"\ntest accuracy {accuracy:.4f} (epoch {chosen['epoch']}, chosen by {results['chosen_by']}); "
          f"wrote to {cfg.output_dir}:")
    for path in [best_dir, metrics_path, *paths.values()]:
        print("  " + path)


def main(argv=None):
    def parse_and_train():
        init_horovod()
        with errors_reach_every_rank():  # a bad flag: one line from rank 0, not one per rank
            cfg = parse_config(argv)
        train(cfg)
    run_horovod_main(parse_and_train)


if __name__ == "__main__":
    main()
