"""Train the AG News topic classifier, data-parallel with Horovod.

    text -> ids -> frozen GloVe embedding -> pooled vector -> Dense 128 -> 64 -> 4 -> loss

    python -m distjob.train --test-mode                        # one CPU, generated data
    python -m distjob.train --data-dir DIR --config configs/agnews.yaml
    horovodrun -np 4 python -m distjob.train --data-dir DIR    # 4 workers

Rank 0 evaluates, checkpoints and writes reports; a rerun with the same output dir
continues from the last checkpoint.
"""
import json
import os
import sys
import time

import horovod.mxnet as hvd
import mxnet as mx
import numpy as np
from gluonnlp import Vocab
from mxnet import autograd, gluon
from tqdm import tqdm

from . import checkpoint, data, evaluate
from .config import UserError, exit_on_user_error, parse_config
from .distributed import (cpu_cores, log, native_threads, pick_context, setup_logging, shard_rows,
                          shorten_horovod_cycle, yield_cpu_to_compute)
from .embeddings import embedding_matrix, load_glove
from .hosts import check_hostname
from .model import build_model, parameter_counts
from .optimizer import FusedAdam

# Changing these between a checkpoint and its resumption would silently change the model.
MODEL_DEFINING = ("embedding", "pooling", "max_tokens")


def find_resume_checkpoint(cfg):
    """Rank 0: the checkpoint to continue from, per --resume, or None."""
    found = checkpoint.find(cfg.output_dir)
    if found is None and cfg.resume == "require":
        raise UserError(f"--resume: no checkpoint in {cfg.output_dir}/checkpoints to resume from")
    if found is not None and cfg.resume == "never":
        raise UserError(f"--resume never: {cfg.output_dir} already holds checkpoints; choose another "
                        "--output-dir or move that one away")
    if found is None:
        return None
    state = checkpoint.load(found)
    for key in MODEL_DEFINING:
        if state["config"].get(key) != getattr(cfg, key):
            raise UserError(f"--{key.replace('_', '-')} {getattr(cfg, key)}: the checkpoint in {found} "
                            f"was trained with {state['config'].get(key)}; use another --output-dir")
    return state


def train(cfg):
    # --- Horovod step 1: one process per device, this one pinned to its local GPU (or CPU).
    cycle_ms = shorten_horovod_cycle()  # with peers, an allreduce need not wait 1 ms to start
    check_hostname()  # before Gloo: a hostname other hosts cannot reach fails at connect
    threads_before_init = native_threads()
    hvd.init()
    lowered = yield_cpu_to_compute(threads_before_init)  # Gloo's busy-polling threads: see distributed.py
    rank, world_size, is_root = hvd.rank(), hvd.size(), hvd.rank() == 0
    setup_logging(rank, world_size)
    ctx = pick_context(cfg.ctx, hvd.local_rank())
    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    log.info("world of %d worker(s), training on %s, CPU cores %s; Horovod cycle %g ms, "
             "%d Gloo thread(s) at SCHED_IDLE", world_size, ctx, cpu_cores(), cycle_ms, len(lowered))

    # Rank 0 reads the checkpoint (if any) and hands every rank the same copy, so
    # workers need not see rank 0's disk.
    resume = hvd.broadcast_object(find_resume_checkpoint(cfg) if is_root else None, name="resume")
    first_epoch = resume["meta"]["epoch"] + 1 if resume else 1

    # --- text -> ids, once per run: every rank tokenizes the same rows, builds the same vocab.
    train_labels, train_texts, eval_labels, eval_texts, source = data.load_texts(cfg)
    train_tokens = [data.tokenize(text) for text in train_texts]
    vocab = Vocab.from_json(resume["vocab_json"]) if resume else data.build_vocab(train_tokens)
    train_ids = data.encode(train_tokens, vocab, cfg.max_tokens)
    eval_ids = data.encode([data.tokenize(text) for text in eval_texts], vocab, cfg.max_tokens)
    log.info("data: %s; %d training and %d evaluation rows, vocabulary of %d",
             source, len(train_ids), len(eval_ids), len(vocab))

    # --- ids -> frozen GloVe vectors. Every rank builds the matrix itself: it is never sent.
    glove_tokens, glove_vectors = load_glove(cfg.embedding, cfg.embedding_root)
    glove_matrix, covered = embedding_matrix(vocab.idx_to_token, glove_tokens, glove_vectors)
    log.info("embedding %s: %d-d, GloVe covers %d of %d vocabulary tokens (%.1f%%)", cfg.embedding,
             glove_matrix.shape[1], covered, len(vocab) - 1, 100 * covered / max(len(vocab) - 1, 1))

    # --- pooled vector -> dense layers: the model.
    model = build_model(glove_matrix, cfg.pooling, cfg.max_tokens, ctx, cfg.batch_size)
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
    trainer = hvd.DistributedTrainer(
        model.trainable_params(), FusedAdam(learning_rate=lr, wd=cfg.weight_decay),
        compression=hvd.Compression.fp16 if cfg.compression == "fp16" else hvd.Compression.none,
        num_groups=1)
    if resume:
        checkpoint.load_trainer_states(trainer, resume["trainer_states"])
        trainer.set_learning_rate(lr)  # the world size may differ from the saved run's
        log.info("resumed from %s (epoch %d)", resume["dir"], first_epoch - 1)
    loss_fn, batch_totals = gluon.loss.SoftmaxCrossEntropyLoss(), evaluate.BatchTotals()
    for block in (loss_fn, batch_totals):  # one operator call each per step, not 4: at small
        block.hybridize(static_alloc=True, static_shape=True)  # batches the python thread is the limit

    best_accuracy = resume["meta"]["best_accuracy"] if resume else -1.0
    metrics_path = os.path.join(cfg.output_dir, "metrics.jsonl")
    if is_root:
        os.makedirs(cfg.output_dir, exist_ok=True)
    for epoch in range(first_epoch, cfg.epochs + 1):
        started = time.time()
        # --- Horovod step 4: each rank trains on its own shard, reshuffled every epoch.
        rows = shard_rows(len(train_ids), epoch, cfg.seed, rank, world_size)
        log.info("epoch %d: shard of %d rows, first rows %s", epoch, len(rows), rows[:5].tolist())
        shard_ids = mx.nd.array(train_ids[rows], ctx=ctx, dtype="int32")
        shard_labels = mx.nd.array(train_labels[rows], ctx=ctx, dtype="float32")
        batch_size = min(cfg.batch_size, len(rows))
        steps = len(rows) // batch_size  # equal on every rank: full batches only
        totals = mx.nd.zeros(2, ctx=ctx)  # loss sum, correct predictions: on the device, no host sync per batch
        progress = tqdm(range(steps), desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                        disable=not (is_root and cfg.progress), file=sys.stdout)
        for step in progress:
            ids = shard_ids[step * batch_size:(step + 1) * batch_size]
            labels = shard_labels[step * batch_size:(step + 1) * batch_size]
            with autograd.record():
                logits = model(ids)
                loss = loss_fn(logits, labels)
            loss.backward()
            trainer.step(batch_size)
            totals += batch_totals(loss, logits, labels)
            if step % 50 == 49 and not progress.disable:  # the read waits for the device: only when shown
                progress.set_postfix(loss=f"{totals[0].asscalar() / ((step + 1) * batch_size):.4f}")
        seen = steps * batch_size
        loss_sum, correct = totals.asnumpy()
        record = {"epoch": epoch, "world_size": world_size,
                  "train_loss": float(loss_sum / seen), "train_accuracy": float(correct / seen),
                  "seconds": time.time() - started}
        record["samples_per_sec_per_worker"] = seen / record["seconds"]

        # --- Horovod step 5: rank 0 alone evaluates and checkpoints.
        if is_root:
            probs = evaluate.predict_probs(model, eval_ids, ctx)
            record["eval_loss"], record["eval_accuracy"] = evaluate.loss_and_accuracy(probs, eval_labels)
            is_best = record["eval_accuracy"] > best_accuracy
            best_accuracy = max(best_accuracy, record["eval_accuracy"])
            saved = checkpoint.save(cfg.output_dir, epoch, model, trainer, vocab, cfg.to_dict(),
                                    {"best_accuracy": best_accuracy, **record}, is_best)
            evaluate.append_jsonl(metrics_path, record)
            log.info("epoch %d/%d: train loss %.4f acc %.4f | eval loss %.4f acc %.4f | %.1fs, "
                     "%.0f samples/s per worker -> %s", epoch, cfg.epochs, record["train_loss"],
                     record["train_accuracy"], record["eval_loss"], record["eval_accuracy"],
                     record["seconds"], record["samples_per_sec_per_worker"], saved)

    if is_root:
        write_final_report(cfg, model, ctx, eval_ids, eval_labels)


def write_final_report(cfg, model, ctx, eval_ids, eval_labels):
    """The best checkpoint's accuracy, classification report and confusion matrix."""
    best_dir = checkpoint.find(cfg.output_dir, "best")
    model.load_parameters(os.path.join(best_dir, checkpoint.MODEL), ctx=ctx)
    probs = evaluate.predict_probs(model, eval_ids, ctx)
    loss, accuracy = evaluate.loss_and_accuracy(probs, eval_labels)
    report, paths = evaluate.write_report(cfg.output_dir, eval_labels, probs.argmax(1))
    results = {"accuracy": accuracy, "loss": loss, "best_checkpoint": best_dir, "config": cfg.to_dict()}
    paths["results.json"] = os.path.join(cfg.output_dir, "results.json")
    with open(paths["results.json"], "w") as f:
        json.dump(results, f, indent=2)
    log.info("best checkpoint %s: eval accuracy %.4f\n%s", best_dir, accuracy, report)
    print(f"\naccuracy {accuracy:.4f}; wrote to {cfg.output_dir}:")
    for path in [best_dir, os.path.join(cfg.output_dir, "metrics.jsonl"), *paths.values()]:
        print("  " + path)


def main(argv=None):
    try:
        exit_on_user_error(lambda: train(parse_config(argv)))
    finally:
        # Finish MXNet's queued work while Horovod is still up: otherwise MXNet's exit hook
        # can race Horovod's and print a traceback after a clean error message.
        mx.nd.waitall()


if __name__ == "__main__":
    main()
