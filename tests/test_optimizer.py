"""FusedAdam: MXNet's Adam, with every tensor updated in one operator call."""
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from distjob.optimizer import FusedAdam, load_states

BATCH = 5


def dense_net(seed=0):
    mx.random.seed(seed)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(16, activation="relu"), gluon.nn.Dense(8, activation="relu"), gluon.nn.Dense(4))
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3)))
    return net


def batches(n):
    rng = np.random.RandomState(1)
    return [(mx.nd.array(rng.randn(BATCH, 3)), mx.nd.array(rng.randint(0, 4, BATCH))) for _ in range(n)]


def train(net, trainer, data):
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for x, y in data:
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(BATCH)


def weights(net):
    return [p.data().asnumpy() for p in net.collect_params().values()]


def assert_same_weights(a, b):
    """Equal to float32 rounding: MXNet's adam_update and multi_adamw_update kernels round
    differently (one step at lr 0.05 moved weights by ~0.16 and differed by 5e-6; the other
    kernel also differs from float64 by 1e-6). A wrong lr, moment or bias correction differs
    by 1e-2 or more."""
    for wa, wb in zip(weights(a), weights(b)):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_fused_adam_trains_exactly_as_mxnet_adam(wd):
    data = batches(12)
    nets = dense_net(), dense_net()
    train(nets[0], gluon.Trainer(nets[0].collect_params(), "adam", {"learning_rate": 0.05, "wd": wd}), data)
    train(nets[1], gluon.Trainer(nets[1].collect_params(), FusedAdam(learning_rate=0.05, wd=wd)), data)
    assert np.abs(weights(nets[1])[0] - weights(dense_net())[0]).max() > 0.1  # it did train
    assert_same_weights(*nets)


def update_operators(optimizer, profile_file):
    """Operator name -> calls during two training steps (MXNet's profiler)."""
    net = dense_net()
    trainer = gluon.Trainer(net.collect_params(), optimizer)
    train(net, trainer, batches(1))  # the states are created on the first step
    mx.nd.waitall()
    mx.profiler.set_config(profile_imperative=True, aggregate_stats=True, filename=str(profile_file))
    mx.profiler.set_state("run")
    train(net, trainer, batches(2))
    mx.nd.waitall()
    mx.profiler.set_state("stop")
    counts = json.loads(mx.profiler.dumps(format="json", reset=True))["Time"]["operator"]
    return {name: stats["Count"] for name, stats in counts.items() if "adam" in name}


def test_one_update_call_per_step_for_all_tensors(tmp_path):
    profile = tmp_path / "profile.json"
    assert update_operators(mx.optimizer.Adam(learning_rate=0.01), profile) == {"adam_update": 12}  # 6 tensors
    assert update_operators(FusedAdam(learning_rate=0.01), profile) == {"_multi_adamw_update": 2}
    # L2 weight decay goes into Adam's moments, which the AdamW kernel cannot do: Adam's own update
    assert update_operators(FusedAdam(learning_rate=0.01, wd=0.01), profile) == {"adam_update": 12}


@pytest.mark.parametrize("saved_with", ["mxnet adam", "fused adam"])
def test_training_resumes_from_either_optimizers_states(tmp_path, saved_with):
    """A checkpoint's trainer states continue exactly, including those that checkpoints written
    before FusedAdam hold (MXNet's Adam, pickled with its states)."""
    first, then = batches(10)[:6], batches(10)[6:]
    make = {"mxnet adam": mx.optimizer.Adam, "fused adam": FusedAdam}[saved_with]

    straight = dense_net()
    straight_trainer = gluon.Trainer(straight.collect_params(), make(learning_rate=0.05))
    train(straight, straight_trainer, first + then)

    stopped = dense_net()
    stopped_trainer = gluon.Trainer(stopped.collect_params(), make(learning_rate=0.05))
    train(stopped, stopped_trainer, first)
    stopped_trainer.save_states(str(tmp_path / "trainer.states"))
    stopped.save_parameters(str(tmp_path / "model.params"))

    resumed = dense_net(seed=7)
    resumed.load_parameters(str(tmp_path / "model.params"))
    resumed_trainer = gluon.Trainer(resumed.collect_params(), FusedAdam(learning_rate=0.05))
    load_states(resumed_trainer, (tmp_path / "trainer.states").read_bytes())
    train(resumed, resumed_trainer, then)
    assert_same_weights(resumed, straight)
