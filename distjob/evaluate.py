"""Rank 0's evaluation: loss and accuracy each epoch, and the final report files."""
import json
import os

import mxnet as mx
import numpy as np

from .data import CLASSES


def predict_probs(model, ids, ctx, batch_size=1024):
    """(N, max_tokens) int32 ids -> (N, 4) class probabilities, as numpy."""
    probs = []
    for start in range(0, len(ids), batch_size):
        batch = mx.nd.array(ids[start:start + batch_size], ctx=ctx, dtype="int32")
        probs.append(mx.nd.softmax(model(batch)))
    return np.concatenate([p.asnumpy() for p in probs]) if probs else np.zeros((0, len(CLASSES)), np.float32)


def loss_and_accuracy(probs, labels):
    """Mean cross-entropy and accuracy from predicted probabilities."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.log(np.maximum(picked, 1e-12)).mean()), float((probs.argmax(1) == labels).mean())


def write_report(output_dir, labels, predictions):
    """classification_report.txt, confusion_matrix.txt and confusion_matrix.png (row-normalized)."""
    from sklearn.metrics import classification_report, confusion_matrix
    report = classification_report(labels, predictions, labels=range(len(CLASSES)),
                                   target_names=CLASSES, digits=4, zero_division=0)
    counts = confusion_matrix(labels, predictions, labels=range(len(CLASSES)))
    paths = {name: os.path.join(output_dir, name) for name in
             ("classification_report.txt", "confusion_matrix.txt", "confusion_matrix.png")}
    with open(paths["classification_report.txt"], "w") as f:
        f.write(report)
    with open(paths["confusion_matrix.txt"], "w") as f:
        width = max(map(len, CLASSES)) + 2
        f.write("rows: true class, columns: predicted class\n")
        f.write(" " * width + "".join(c.rjust(width) for c in CLASSES) + "\n")
        for name, row in zip(CLASSES, counts):
            f.write(name.ljust(width) + "".join(str(n).rjust(width) for n in row) + "\n")
    plot_confusion_matrix(counts, paths["confusion_matrix.png"])
    return report, paths


def plot_confusion_matrix(counts, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    normalized = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    image = ax.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax)
    ax.set(xticks=range(len(CLASSES)), yticks=range(len(CLASSES)), xticklabels=CLASSES,
           yticklabels=CLASSES, xlabel="Predicted label", ylabel="True label",
           title="Normalized confusion matrix")
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            ax.text(j, i, f"{normalized[i, j]:.2f}", ha="center", va="center",
                    color="white" if normalized[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
