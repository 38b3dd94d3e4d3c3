"""python -m distjob.bench on tiny sizes: it runs every section, prints every row, and its
--json parses. Timings are not asserted: they belong to the machine, not to the code."""
import json
import math
import shutil
import sys

from distjob import data
from conftest import run

TINY = ["--rows", "192", "--batch-size", "64", "--dims", "50,300", "--hvd-dims", "50",
        "--vocab-size", "2000", "--min-seconds", "0", "--steps", "2", "--warmup", "1",
        "--hvd-batch-sizes", "128"]


def test_bench_prints_every_row_and_its_json_parses(tmp_path):
    labels, texts = data.generate_agnews(200, seed=3)
    data.write_agnews_csv(tmp_path / "train.csv", labels, texts)
    result = run([sys.executable, "-m", "distjob.bench", "--json", "--data-dir", str(tmp_path), *TINY],
                 timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)  # stdout is the JSON alone
    assert str(tmp_path / "train.csv") in report["data"]
    assert "300-d: random" in report["embeddings"]  # no 300-d GloVe here: it says so

    names = [row["name"] for row in report["rows"]]
    for section in ("1. epoch throughput, 50-d", "1. epoch throughput, 300-d", "2. levers, 50-d",
                    "2. levers, 300-d", "3. embedding+pooling vs the numpy floor, 50-d",
                    "3. embedding+pooling vs the numpy floor, 300-d", "4. backward", "5. embedding matrix",
                    "6. horovodrun weak scaling, 50-d"):
        assert any(row["section"].startswith(section) for row in report["rows"]), section
    for pooling in ("mean", "sum", "flatten"):
        assert names.count(f"seed pipeline, {pooling}") == 2  # 50-d and 300-d
    for pooling in ("mean", "sum", "max", "flatten", "attention"):
        assert names.count(f"distjob pipeline, {pooling}") == 2
    assert sum(name.startswith("seed: tokenize") for name in names) == 2
    assert sum("= distjob now" in name for name in names) == 2
    assert sum(name == "+ loss and running totals hybridized" for name in names) == 2
    assert sum(name.startswith("numpy/scipy floor") for name in names) == 8
    assert {"-np 1, whole machine", "-np 2 --gloo, whole machine, workers floating"} <= set(names)
    assert sum(name.startswith("-np 1, OMP_NUM_THREADS=") for name in names) == 1
    assert any("HOROVOD_CYCLE_TIME" in n for n in names) and any("fp16" in n for n in names)
    assert any("no allreduce" in n for n in names)
    assert sum(name.startswith("ceiling: its dense layers alone") for name in names) == 6  # 3 x 2 widths
    if shutil.which("taskset"):  # per-core weak scaling: each worker pinned to its own core
        assert {"-np 1, pinned to one core", "-np 2 --gloo, a core each, against -np 1 on one core",
                "-np 2 --gloo, each worker pinned to a core of its own (launch/run.sh)",
                "-np 2 pinned, Gloo's threads at nice 19, not SCHED_IDLE",
                "-np 2 pinned, Gloo's threads left at normal priority",
                "-np 1 pinned, 128 per step", "-np 2 pinned, 128 per worker per step",
                "-np 1 pinned, 128 per step, MXNet's Adam: a call per tensor (train.py: FusedAdam)"} <= set(names)
    assert all(row["value"] > 0 and math.isfinite(row["value"]) for row in report["rows"])

    # Every row is in the printed table too (on stderr with --json), with the targets.
    for row in report["rows"]:
        assert row["name"] in result.stderr, row["name"]
    assert {t["target"] for t in report["targets"]} == {
        "distjob epoch throughput / seed's, same pooling",
        "embedding+pooling time in a training step / numpy floor",
        "-np 2 samples/s / -np 1 samples/s (2 cores)", "embedding-matrix build, seconds"}
    assert result.stderr.count("MET ") + result.stderr.count("MISS ") == len(report["targets"])
