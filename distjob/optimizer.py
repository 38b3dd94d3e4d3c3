"""Adam that updates every dense tensor in one operator call per step, can clip their global
norm on the device, and loading its state.

MXNet's Adam calls `adam_update` once per tensor, each a python -> C++ dispatch, and at
small batches the python thread is what limits a CPU worker (docs/performance.md). MXNet
has a multi-tensor kernel only for AdamW (`multi_adamw_update`); with no weight decay and
eta = 1 it does Adam's update:
    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  w -= lr_t * m / (sqrt(v) + eps)
with the bias-corrected lr_t that mx.optimizer.Adam computes. (The two kernels round
differently: the weights agree to float32 rounding, not bit for bit.) Adam's weight decay
adds wd*w to the gradient before the moments (L2), which AdamW's kernel cannot do, so with
weight decay this falls back to Adam's own per-tensor update. The states are Adam's
(mean, var), so checkpoints of either optimizer resume with the other.
"""
import math
import tempfile

import mxnet as mx
from mxnet.ndarray.contrib import multi_adamw_update

MAX_TENSORS_PER_CALL = 50  # 51 or more crash multi_adamw_update (segfault, MXNet 1.9.1); GluonNLP caps at 50 too


class FusedAdam(mx.optimizer.Adam):
    def __init__(self, max_grad_norm=0.0, **kwargs):
        super().__init__(**kwargs)
        # >0 makes MXNet's Updater hand update() lists of up to this many tensors.
        self.aggregate_num = MAX_TENSORS_PER_CALL
        self.max_grad_norm = max_grad_norm  # > 0: the step's gradients scaled down to this global norm
        self._rescale_grad_array = None  # the kernel reads rescale_grad from an NDArray

    def update(self, index, weight, grad, state):
        if not isinstance(index, (list, tuple)):
            return super().update(index, weight, grad, state)
        rescale = self._rescale_grad_on(weight[0].context)
        clip = self._clip_factor(grad) if self.max_grad_norm else None  # on the device: no wait
        wds = self._get_wds(index)
        if any(wds):  # L2 weight decay: Adam's own update, tensor by tensor
            for one in zip(index, weight, grad, state):
                if clip is not None:
                    mx.nd.broadcast_mul(one[2], clip, out=one[2])
                super().update(*one)
            return None
        self._update_count(index)
        lrs = [lr * math.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)  # as Adam.update
               for lr, t in zip(self._get_lrs(index), (self._index_update_count[i] for i in index))]
        means, variances = zip(*state)
        multi_adamw_update(weight, grad, means, variances, rescale if clip is None else rescale * clip,
                           lrs=lrs, wds=wds, etas=[1.0] * len(index),
                           beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon,
                           clip_gradient=self.clip_gradient or -1, out=weight)
        return None

    def _clip_factor(self, grads):
        """min(1, max_grad_norm / the global norm of the rescaled gradients), as a (1,) array."""
        squares = mx.nd.multi_sum_sq(*grads, num_arrays=len(grads))
        norm = mx.nd.sqrt(squares.sum()).reshape((1,)) * self.rescale_grad
        return (self.max_grad_norm / (norm + 1e-6)).clip(0, 1)

    def _rescale_grad_on(self, ctx):
        """rescale_grad as a (1,) array, made again only when Trainer.step changes it."""
        cached = self._rescale_grad_array
        if cached is None or cached[0] != (self.rescale_grad, ctx):
            self._rescale_grad_array = cached = ((self.rescale_grad, ctx),
                                                 mx.nd.full((1,), self.rescale_grad, ctx=ctx))
        return cached[1]

    def __getstate__(self):  # Trainer.save_states pickles the optimizer: not the cached array
        state = super().__getstate__()
        state["_rescale_grad_array"] = None
        return state


def load_states(trainer, states, lr_scheduler=None, max_grad_norm=0.0):
    """Load a checkpoint's trainer.states bytes into trainer, with this run's schedule and
    clipping (the file brings the saved run's). Trainer.load_states only reads a path; MXNet
    moves each state onto this rank's own context."""
    with tempfile.NamedTemporaryFile(suffix=".states") as f:
        f.write(states)
        f.flush()
        trainer.load_states(f.name)
    # The file brings its own optimizer (MXNet's Adam or FusedAdam). MXNet's updaters were set
    # up for the trainer's optimizer and would hand Adam FusedAdam's lists of tensors: set them
    # up for the loaded one, as Updater.__init__ does.
    for updater in trainer._updaters:
        updater.aggregate_updates = updater.optimizer.aggregate_num > 0
        updater.optimizer.lr_scheduler, updater.optimizer.max_grad_norm = lr_scheduler, max_grad_norm


class WorldChangeWarmup(mx.lr_scheduler.LRScheduler):
    """A schedule (None: a constant lr) entered at `start_factor` x its rate, reaching it linearly
    over `steps` updates from the first update it is asked for: the resumed one, after a change
    of world size. A checkpoint saves the scheduler, and a later resume replaces it."""

    def __init__(self, schedule, lr, start_factor, steps):
        super().__init__(base_lr=lr)
        self.schedule, self.start_factor, self.steps, self.first = schedule, start_factor, steps, None

    def __call__(self, num_update):
        lr = self.schedule(num_update) if self.schedule else self.base_lr
        if self.first is None:
            self.first = num_update
        done = (num_update - self.first) / self.steps if self.steps else 1.0
        return lr * (self.start_factor + (1 - self.start_factor) * min(max(done, 0.0), 1.0))
