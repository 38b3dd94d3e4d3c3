"""Clocks for MXNet work, and the training loop they time. MXNet runs asynchronously, so every
clock stops only after mx.nd.waitall()."""
import time

import mxnet as mx
from mxnet import autograd, gluon

from ..config import Config
from ..distributed import init_horovod
from ..optimizer import FusedAdam
from ..scoring import StepLoss
from ..train import make_trainer, train_step


def time_per_call(fn, calls, min_seconds):
    """Milliseconds per call: one warm-up round, then rounds of `calls` until min_seconds."""
    for item in calls:
        fn(item)
    mx.nd.waitall()
    n, started = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - started < min_seconds:
        for item in calls:
            fn(item)
        mx.nd.waitall()
        n += len(calls)
    return (time.perf_counter() - started) / n * 1e3


def best_seconds(fn, repeats=3):
    """-> (the fastest of `repeats` calls in seconds, the last call's result)."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def forward_backward_ms(model, ids, labels, repeats=5):
    """-> (ms of the recorded forward, ms of loss.backward() alone), best of repeats after one."""
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    forward, backward = [], []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        with autograd.record():
            loss = loss_fn(model(ids), labels)
        mx.nd.waitall()
        middle = time.perf_counter()
        loss.backward()
        mx.nd.waitall()
        forward.append(middle - started)
        backward.append(time.perf_counter() - middle)
    return min(forward[1:]) * 1e3, min(backward[1:]) * 1e3


class Loop:
    """How a training loop treats the loss besides backward, and how it updates.
    "tutorial": reads the loss back to python after each batch. "device": keeps the running
    loss and accuracy on the device and reads them once an epoch. "lever": train.py's
    hybridized loss and totals and FusedAdam, for a model of other inputs than ids (a lever
    distjob does not use). "hybrid": train.py's own train_step, with MXNet's Adam.
    "train.py": train.py's own train_step and trainer."""

    def __init__(self, kind):
        self.kind = kind
        self.loss = StepLoss()  # train.py's, hybridized
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()  # the tutorial's, imperative

    def trainer(self, model, batch_size, n_rows):
        if self.kind == "train.py":  # as train.py makes it for these rows, at every default
            init_horovod()
            cfg = Config(batch_size=batch_size).validate()
            return make_trainer(cfg, model, n_rows, 1, batch_size)
        adam = FusedAdam if self.kind == "lever" else mx.optimizer.Adam
        return gluon.Trainer(trainable(model), adam(learning_rate=1e-3))


def train_epoch(model, trainer, batches, batch_size, loop):
    """One pass over batches of (inputs, labels); -> samples trained."""
    loss_sum, correct, totals, samples, python_loss = mx.nd.zeros(1), mx.nd.zeros(1), mx.nd.zeros(2), 0, 0.0
    for inputs, labels in batches:
        if loop.kind in ("hybrid", "train.py"):
            totals += train_step(model, trainer, loop.loss, *inputs, labels)
        else:
            with autograd.record():
                logits = model(*inputs)
                loss = (loop.loss.of if loop.kind == "lever" else loop.loss_fn)(logits, labels)
            loss.backward()
            trainer.step(batch_size)
            if loop.kind == "tutorial":
                python_loss += loss.sum().asscalar()
            elif loop.kind == "device":
                loss_sum += loss.sum()
                correct += (logits.argmax(axis=1) == labels).sum()
            else:
                totals += loop.loss.totals(loss, logits, labels)
        samples += batch_size
    loss_sum.asscalar(), totals.asnumpy()
    return samples


def trainable(model):
    """The parameters a model trains: a build_model model's own choice, else its dense layers."""
    return model.trainable_params() if hasattr(model, "trainable_params") else \
        model.classifier.collect_params()


def samples_per_second(model, make_batches, batch_size, loop_kind, min_seconds, n_rows):
    """Training epochs (make_batches(epoch), of n_rows rows) after one warm-up epoch, until min_seconds."""
    loop = Loop(loop_kind)
    trainer = loop.trainer(model, batch_size, n_rows)
    train_epoch(model, trainer, make_batches(0), batch_size, loop)
    samples, epoch, started = 0, 0, time.perf_counter()
    while epoch == 0 or time.perf_counter() - started < min_seconds:
        epoch += 1
        samples += train_epoch(model, trainer, make_batches(epoch), batch_size, loop)
    mx.nd.waitall()
    return samples / (time.perf_counter() - started)
