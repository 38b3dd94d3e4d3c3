"""An exponential moving average of the dense weights (--ema-decay), what rank 0 evaluates and
checkpoints as the model: the last few hundred steps' weights averaged, not the last step's
alone, whose noise small batches make large (what it gives: docs/performance.md, "Training levers").

Rank 0 alone keeps it: after each step's allreduce every rank holds the same weights, so rank
0's average is every rank's. The frozen embedding is not averaged (it never changes).
"""
from contextlib import contextmanager, nullcontext


class DenseEMA:
    def __init__(self, params, decay):
        self.params, self.decay = list(params.values()), decay
        self.average = [p.data().copy() for p in self.params]

    def update(self, num_update):
        """After the optimizer's num_update-th step. The first steps' decay is lower (as
        TensorFlow's ExponentialMovingAverage with num_updates), so the average soon leaves the
        initial weights; it follows from num_update, which checkpoints save: a resume is exact."""
        decay = min(self.decay, (1 + num_update) / (10 + num_update))
        for average, param in zip(self.average, self.params):
            average[:] = decay * average + (1 - decay) * param.data()

    @contextmanager
    def swapped_in(self):
        """The model holds the average inside the block (to evaluate or save it), its own
        weights again after."""
        weights = [p.data().copy() for p in self.params]
        for param, average in zip(self.params, self.average):
            param.set_data(average)
        try:
            yield
        finally:
            for param, weight in zip(self.params, weights):
                param.set_data(weight)


def averaged(ema):
    """The model as evaluated and saved: holding the average with --ema-decay, else as it is."""
    return ema.swapped_in() if ema is not None else nullcontext()
