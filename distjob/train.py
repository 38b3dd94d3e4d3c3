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
import os
import signal
import sys
import time

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np
import yaml
from mxnet import autograd, gluon
from tqdm import tqdm

from . import checkpoint, prepare, readers, store
from .config import Stopped, UserError, parse_config, run_main
from .distributed import (RankControl, broadcast_object, errors_reach_every_rank, from_local_rank_0, init_horovod,
                          shard_rows)
from .embeddings import check_glove_file, embedding_matrix, load_glove
from .logs import log, setup_logging
from .machine import cpu_cores, memory_mb, pick_context
from .model import build_model, parameter_counts
from .optimizer import FusedAdam, load_states
from .reports import append_jsonl, read_jsonl, tensorboard_writer, write_jsonl, write_report
from .scoring import BatchTotals, loss_and_accuracy, predict_probs

# What defines the rows a run trains and evaluates on, and its model: a checkpoint resumes
# only into a run that has the same (the data files are compared by content).
IDENTITY = ("test_mode", "test_classes", "holdout_from_train", "validation_size", "seed", "max_tokens",
            "pooling", "embedding")
NOT_LOGGED = ("output_dir", "resume", "progress")  # settings whose change on resume says nothing


def run_identity(cfg):
    identity = {key: getattr(cfg, key) for key in IDENTITY}
    identity["embedding"] = os.path.basename(cfg.embedding)  # the vectors, wherever the file is now
    identity["data"] = {os.path.basename(path): store.file_digest(path) for path in readers.input_files(cfg)}
    return identity


def identity_changes(saved, current):
    """-> what differs between a checkpoint's run identity and this run's, one phrase each."""
    changes = [f"--{key.replace('_', '-')} {current[key]} (the checkpoint's run: {saved.get(key)})"
               for key in IDENTITY if saved.get(key) != current[key]]
    old, new = saved.get("data", {}), current["data"]
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            changes.append(f"{name} " + ("is not read now" if name not in new else "was not read before"
                                         if name not in old else "has other contents"))
    return changes


def find_resume_checkpoint(cfg, identity):
    """Rank 0: the newest checkpoint that verifies, if --resume wants one and it is this run's."""
    found = checkpoint.scan(cfg.output_dir, report=log.warning)  # one line per checkpoint skipped
    if not found:
        if cfg.resume == "require":
            raise UserError(f"--resume: no checkpoint in {cfg.output_dir}/checkpoints to resume from")
        return None
    if cfg.resume == "never":
        raise UserError(f"--resume never: {cfg.output_dir} already holds checkpoints; choose another "
                        "--output-dir or move that one away")
    state = checkpoint.load(found[-1].dir)
    changes = identity_changes(state["meta"]["identity"], identity)
    if changes:
        raise UserError(f"--output-dir {cfg.output_dir} holds another run's checkpoints: "
                        f"{'; '.join(changes)}. Rerun with the settings it was trained with to "
                        "resume it, or start fresh with another --output-dir")
    changed = [f"{key} {value} -> {getattr(cfg, key)}" for key, value in state["config"].items()
               if key not in NOT_LOGGED and value != getattr(cfg, key, value)]
    if changed:
        log.info("resuming with changed settings: %s", ", ".join(changed))
    best = checkpoint.best_of(found)
    state["best_accuracy"] = checkpoint.selection_accuracy(best.meta) if best else -1.0
    return state


def train(cfg):
    # --- Horovod step 1: one process per device, this one pinned to its local GPU (or CPU).
    world = init_horovod()  # Horovod's cycle set before init, Gloo's busy-polling threads after
    rank, world_size, is_root = world.rank, world.size, world.rank == 0
    setup_logging(rank, world_size, cfg.log_level)
    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    with errors_reach_every_rank():  # an error on any rank stops every rank, in one line
        ctx = pick_context(cfg.ctx, world.local_rank)
    log.info("world of %d worker(s), training on %s, CPU cores %s; Horovod cycle %g ms, "
             "%d Gloo thread(s) at SCHED_IDLE", world_size, ctx, cpu_cores(), world.cycle_ms,
             len(world.idle_threads))
    if is_root:  # what runs: defaults < --test-mode preset < YAML < flags
        log.info("config:\n%s", yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip())

    # Everything that can be checked before any work is: inputs, the output dir, the checkpoint.
    identity = resume = None
    with errors_reach_every_rank():
        readers.check_inputs(cfg)
        check_glove_file(cfg.embedding, cfg.embedding_root)
        if is_root:
            for path in checkpoint.remove_interrupted_saves(cfg.output_dir):
                log.info("removed %s, left by an interrupted save", path)
            checkpoint.check_writable(cfg.output_dir)
            identity = run_identity(cfg)
            resume = find_resume_checkpoint(cfg, identity)
    # Rank 0 read the checkpoint (if any) and hands every rank the same copy, so workers need
    # not see rank 0's disk.
    resume = broadcast_object(resume, name="resume")

    # --- text -> ids, once per data set: local rank 0 of each host prepares them (or checks the
    # copy its cache holds) while the others wait; then every rank maps them read-only.
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
        if resume and resume["vocab_json"] != prepared.vocab.to_json():
            raise UserError(f"{prepared.path}: its vocabulary is not the checkpoint's; delete that directory "
                            "to prepare the ids again")
    vocab, train_ids, val_ids, test_ids = prepared.vocab, prepared.train_ids, prepared.val_ids, prepared.test_ids
    log.info("data: %s; %d training, %d validation and %d test rows; vocabulary of %d (%d words, "
             "padding and unknown); ids in %s", prepared.source, len(train_ids), 0 if val_ids is None else len(val_ids),
             len(test_ids), len(vocab), len(vocab) - 2, prepared.path)
    if val_ids is None:
        log.warning("--validation-size 0: the test set chooses the best epoch and stops early, so "
                    "its accuracy is optimistic")

    # --- ids -> frozen GloVe vectors. Every rank builds the matrix itself: it is never sent.
    with errors_reach_every_rank():
        glove_tokens, glove_vectors = load_glove(cfg.embedding, cfg.embedding_root)
    glove_matrix, covered = embedding_matrix(vocab.idx_to_token, glove_tokens, glove_vectors)
    log.info("embedding %s: %d-d, GloVe covers %d of %d vocabulary tokens (%.1f%%)", cfg.embedding,
             glove_matrix.shape[1], covered, len(vocab) - 1, 100 * covered / max(len(vocab) - 1, 1))

    # --- pooled vector -> dense layers: the model.
    model = build_model(glove_matrix, cfg.pooling, cfg.max_tokens, ctx, cfg.batch_size,
                        num_classes=len(prepared.classes), dropout=cfg.dropout)
    if resume and is_root:
        model.load_parameters(os.path.join(resume["dir"], checkpoint.MODEL), ctx=ctx)
    frozen, trainable = parameter_counts(model)
    log.info("model: %s pooling, %d frozen (embedding) + %d trainable (dense) parameters",
             cfg.pooling, frozen, trainable)

    # --- Horovod step 2: every rank starts from rank 0's dense weights.
    hvd.broadcast_parameters(model.trainable_params(), root_rank=0)

    # --- Horovod step 3: gradients of the dense layers are averaged across ranks at each
    # step; the embedding is not given to the trainer, so it is never allreduced or updated.
    # num_groups=1: all gradients go out as one grouped allreduce per step, not one per
    # tensor; FusedAdam: Adam's update of all tensors in one call (both faster on CPU;
    # python -m distjob.bench measures them).
    lr = cfg.lr * world_size if cfg.scale_lr else cfg.lr
    batch_size = min(cfg.batch_size, len(train_ids) // world_size)
    steps_per_epoch = len(train_ids) // world_size // batch_size
    schedule = lr_schedule(cfg, lr, steps_per_epoch, world_size)
    trainer = hvd.DistributedTrainer(
        model.trainable_params(),
        FusedAdam(learning_rate=lr, wd=cfg.weight_decay, lr_scheduler=schedule, max_grad_norm=cfg.clip_grad_norm),
        compression=hvd.Compression.fp16 if cfg.compression == "fp16" else hvd.Compression.none,
        num_groups=1)
    log.info("learning rate %g (--lr %g x %d scaled for the workers)%s", lr, cfg.lr,
             world_size if cfg.scale_lr else 1, describe(schedule, cfg))
    loss_fn, batch_totals = gluon.loss.SoftmaxCrossEntropyLoss(), BatchTotals()
    for block in (loss_fn, batch_totals):  # one operator call each per step, not 4: at small
        block.hybridize(static_alloc=True, static_shape=True)  # batches the python thread is the limit

    # Where the run stands: every finished epoch's metrics, and where a mid-epoch checkpoint stopped.
    history, partial, first_epoch, best_accuracy = [], None, 1, -1.0
    if resume:
        load_states(trainer, resume["trainer_states"], schedule, cfg.clip_grad_norm)  # this run's
        if schedule is None:
            trainer.set_learning_rate(lr)  # the world size may differ from the saved run's
        meta = resume["meta"]
        history, partial, best_accuracy = meta["history"], meta.get("partial"), resume["best_accuracy"]
        first_epoch = meta["epoch"] + (1 if meta["finished"] else 0)
        log.info("resumed from %s (epoch %d%s)", resume["dir"], meta["epoch"],
                 "" if meta["finished"] else f", step {meta['steps']}")
    metrics_path = os.path.join(cfg.output_dir, "metrics.jsonl")
    writer = None
    if is_root:  # metrics.jsonl and TensorBoard say what the checkpoint resumed from says, no more
        os.makedirs(cfg.output_dir, exist_ok=True)
        write_jsonl(metrics_path, history)
        if cfg.tensorboard:
            writer = tensorboard_writer(cfg.output_dir, purge_step=trainer.optimizer.num_update)

    def save(progress, extra, is_best=False):  # rank 0
        meta = {"identity": identity, "classes": prepared.classes, "history": history, **extra}
        return checkpoint.save(cfg.output_dir, progress, model, trainer, vocab, cfg.to_dict(), meta,
                               is_best, cfg.keep_checkpoints)

    control = RankControl(ctx)  # from here on a signal stops every rank at the same step
    last_saved = time.time()
    try:
        for epoch in range(first_epoch, cfg.epochs + 1):
            start = partial or {"rows_done": 0, "steps": 0, "loss_sum": 0.0, "correct": 0.0, "seen": 0,
                                "seconds": 0.0}
            partial = None
            started = time.time() - start["seconds"]
            # --- Horovod step 4: each rank trains on its own shard, reshuffled every epoch.
            rows = shard_rows(len(train_ids), epoch, cfg.seed, rank, world_size, start["rows_done"])
            log.debug("epoch %d: shard of %d rows, first rows %s", epoch, len(rows), rows[:5].tolist())
            shard_ids = shard_labels = None  # last epoch's shard goes before this one is made
            shard_ids = rows_on_device(train_ids, rows, ctx, "int32")
            shard_labels = rows_on_device(prepared.train_labels, rows, ctx, "float32")
            first_step = start["steps"]
            steps = first_step + len(rows) // batch_size  # equal on every rank: full batches only
            # loss sum, correct predictions: on the device, no host sync per batch
            totals = mx.nd.array([start["loss_sum"], start["correct"]], ctx=ctx)
            progress = tqdm(range(first_step, steps), desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                            disable=not (is_root and cfg.progress and sys.stdout.isatty()), file=sys.stdout)
            for step in progress:
                first = (step - first_step) * batch_size
                ids, labels = shard_ids[first:first + batch_size], shard_labels[first:first + batch_size]
                if cfg.dropout:  # dropout's masks follow from where the run is: a resume draws the same
                    mx.random.seed(int(np.random.SeedSequence([cfg.seed, rank, epoch, step]).generate_state(1)[0]))
                with autograd.record():
                    logits = model(ids)
                    loss = loss_fn(logits, labels)
                loss.backward()
                trainer.step(batch_size)
                totals += batch_totals(loss, logits, labels)
                done = step + 1
                if done % cfg.log_every_steps == 0 and (writer or not progress.disable):  # the read waits
                    running_loss = totals[0].asscalar() / (start["seen"] + (done - first_step) * batch_size)
                    progress.set_postfix(loss=f"{running_loss:.4f}")
                    if writer:
                        writer.add_scalar("train/running_loss", running_loss, trainer.optimizer.num_update)
                        writer.add_scalar("lr", trainer.learning_rate, trainer.optimizer.num_update)
                if done == steps:
                    break  # the epoch's end decides for its last step
                # Every rank decides together whether to stop or checkpoint at this step.
                minutes_due = cfg.checkpoint_every_minutes and time.time() - last_saved >= 60 * cfg.checkpoint_every_minutes
                decision = control.after_step(done, totals[0:1], is_root and minutes_due, f"epoch {epoch}, step {done}")
                if decision or (cfg.checkpoint_every_steps and done % cfg.checkpoint_every_steps == 0):
                    with errors_reach_every_rank():
                        if is_root:
                            loss_sum, correct = totals.asnumpy()
                            rows_done = start["rows_done"] + (done - first_step) * batch_size * world_size
                            saved = save((epoch, done, False), {"partial": {
                                "epoch": epoch, "steps": done, "rows_done": rows_done,
                                "loss_sum": float(loss_sum), "correct": float(correct),
                                "seen": start["seen"] + (done - first_step) * batch_size,
                                "seconds": time.time() - started}})
                            log.info("epoch %d, step %d: checkpoint %s", epoch, done, saved)
                    last_saved = time.time()
                    if decision == "stop":
                        raise Stopped(control.signal, f"stopped by {signal.Signals(control.signal).name} at epoch {epoch}, "
                                      f"step {done}; run the same command again to continue from there",
                                      quiet=not is_root)

            decision = control.at_epoch_end(totals[0:1], f"epoch {epoch}")
            seen = start["seen"] + (steps - first_step) * batch_size
            loss_sum, correct = totals.asnumpy()
            record = {"epoch": epoch, "world_size": world_size, "lr": trainer.learning_rate,
                      "train_loss": float(loss_sum / seen), "train_accuracy": float(correct / seen),
                      "seconds": time.time() - started, "finished_at": time.time()}
            record["samples_per_sec_per_worker"] = seen / record["seconds"]

            # --- Horovod step 5: rank 0 alone evaluates and checkpoints. Validation chooses
            # the best epoch; the test set is scored for the report, never to choose.
            with errors_reach_every_rank():
                if is_root:
                    for split, ids, labels in (("val", val_ids, prepared.val_labels), ("test", test_ids, prepared.test_labels)):
                        if ids is not None:
                            record[f"{split}_loss"], record[f"{split}_accuracy"] = \
                                loss_and_accuracy(predict_probs(model, ids, ctx), labels)
                    is_best = checkpoint.selection_accuracy(record) > best_accuracy
                    best_accuracy = max(best_accuracy, checkpoint.selection_accuracy(record))
                    history.append(record)
                    saved = save((epoch, steps, True), record, is_best)
                    append_jsonl(metrics_path, record)
                    if writer:
                        log_epoch(writer, record, trainer.optimizer.num_update)
                    log.info("epoch %d/%d: train loss %.4f acc %.4f | %s%.1fs, %.0f samples/s per worker -> %s",
                             epoch, cfg.epochs, record["train_loss"], record["train_accuracy"],
                             "".join(f"{split} loss {record[split + '_loss']:.4f} acc {record[split + '_accuracy']:.4f} | "
                                     for split in ("val", "test") if split + "_loss" in record),
                             record["seconds"], record["samples_per_sec_per_worker"], saved)
            last_saved = time.time()
            if decision == "stop":
                raise Stopped(control.signal, f"stopped by {signal.Signals(control.signal).name} after epoch {epoch}; "
                              "run the same command again to continue", quiet=not is_root)
            # Early stopping: rank 0 holds the history; every rank stops after the same epoch.
            if cfg.patience and broadcast_object(is_root and epochs_without_improvement(history) >= cfg.patience,
                                              name="patience"):
                log.info("no better validation accuracy for %d epochs: stopping after epoch %d",
                         cfg.patience, epoch)
                break
    finally:
        control.close()
        if writer:
            writer.close()

    peak, pss = memory_mb()
    log.debug("memory: peak RSS %.0f MB, PSS %s MB", peak, "?" if pss is None else f"{pss:.0f}")
    with errors_reach_every_rank():
        if is_root:
            split = (f"{len(train_ids)} training, {0 if val_ids is None else len(val_ids)} validation, "
                     f"{len(test_ids)} test rows ({prepared.source})")
            write_final_report(cfg, model, ctx, test_ids, prepared.test_labels, split, prepared.classes)


def rows_on_device(array, rows, ctx, dtype, rows_per_copy=1 << 16):
    """array[rows] (array: the mapped ids or labels) as one NDArray on ctx, gathered a block of
    rows at a time, so host memory never holds the whole shard twice."""
    out = mx.nd.empty((len(rows),) + array.shape[1:], ctx=ctx, dtype=dtype)
    for start in range(0, len(rows), rows_per_copy):
        out[start:start + rows_per_copy] = array[rows[start:start + rows_per_copy]].astype(dtype)
    return out


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


def describe(schedule, cfg):
    if schedule is None:
        return ", constant"
    return (f", {schedule.warmup_steps} warmup steps, then {cfg.lr_schedule} to {schedule.final_lr:g} "
            f"by step {schedule.max_update}")


def epochs_without_improvement(history):
    """Epochs since the best validation (or test) accuracy of the history."""
    accuracies = [checkpoint.selection_accuracy(record) for record in history]
    return len(accuracies) - 1 - accuracies.index(max(accuracies))


def log_epoch(writer, record, step):
    """An epoch's metrics as TensorBoard scalars, at the optimizer's update count."""
    for split in ("train", "val", "test"):
        for metric in ("loss", "accuracy"):
            if f"{split}_{metric}" in record:
                writer.add_scalar(f"{split}/{metric}", record[f"{split}_{metric}"], step)
    writer.add_scalar("samples_per_sec_per_worker", record["samples_per_sec_per_worker"], step)


def write_final_report(cfg, model, ctx, test_ids, test_labels, split, classes):
    """The best checkpoint's test accuracy, classification report and confusion matrix."""
    best_dir = checkpoint.resolve(cfg.output_dir, "best")
    metrics_path = os.path.join(cfg.output_dir, "metrics.jsonl")
    with open(os.path.join(best_dir, checkpoint.META)) as f:
        chosen = json.load(f)
    model.load_parameters(os.path.join(best_dir, checkpoint.MODEL), ctx=ctx)
    probs = predict_probs(model, test_ids, ctx)
    loss, accuracy = loss_and_accuracy(probs, test_labels)
    results = {"best_checkpoint": best_dir, "best_epoch": chosen["epoch"],
               "chosen_by": "validation accuracy" if "val_accuracy" in chosen else "test accuracy (no validation set)",
               "val_accuracy": chosen.get("val_accuracy"), "val_loss": chosen.get("val_loss"),
               "test_accuracy": accuracy, "test_loss": loss, "epochs": len(read_jsonl(metrics_path)),
               "split": split, "config": cfg.to_dict()}
    try:
        report, paths = write_report(cfg.output_dir, test_labels, probs.argmax(1), classes)
        paths["results.json"] = os.path.join(cfg.output_dir, "results.json")
        with open(paths["results.json"], "w") as f:
            json.dump(results, f, indent=2)
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
    try:
        run_main(parse_and_train)
    finally:
        # Finish MXNet's queued work while Horovod is still up: otherwise MXNet's exit hook
        # can race Horovod's and print a traceback after a clean error message.
        mx.nd.waitall()


if __name__ == "__main__":
    main()
