"""Rank 0's report files: metrics.jsonl, the classification report, the confusion matrix
(text and heat map) and the learning curves."""
import json
import os
import sys

import numpy as np
from tqdm import tqdm

from .logs import log
from .store import atomic_file, write_file


def write_report(output_dir, labels, predictions, classes):
    """classification_report.txt, confusion_matrix.txt and confusion_matrix.png (row-normalized),
    for labels and predictions 0..K-1 of the K names in classes."""
    from sklearn.metrics import classification_report, confusion_matrix
    report = classification_report(labels, predictions, labels=range(len(classes)),
                                   target_names=classes, digits=4, zero_division=0)
    counts = confusion_matrix(labels, predictions, labels=range(len(classes)))
    paths = {name: os.path.join(output_dir, name) for name in
             ("classification_report.txt", "confusion_matrix.txt", "confusion_matrix.png")}
    write_file(paths["classification_report.txt"], report)
    with atomic_file(paths["confusion_matrix.txt"], "w") as f:
        width = max(map(len, classes)) + 2
        f.write("rows: true class, columns: predicted class\n")
        f.write(" " * width + "".join(c.rjust(width) for c in classes) + "\n")
        for name, row in zip(classes, counts):
            f.write(name.ljust(width) + "".join(str(n).rjust(width) for n in row) + "\n")
    plot_confusion_matrix(counts, classes, paths["confusion_matrix.png"])
    return report, paths


def plot_confusion_matrix(counts, classes, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    k = len(classes)
    normalized = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.5, 0.5 * k + 2.5)  # cells stay readable from 2 classes to DBpedia's 14 and more
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax)
    ax.set(xticks=range(k), yticks=range(k), xlabel="Predicted label", ylabel="True label",
           title="Normalized confusion matrix")
    ax.set_xticklabels(classes, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticklabels(classes)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{normalized[i, j]:.2f}", ha="center", va="center", fontsize=10 if k <= 8 else 7,
                    color="white" if normalized[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def tensorboard_writer(output_dir, purge_step):
    """Rank 0's TensorBoard event files in output_dir/tensorboard (`tensorboard --logdir`).
    purge_step: a resumed run's first step; events a stopped run wrote after it are dropped."""
    # tensorboardX imports torch where it is installed (the bench's `peers` extra), and torch
    # loaded after Horovod's MXNet library crashes the process: it imports without it.
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide_torch:
            del sys.modules["torch"]
    return SummaryWriter(os.path.join(output_dir, "tensorboard"), purge_step=purge_step or None)


def write_jsonl(path, records):
    """Replace a JSON-lines file with these records, atomically: a crash leaves the old one."""
    with atomic_file(path, "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in records)


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_learning_curves(records, path):
    """Train, validation and test loss and accuracy per epoch, from metrics.jsonl records."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    by_epoch = {r["epoch"]: r for r in records}  # a resumed run may repeat an epoch: keep the last
    epochs = sorted(by_epoch)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for split, label in (("train", "train"), ("val", "validation"), ("test", "test")):
            if any(f"{split}_{metric}" in by_epoch[e] for e in epochs):
                ax.plot(epochs, [by_epoch[e].get(f"{split}_{metric}") for e in epochs], "o-", label=label)
        ax.set(xlabel="epoch", ylabel=metric, title=metric.capitalize())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class RunLog:
    """Rank 0's record of a run as it trains: metrics.jsonl (one line an epoch), TensorBoard and
    the progress bar (where stdout is a terminal). A resumed run's say what its checkpoint says,
    no more: metrics.jsonl starts again from its history, TensorBoard drops later events."""

    def __init__(self, cfg, is_root, history, num_update):
        self.cfg, self.bar, self.writer = cfg, None, None
        self.metrics_path = os.path.join(cfg.output_dir, "metrics.jsonl")
        self.bar_shown = is_root and cfg.progress and sys.stdout.isatty()
        if is_root:
            os.makedirs(cfg.output_dir, exist_ok=True)
            write_jsonl(self.metrics_path, history)
            if cfg.tensorboard:
                self.writer = tensorboard_writer(cfg.output_dir, purge_step=num_update)

    def steps(self, epoch, first, last):
        """An epoch's step numbers first..last-1, behind a progress bar where one is shown."""
        self.bar = tqdm(range(first, last), desc=f"epoch {epoch}/{self.cfg.epochs}", leave=False,
                        disable=not self.bar_shown, file=sys.stdout)
        return self.bar

    def wants_running_loss(self, steps_done):
        """Whether to read the running loss after this step: the read waits for the device."""
        return steps_done % self.cfg.log_every_steps == 0 and bool(self.writer or self.bar_shown)

    def running_loss(self, loss, lr, num_update):
        self.bar.set_postfix(loss=f"{loss:.4f}")
        if self.writer:
            self.writer.add_scalar("train/running_loss", loss, num_update)
            self.writer.add_scalar("lr", lr, num_update)

    def epoch(self, record, num_update, checkpoint_dir):
        """Rank 0: a finished epoch's record, in every place this log writes, and one line."""
        append_jsonl(self.metrics_path, record)
        if self.writer:  # at the optimizer's update count, which a resumed run continues
            for split in ("train", "val", "test"):
                for metric in ("loss", "accuracy"):
                    if f"{split}_{metric}" in record:
                        self.writer.add_scalar(f"{split}/{metric}", record[f"{split}_{metric}"], num_update)
            self.writer.add_scalar("samples_per_sec_per_worker", record["samples_per_sec_per_worker"], num_update)
        scores = "".join(f"{split} loss {record[split + '_loss']:.4f} acc {record[split + '_accuracy']:.4f} | "
                         for split in ("val", "test") if split + "_loss" in record)
        log.info("epoch %d/%d: train loss %.4f acc %.4f | %s%.1fs, %.0f samples/s per worker -> %s",
                 record["epoch"], self.cfg.epochs, record["train_loss"], record["train_accuracy"], scores,
                 record["seconds"], record["samples_per_sec_per_worker"], checkpoint_dir)

    def close(self):
        if self.writer:
            self.writer.close()
