"""distjob's model and training step in PyTorch, for the bench's peers section (peers.py), which
runs them in processes of their own:

    python -m distjob.bench.torch_peer epochs FOLDER --poolings mean,sum ...  # samples/s of epochs
    MASTER_ADDR=127.0.0.1 MASTER_PORT=P python -m distjob.bench.torch_peer ddp FOLDER --rank R ...

Each writes its numbers to FOLDER/result.json (DDP: rank 0, for the whole world).
"""
# torch before anything that may load horovod.mxnet: imported after it, torch's import crashes
# (segfault). That is why torch runs here, never in the bench's own process.
import torch  # isort: skip
import torch.distributed as dist  # isort: skip

import argparse
import datetime
import json
import time
from pathlib import Path

import numpy as np
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..model import frozen_table, pooled_width
from .timing import time_per_call

POOLINGS = ("mean", "sum", "max", "meanmax", "attention", "flatten")  # every pooling distjob has
BAGS = {"mean": ("mean",), "sum": ("sum",), "max": ("max",), "meanmax": ("mean", "max")}  # EmbeddingBag modes
WINDOWS = 3                                    # timed windows, the best counts (as worker.py)


class TorchClassifier(nn.Module):
    """build_model's classifier in PyTorch: the frozen table (model.frozen_table's) -> pooling ->
    Dense 128 relu -> Dense 64 relu -> Dense K. mean, sum, max and meanmax are EmbeddingBags
    with padding_idx=0, which leave padding out of the pooling and out of the mean's count, as
    distjob's pooling does; attention and flatten start from a frozen Embedding."""

    def __init__(self, table, pooling, max_tokens, num_classes):
        super().__init__()
        weights = torch.from_numpy(np.asarray(table, np.float32))
        self.pooling = pooling
        if pooling in BAGS:
            self.bags = nn.ModuleList(nn.EmbeddingBag.from_pretrained(weights, freeze=True, mode=mode, padding_idx=0)
                                      for mode in BAGS[pooling])
        else:
            self.embedding = nn.Embedding.from_pretrained(weights, freeze=True)
        if pooling == "attention":  # one score per token: w . vector + b, as distjob's scorer
            self.attention = nn.Linear(table.shape[1], 1)
        self.classifier = nn.Sequential(
            nn.Linear(pooled_width(pooling, table.shape[1], max_tokens), 128), nn.ReLU(),
            nn.Linear(128, 64), nn.ReLU(),
            nn.Linear(64, num_classes))

    def pooled(self, ids):
        """(B, T) ids -> (B, pooled width)."""
        if self.pooling in BAGS:
            return torch.cat([bag(ids) for bag in self.bags], dim=1)
        vectors = self.embedding(ids)  # frozen: autograd computes no gradient for it
        if self.pooling == "flatten":
            return vectors.flatten(1)
        # attention: a softmax over the text's own tokens, then its weighted sum beside the mean
        mask = (ids != 0).float()
        n_tokens = mask.sum(dim=1, keepdim=True).clamp(min=1)
        weights = torch.softmax(self.attention(vectors).squeeze(2) + (mask - 1) * 1e4, dim=1)
        weighted = torch.bmm(weights.unsqueeze(1), vectors).squeeze(1)
        return torch.cat([weighted, (vectors * mask.unsqueeze(2)).sum(dim=1) / n_tokens], dim=1)

    def forward(self, ids):
        return self.classifier(self.pooled(ids))

    def trained(self):
        """The parameters Adam trains (the embedding is frozen): the head's, and the scorer's."""
        return [p for p in self.parameters() if p.requires_grad]


def adam(model):
    """Adam on the trained layers (the embedding is frozen)."""
    return torch.optim.Adam(model.trained(), lr=1e-3)


def shard_batches(ids, labels, order, batch_size):
    """baselines.sliced_id_batches in PyTorch: the epoch's shard (rows `order`) as one int32
    tensor, sliced per batch."""
    shard_ids, shard_labels = torch.from_numpy(ids[order]), torch.from_numpy(labels[order].astype(np.int64))
    for start in range(0, len(order) - batch_size + 1, batch_size):
        yield shard_ids[start:start + batch_size], shard_labels[start:start + batch_size]


def train_epoch(model, optimizer, batches):
    """One pass over (ids, labels) batches; the running loss stays a tensor until the end, as
    distjob's stays on the device. -> the summed loss."""
    loss_sum = torch.zeros(())
    for ids, labels in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(ids), labels)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
    return loss_sum.item()


def epochs_per_second(model, ids, labels, order, batch_size, min_seconds):
    """samples/s of training epochs over the rows `order` after one warm-up epoch, until min_seconds."""
    optimizer = adam(model)
    ms = time_per_call(lambda _: train_epoch(model, optimizer, shard_batches(ids, labels, order, batch_size)),
                       [0], min_seconds)
    return len(order) // batch_size * batch_size / (ms / 1e3)


def main_epochs(args):
    """FOLDER's ids, labels, order and matrix_D.npy per width D -> {D: {pooling: samples/s}} in
    result.json."""
    folder = Path(args.folder)
    ids, labels, order = (np.load(folder / f"{name}.npy") for name in ("ids", "labels", "order"))
    rates = {}
    for dim in args.dims.split(","):
        matrix = np.load(folder / f"matrix_{dim}.npy")
        for pooling in args.poolings.split(","):
            model = TorchClassifier(frozen_table(matrix, pooling), pooling, ids.shape[1], args.num_classes)
            rate = epochs_per_second(model, ids, labels, order, args.batch_size, args.min_seconds)
            rates.setdefault(dim, {})[pooling] = rate
    (folder / "result.json").write_text(json.dumps(rates))


def main_ddp(args):
    """One DDP worker on FOLDER's table and its rank's ids and labels: worker.py's steps and
    windows; rank 0 writes the samples/s of all workers to result.json."""
    dist.init_process_group("gloo", rank=args.rank, world_size=args.world_size,  # MASTER_ADDR/PORT
                            timeout=datetime.timedelta(seconds=120))  # a lost peer fails the run, not hangs it
    folder, B = Path(args.folder), args.batch_size
    ids = torch.from_numpy(np.load(folder / f"ids_{args.rank}.npy"))
    labels = torch.from_numpy(np.load(folder / f"labels_{args.rank}.npy").astype(np.int64))
    model = TorchClassifier(np.load(folder / "table.npy"), args.pooling, ids.shape[1], args.num_classes)
    optimizer = adam(model)
    model = DistributedDataParallel(model)  # broadcasts rank 0's weights

    def batches(first, count):  # worker.py's slices, cycling over the shard
        n_batches = len(ids) // B
        for i in range(first, first + count):
            part = slice((i % n_batches) * B, (i % n_batches + 1) * B)
            yield ids[part], labels[part]
    train_epoch(model, optimizer, batches(0, args.warmup))
    windows = []
    for window in range(WINDOWS):
        dist.barrier()
        started = time.perf_counter()
        train_epoch(model, optimizer, batches(args.warmup + window * args.steps, args.steps))
        dist.barrier()
        windows.append(time.perf_counter() - started)
    if args.rank == 0:
        rate = args.world_size * B * args.steps / min(windows)
        (folder / "result.json").write_text(json.dumps({"np": args.world_size, "samples_per_s": rate}))
    dist.destroy_process_group()


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m distjob.bench.torch_peer", description=__doc__.split("\n\n")[0])
    commands = p.add_subparsers(dest="command", required=True)
    epochs = commands.add_parser("epochs", help="samples/s of training epochs, one process")
    epochs.add_argument("folder", help="holds ids.npy, labels.npy, order.npy (an epoch's rows) and "
                        "matrix_D.npy for each width D")
    epochs.add_argument("--dims", required=True, help="widths D, comma-separated")
    epochs.add_argument("--poolings", default=",".join(POOLINGS))
    epochs.add_argument("--min-seconds", type=float, default=1.0)
    ddp = commands.add_parser("ddp", help="one DDP worker over Gloo")
    ddp.add_argument("folder", help="holds table.npy, and ids_R.npy and labels_R.npy for each rank R")
    ddp.add_argument("--rank", type=int, required=True)
    ddp.add_argument("--world-size", type=int, required=True)
    ddp.add_argument("--pooling", default="mean", choices=POOLINGS)
    ddp.add_argument("--steps", type=int, default=50, help="steps per timed window")
    ddp.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    for command in (epochs, ddp):
        command.add_argument("--num-classes", type=int, required=True)
        command.add_argument("--batch-size", type=int, default=1024, help="per process")
        command.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.command == "epochs":
        main_epochs(args)
    else:
        main_ddp(args)


if __name__ == "__main__":
    main()
