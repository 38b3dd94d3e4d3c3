"""python -m distjob.bench on tiny sizes: it runs every section, prints every row, and its
--json parses. Rows are selected by their stable keys. Timings are not asserted: they belong
to the machine, not to the code."""
import importlib.util
import json
import math
import shutil
import sys

from distjob import generated
from conftest import run

TINY = ["--rows", "192", "--batch-size", "64", "--dims", "50,300", "--hvd-dims", "50",
        "--vocab-size", "2000", "--min-seconds", "0", "--steps", "2", "--warmup", "1",
        "--hvd-batch-sizes", "128", "--growth-rows", ""]

LEVERS = ("tutorial", "ids_once", "shard_sliced", "device_totals", "hybridized", "static_graph", "batch_dot_mean",
          "conv_token_sum", "row_blocks", "hybridized_totals", "fused_adam", "csr_counts")


def expected_keys(pinned):
    keys = set()
    for d in ("50d", "300d"):
        keys |= {f"epochs.{d}.{kind}.{p}" for kind in ("tutorial", "ceiling") for p in ("mean", "sum", "flatten")}
        keys |= {f"epochs.{d}.distjob.{p}" for p in ("mean", "sum", "max", "flatten", "attention", "meanmax")}
        keys |= {f"epochs.{d}.pooled_once.{p}" for p in ("mean", "sum", "max", "meanmax")}
        keys |= {f"levers.{d}.{lever}" for lever in LEVERS}
        for p in ("mean", "sum", "max", "flatten"):
            keys |= {f"floor.{d}.{p}", f"floor.{d}.{p}.distjob"}
        keys |= {f"floor.{d}.mean.mxnet_csr", f"floor.{d}.sum.mxnet_csr"}
    keys |= {f"backward.300d.{m}.{t}" for m in ("tutorial", "mean", "attention") for t in ("forward", "frozen")}
    keys |= {"backward.300d.tutorial.trainable", "embedding_build.tutorial", "embedding_build.distjob"}
    horovod = ["np1", "np2.floating", "np1.every_core", "np2.gloo_normal", "np2.cycle_1ms", "np2.no_fusion",
               "np2.fp16", "np2.num_groups_0", "np2.no_allreduce"]
    if pinned:  # per-core weak scaling: each worker pinned to its own core
        horovod += ["np2.bound", "np1.pinned", "np2.pinned", "np2.pinned.no_allreduce", "np2.pinned.gloo_nice19",
                    "np2.pinned.gloo_normal", "np1.pinned.b128", "np2.pinned.b128", "np1.pinned.b128.mxnet_adam"]
    keys |= {"peers.sklearn.tfidf_linearsvc.fit_seconds", "peers.sklearn.tfidf_linearsvc.accuracy"}
    if importlib.util.find_spec("torch"):  # the peers extra
        keys |= {f"peers.{d}.torch.{p}" for d in ("50d", "300d")
                 for p in ("mean", "sum", "max", "meanmax", "attention", "flatten")}
        keys.add("peers.50d.torch_ddp.np2.mean")
    if importlib.util.find_spec("fasttext"):  # the peers extra
        keys |= {f"peers.fasttext.{name}.{value}" for name in ("bigrams", "bigrams_glove")
                 for value in ("fit_seconds", "accuracy")}
    return keys | {f"horovod.50d.{key}" for key in horovod}


def test_bench_prints_every_row_and_its_json_parses(tmp_path):
    labels, texts = generated.generate_rows(200, seed=3)
    generated.write_labeled_csv(tmp_path / "train.csv", labels, texts)
    result = run([sys.executable, "-m", "distjob.bench", "--json", "--data-dir", str(tmp_path), *TINY],
                 timeout=600)  # a hang guard: on a busy 2-core machine it takes minutes
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)  # stdout is the JSON alone
    assert str(tmp_path / "train.csv") in report["data"]
    assert "300-d: random" in report["embeddings"]  # no 300-d GloVe here: it says so

    rows = {row["key"]: row for row in report["rows"]}
    assert len(rows) == len(report["rows"])  # keys are unique
    assert set(rows) == expected_keys(pinned=bool(shutil.which("taskset")))
    assert all(row["value"] > 0 and math.isfinite(row["value"]) for row in report["rows"])
    assert rows["epochs.50d.distjob.mean"]["ratio_of"] == "tutorial"
    assert rows["levers.300d.fused_adam"]["value"] == rows["epochs.300d.distjob.mean"]["value"]
    assert rows["horovod.50d.np1.every_core"]["name"].startswith("-np 1, OMP_NUM_THREADS=")
    # Pooled once, a whole epoch as train.py runs it, beside the same pooling from ids.
    assert math.isclose(rows["epochs.50d.pooled_once.mean"]["ratio"],
                        rows["epochs.50d.pooled_once.mean"]["value"] / rows["epochs.50d.distjob.mean"]["value"])
    for key, distjob in (("peers.300d.torch.sum", "epochs.300d.pooled_once.sum"),  # train.py's path for sum
                         ("peers.300d.torch.attention", "epochs.300d.distjob.attention"),  # from ids: its only path
                         ("peers.50d.torch_ddp.np2.mean", "horovod.50d.np2.floating")):
        if key in rows:  # distjob / PyTorch, against distjob's own row
            assert math.isclose(rows[key]["ratio"], rows[distjob]["value"] / rows[key]["value"])

    # Every row is in the printed table too (on stderr with --json), with the targets.
    for row in report["rows"]:
        assert row["name"] in result.stderr, row["name"]
    peers = {"pytorch", "pytorch_flatten"} if importlib.util.find_spec("torch") else set()
    assert {t["key"] for t in report["targets"]} == {"epoch", "floor", "scaling", "embedding"} | peers
    assert any("tutorial pipeline" in t["target"] for t in report["targets"])
    assert result.stderr.count("MET ") + result.stderr.count("MISS ") == len(report["targets"])


def test_worker_rejects_an_unknown_flag(tmp_path):
    result = run([sys.executable, "-m", "distjob.bench.worker", str(tmp_path), "--worker", "x"])
    assert result.returncode == 2 and "unrecognized arguments: --worker" in result.stderr


def test_growth_section_prints_each_size_cold_and_warm_each_ranks_memory_and_time_to_accuracy(tmp_path):
    labels, texts = generated.generate_rows(300, seed=4)
    generated.write_labeled_csv(tmp_path / "train.csv", labels, texts)
    generated.write_labeled_csv(tmp_path / "test.csv", labels[:60], texts[:60])
    result = run([sys.executable, "-m", "distjob.bench", "--json", "--growth-only", "--data-dir", str(tmp_path),
                  "--growth-rows", "400,900", "--batch-size", "64", "--accuracy", "0.5", "--accuracy-epochs", "2"],
                 timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {row["key"]: row for row in json.loads(result.stdout)["rows"]}
    sizes = {f"growth.{n}.{path}" for n in (400, 900) for path in ("python", "cold", "warm")}
    memory = {f"growth.900.np{n}.{start}.rank{rank}.memory" for n in (1, 2) for start in ("cold", "warm")
              for rank in range(n)}
    assert set(rows) == sizes | memory | {"growth.linearity", "accuracy.cold", "accuracy.warm", "accuracy.chosen"}
    for n in (400, 900):  # the speed-ups are against the python path timed in the same run
        for path in ("cold", "warm"):
            row = rows[f"growth.{n}.{path}"]
            assert math.isclose(row["ratio"], rows[f"growth.{n}.python"]["value"] / row["value"])
        assert all(f"{stage} " in rows[f"growth.{n}.cold"]["note"] for stage in ("read", "tokenize", "vocab",
                                                                                 "encode", "write", "map"))
        assert all(f"{stage} " in rows[f"growth.{n}.warm"]["note"] for stage in ("check", "map"))
    assert all(rows[key]["value"] > 0 for key in memory) and "PSS" in rows["growth.900.np2.cold.rank1.memory"]["note"]
    assert rows["accuracy.cold"]["name"] == "cold: start to 50% test accuracy", rows["accuracy.cold"]
    assert 0.25 < rows["accuracy.chosen"]["value"] <= 1 and "of 2" in rows["accuracy.chosen"]["note"]  # above chance
    targets = {t["key"]: t for t in json.loads(result.stdout)["targets"]}
    assert set(targets) == {"cold", "warm", "rss"}
