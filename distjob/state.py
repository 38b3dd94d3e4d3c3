"""Where a run stands: the one place its progress moves, and what a checkpoint's meta.json
records of it (`to_meta` / `from_meta`)."""
import time
from dataclasses import dataclass, field


@dataclass
class TrainState:
    epoch: int = 1           # the epoch being trained
    steps: int = 0           # steps done in it (the same on every rank)
    rows_done: int = 0       # of its shuffled rows, those every rank together has trained on
    seen: int = 0            # of those, this rank's (rank 0's reported loss and accuracy are over them)
    loss_sum: float = 0.0    # this rank's summed loss over them
    correct: float = 0.0     # and its correct predictions
    seconds: float = 0.0     # spent in this epoch before `started`
    history: list = field(default_factory=list)  # every finished epoch's record, oldest first
    started: float = field(default_factory=time.time, repr=False)  # when this process took the epoch up

    def step_done(self, batch_size, world_size):
        """One step of batch_size rows on each of world_size ranks."""
        self.steps += 1
        self.rows_done += batch_size * world_size
        self.seen += batch_size

    def epoch_seconds(self):
        return self.seconds + time.time() - self.started

    def take_totals(self, totals):
        """The running (loss sum, correct) kept on the device during the epoch -> the state."""
        self.loss_sum, self.correct = (float(x) for x in totals.asnumpy())

    def next_epoch(self):
        self.epoch += 1
        self.steps = self.rows_done = self.seen = 0
        self.loss_sum = self.correct = self.seconds = 0.0
        self.started = time.time()

    def to_meta(self):
        """meta.json's record of a mid-epoch checkpoint (its `partial`)."""
        return {"partial": {"epoch": self.epoch, "steps": self.steps, "rows_done": self.rows_done,
                            "loss_sum": self.loss_sum, "correct": self.correct, "seen": self.seen,
                            "seconds": self.epoch_seconds()}}

    @classmethod
    def from_meta(cls, meta):
        """The state a checkpoint's meta.json resumes: after a finished epoch, the next one from
        its start; mid-epoch, where it stopped."""
        if meta["finished"]:
            return cls(epoch=meta["epoch"] + 1, history=meta["history"])
        partial = meta["partial"]
        return cls(epoch=partial["epoch"], steps=partial["steps"], rows_done=partial["rows_done"],
                   seen=partial["seen"], loss_sum=partial["loss_sum"], correct=partial["correct"],
                   seconds=partial["seconds"], history=meta["history"])
