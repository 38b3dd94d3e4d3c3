"""The bench's result: rows with a stable key, the targets met or missed, as a table or JSON."""
import json
import os
import platform

import mxnet as mx

TARGETS = {  # the targets: what is compared, and the bound it must meet
    "epoch": ("distjob epoch throughput / tutorial pipeline's, same pooling", ">=", 10.0),
    "floor": ("embedding+pooling time in a training step / numpy floor", "<=", 3.0),
    "scaling": ("-np 2 samples/s / -np 1 samples/s (2 cores)", ">=", 1.7),
    "embedding": ("embedding-matrix build, seconds", "<", 2.0),
    "cold": ("start with no prepared ids / python text by text, speed-up", ">=", 8.0),
    "warm": ("start from prepared ids / python text by text, speed-up", ">=", 30.0),
    "rss": ("peak RSS of any rank training, MB", "<=", 1024.0),
    "pytorch": ("distjob's training epoch (pooled once where train.py pools once) / PyTorch's at its "
                "best thread count", ">=", 1.5),
    "pytorch_flatten": ("distjob's flatten epoch / PyTorch's at its best thread count", ">=", 1.0),
    "ahead": ("distjob's test accuracy at the chosen epoch - fastText bigrams + GloVe's", ">", 0.0),
}


class Report:
    """Rows of (key, section, name, value, unit, ratio, note), printed as a table or JSON.
    The key (e.g. `epochs.50d.tutorial.mean`) stays when a row's label changes: select by it."""

    def __init__(self, header):
        self.header, self.rows, self.targets = header, [], []

    def add(self, key, section, name, value, unit, ratio=None, ratio_of="", note=""):
        assert all(row["key"] != key for row in self.rows), f"two rows with key {key}"
        self.rows.append({"key": key, "section": section, "name": name, "value": value, "unit": unit,
                          "ratio": ratio, "ratio_of": ratio_of, "note": note})

    def value(self, key):
        """The value of the row with this key; None where there is none."""
        return next((row["value"] for row in self.rows if row["key"] == key), None)

    def target(self, key, what, value):
        label, op, bound = TARGETS[key]
        met = {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]
        self.targets.append({"key": key, "target": label, "what": what, "value": value,
                             "bound": f"{op} {bound:g}", "met": bool(met)})

    def to_json(self):
        return json.dumps({**self.header, "rows": self.rows, "targets": self.targets}, indent=2)

    def to_text(self):
        lines = [f"{k}: {v}" for k, v in self.header.items()]
        section = None
        for row in self.rows:
            if row["section"] != section:
                section = row["section"]
                lines += ["", section]
            value = f"{row['value']:,.0f}" if row["value"] >= 100 else f"{row['value']:.3g}"
            ratio = f"{row['ratio']:.2f}x {row['ratio_of']}" if row["ratio"] is not None else ""
            line = f"  {row['name']:<72} {value:>10} {row['unit']:<9} {ratio:<26} {row['note']}"
            lines.append(line.rstrip())
        lines += ["", "targets"]
        for t in self.targets:
            lines.append(f"  {'MET ' if t['met'] else 'MISS'} {t['target']}, {t['what']}: "
                         f"{t['value']:.3g} (target {t['bound']})")
        return "\n".join(lines)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def mxnet_threads():
    """MXNet's compute threads in this process: OMP_NUM_THREADS, else MXNet's own default on
    x86, half the cores (it takes every other one for a hyperthread)."""
    return int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 2) // 2))


def machine_header(args, source=None, vocab=None, matrix_sources=None, glove_source=None):
    """What the run measured on; section 8 alone (its own files) gives no data, vocabulary or embeddings."""
    threads = os.environ.get("OMP_NUM_THREADS", f"unset (MXNet's default: {mxnet_threads()})")
    header = {"machine": f"{os.cpu_count()}-core CPU ({cpu_name()}), "
                         f"no GPU used; MXNet {mx.__version__}, python {platform.python_version()}",
              "settings": f"batch {args.batch_size}, {args.max_tokens} tokens, in-process OMP_NUM_THREADS "
                          f"{threads}; horovod: {args.steps} steps after {args.warmup} warm-up, "
                          f"pooling {args.hvd_pooling}"}
    if source is not None:
        header.update({"data": f"{source}; vocabulary {len(vocab):,}",
                       "embeddings": "; ".join(f"{d}-d: {s}" for d, s in matrix_sources.items()),
                       "glove": glove_source})
    return header
