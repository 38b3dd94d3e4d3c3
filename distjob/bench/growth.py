"""Section 8, cost as data grows: everything a run does before its first step, at growing row
counts (the training file repeated, or generated rows), text by text in python (the plain
baseline, as every rank would run it) against distjob's prepared ids, cold (no cache) and warm; the
memory of each rank training on them; and the wall time to a test accuracy, cold and warm.

Each measurement runs in a process of its own, so its peak memory is its own; each prints JSON:
    python -m distjob.bench.growth text-by-text TRAIN.csv TEST.csv MAX_TOKENS
    python -m distjob.bench.growth prepared DATA_DIR CACHE_DIR MAX_TOKENS
"""
import collections
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import prepare
from ..config import parse_config
from ..generated import generate_rows, write_labeled_csv
from ..machine import memory_mb
from ..prepare import StageSeconds
from ..readers import read_labeled_csv
from ..text import tokenize, vocab_of_counts
from .horovod import horovodrun_path
from .sections import log

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("read", "tokenize", "vocab", "encode", "write", "check", "map")


def text_by_text(train_path, test_path, max_tokens):
    """The python path: csv.reader, tokenize() per text, a Counter vocabulary, an id per token
    by dict lookup. -> seconds per stage."""
    stage = StageSeconds()
    _, train_texts = read_labeled_csv(train_path)
    _, test_texts = read_labeled_csv(test_path)
    stage("read")
    train_tokens = [tokenize(text) for text in train_texts]
    test_tokens = [tokenize(text) for text in test_texts]
    stage("tokenize")
    vocab = vocab_of_counts(collections.Counter(token for tokens in train_tokens for token in tokens))
    stage("vocab")
    for tokens_of_split in (train_tokens, test_tokens):
        ids = np.zeros((len(tokens_of_split), max_tokens), np.int32)
        for row, tokens in enumerate(tokens_of_split):
            ids[row, :min(len(tokens), max_tokens)] = [vocab.token_to_idx.get(t, 1) for t in tokens[:max_tokens]]
    stage("encode")
    return dict(stage)


def prepared_ids(data_dir, cache_dir, max_tokens):
    """What a run's local rank 0 does before its first step: prepare.ensure (build, or check the
    entry there), then map it. -> seconds per stage (cold: the build's; warm: check) and "total"."""
    stage = StageSeconds()
    cfg = parse_config(["--data-dir", data_dir, "--cache-dir", cache_dir, "--max-tokens", str(max_tokens)])
    path, built = prepare.ensure(cfg)
    stage("check")  # the inputs digested, the entry found and its files' digests checked, or built
    prepare.open_prepared(path)
    stage("map")
    checked_or_built = {"check": stage["check"]} if not built else built
    return {**checked_or_built, "map": stage["map"], "total": stage["check"] + stage["map"]}


def measured(command):
    """Run command to its end -> its stdout."""
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    if result.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return result.stdout


def write_rows(folder, n_rows, args):
    """folder/train.csv of n_rows (the bench's training file repeated, else generated) and
    folder/test.csv (the data dir's, else generated)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(args.data_dir or "") / args.train_file
    if args.data_dir and source.exists():
        raw = source.read_bytes()
        raw = raw if raw.endswith(b"\n") else raw + b"\n"
        rows_in_file = raw.count(b"\n")
        with open(folder / "train.csv", "wb") as f:
            for _ in range(n_rows // rows_in_file):
                f.write(raw)
            f.writelines(raw.splitlines(keepends=True)[:n_rows % rows_in_file])
    else:
        write_labeled_csv(folder / "train.csv", *generate_rows(n_rows, seed=0))
    test = Path(args.data_dir or "") / "test.csv"
    if args.data_dir and test.exists():
        (folder / "test.csv").write_bytes(test.read_bytes())
    else:
        write_labeled_csv(folder / "test.csv", *generate_rows(max(n_rows // 10, 100), seed=1))


def prepare_cmd(folder, args):
    return [sys.executable, "-m", "distjob.bench.growth", "prepared", str(folder), str(folder / "cache"),
            str(args.max_tokens)]


def rank_memory(folder, n_workers, start, args):
    """Train one epoch (mean pooling, the bench's batch) on folder's rows under horovodrun
    -> [(peak RSS MB, PSS MB)] per rank, from each rank's debug line."""
    command = [horovodrun_path(), "-np", n_workers, "--gloo", sys.executable, "-m", "distjob.train", "--no-progress",
               "--data-dir", folder, "--cache-dir", folder / "cache",
               "--output-dir", folder / f"out-np{n_workers}-{start}",
               "--epochs", 1, "--batch-size", args.batch_size, "--pooling", "mean", "--max-tokens", args.max_tokens,
               "--no-tensorboard", "--log-level", "debug"]
    output = measured(list(map(str, command)))
    by_rank = {int(rank): (float(peak), float(pss)) for rank, peak, pss in
               re.findall(r"\[rank (\d+)/\d+\] memory: peak RSS (\d+) MB, PSS (\d+) MB", output)}
    return [by_rank[rank] for rank in range(n_workers)]  # ranks print in any order


def section_growth(report, args):
    """Section 8: per row count, the python path vs prepared ids cold and warm (seconds per
    stage, ratios, peak memory), then each rank's memory training on the largest."""
    sections = "8. cost as data grows: before the first step, python text by text vs prepared ids"
    if not args.growth_rows:  # --growth-rows ''
        return
    with tempfile.TemporaryDirectory(prefix="distjob-bench-growth-") as tmp:
        cold_by_rows, speedups = {}, {}
        for n_rows in args.growth_rows:
            folder = Path(tmp) / f"rows-{n_rows}"
            log(f"growth: {n_rows:,} rows")
            write_rows(folder, n_rows, args)
            python_stages = last_json(measured([sys.executable, "-m", "distjob.bench.growth", "text-by-text",
                                                str(folder / "train.csv"), str(folder / "test.csv"),
                                                str(args.max_tokens)]))
            python_mb = python_stages.pop("peak_mb")
            cold_stages = last_json(measured(prepare_cmd(folder, args)))
            cold_in, cold_mb = cold_stages.pop("total"), cold_stages.pop("peak_mb")
            warm_stages = last_json(measured(prepare_cmd(folder, args)))
            warm_in, warm_mb = warm_stages.pop("total"), warm_stages.pop("peak_mb")
            python_in = sum(python_stages.values())
            cold_by_rows[n_rows], speedups[n_rows] = cold_in, (python_in / cold_in, python_in / warm_in)
            key = f"growth.{n_rows}"
            report.add(f"{key}.python", sections, f"{n_rows:,} rows: python text by text", python_in, "s",
                       note=stages_note(python_stages) + f"; peak {python_mb:.0f} MB")
            report.add(f"{key}.cold", sections, f"{n_rows:,} rows: prepared ids, cold", cold_in, "s",
                       python_in / cold_in, "faster", stages_note(cold_stages) + f"; peak {cold_mb:.0f} MB")
            report.add(f"{key}.warm", sections, f"{n_rows:,} rows: prepared ids, warm (checked, mapped)", warm_in,
                       "s", python_in / warm_in, "faster", stages_note(warm_stages) + f"; peak {warm_mb:.0f} MB")
        largest, smallest = max(args.growth_rows), min(args.growth_rows)
        report.target("cold", f"{largest:,} rows", speedups[largest][0])
        report.target("warm", f"{largest:,} rows", speedups[largest][1])
        if largest > smallest:
            growth = (cold_by_rows[largest] / cold_by_rows[smallest]) / (largest / smallest)
            report.add("growth.linearity", sections, f"cold time per row at {largest:,} / at {smallest:,} rows",
                       growth, "x", note="1: linear in rows")
        folder = Path(tmp) / f"rows-{largest}"
        for n_workers in (1, 2):
            peaks = []
            for start in ("cold", "warm"):  # cold: local rank 0 prepares the ids in its own process first
                if start == "cold":
                    shutil.rmtree(folder / "cache")
                for rank, (peak, pss) in enumerate(rank_memory(folder, n_workers, start, args)):
                    report.add(f"growth.{largest}.np{n_workers}.{start}.rank{rank}.memory", sections,
                               f"{largest:,} rows, -np {n_workers}, {start}, rank {rank}: peak RSS", peak, "MB",
                               note=f"PSS at the end {pss:.0f} MB (the mapped ids shared)")
                    peaks.append(peak)
            report.target("rss", f"-np {n_workers}, {largest:,} rows, cold or warm", max(peaks))


def last_json(output):
    """The JSON line a measured process prints last (its seconds, imports excluded: each is
    timed inside its own process)."""
    return json.loads(output.strip().splitlines()[-1])


def stages_note(seconds):
    return ", ".join(f"{name} {seconds[name]:.2f}" for name in STAGES if name in seconds)


def section_time_to_accuracy(report, args):
    """distjob's wall time from its start to the end of the first epoch at --accuracy on the
    test set (train.py's defaults on the data dir's files), without and with the prepared ids;
    the warm run goes on to its end: the test accuracy at the epoch validation chose, against
    fastText with GloVe's on the same rows (section 7), where that ran."""
    sections = "8. cost as data grows: time to accuracy"
    source = Path(args.data_dir or "")
    if not (args.data_dir and (source / args.train_file).exists() and (source / "test.csv").exists()):
        log("time to accuracy: no --data-dir with the training file and test.csv; skipped")
        return
    with tempfile.TemporaryDirectory(prefix="distjob-bench-accuracy-") as tmp:
        for start in ("cold", "warm"):  # warm: the same cache dir, now holding the ids
            out = Path(tmp) / start
            command = [sys.executable, "-m", "distjob.train", "--no-progress", "--data-dir", source,
                       "--train-file", args.train_file, "--cache-dir", Path(tmp) / "cache", "--output-dir", out,
                       "--epochs", args.accuracy_epochs]
            launched = time.time()
            job = subprocess.Popen(list(map(str, command)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, cwd=ROOT)
            reached, records = None, []
            while reached is None and job.poll() is None:
                time.sleep(0.5)
                records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] \
                    if (out / "metrics.jsonl").exists() else []
                reached = next((r for r in records if r["test_accuracy"] >= args.accuracy), None)
            if job.poll() is None and start == "cold":
                job.send_signal(signal.SIGTERM)  # the rest of the run measures nothing here
            job.wait(timeout=120 if start == "cold" else 1800)
            if start == "warm":
                add_chosen_accuracy(report, sections, out)
            if reached is None:
                best = max((r["test_accuracy"] for r in records), default=0.0)
                report.add(f"accuracy.{start}", sections, f"{start}: {args.accuracy:.0%} not reached, whole run",
                           time.time() - launched, "s", note=f"best test accuracy {best:.4f}")
                continue
            report.add(f"accuracy.{start}", sections, f"{start}: start to {args.accuracy:.0%} test accuracy",
                       reached["finished_at"] - launched, "s",
                       note=f"epoch {reached['epoch']}, test accuracy {reached['test_accuracy']:.4f}")


def add_chosen_accuracy(report, sections, out):
    """The finished run's test accuracy at the epoch validation chose, beside fastText's with GloVe."""
    results = json.loads((out / "results.json").read_text())
    fasttext = report.value("peers.fasttext.bigrams_glove.accuracy")
    report.add("accuracy.chosen", sections, "every default: test accuracy at the epoch validation chose",
               results["test_accuracy"], "fraction", note=f"epoch {results['best_epoch']} of {results['epochs']}" +
               (f"; fastText, bigrams, GloVe (section 7): {fasttext:.4f}" if fasttext is not None else ""))
    if fasttext is not None:
        report.target("ahead", "every default, the same rows", results["test_accuracy"] - fasttext)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    modes = {"text-by-text": text_by_text, "prepared": prepared_ids}
    if len(argv) != 4 or argv[0] not in modes:
        raise SystemExit(__doc__)
    print(json.dumps({**modes[argv[0]](argv[1], argv[2], int(argv[3])), "peak_mb": memory_mb()[0]}))


if __name__ == "__main__":
    main()
