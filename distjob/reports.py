"""Rank 0's report files: metrics.jsonl, the classification report, the confusion matrix
(text and heat map) and the learning curves."""
import json
import os
import sys

import numpy as np

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
