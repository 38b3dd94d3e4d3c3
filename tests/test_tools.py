"""compare, evaluate, explain and predict, run as a user runs them, on a real checkpoint."""
import csv
import importlib.util
import json
import re
import shutil
import sys

import pytest

from distjob import checkpoint, generated
from conftest import BIN, run, run_all


def tool_cmd(name, *args):
    return [sys.executable, "-m", f"distjob.{name}", *map(str, args)]


def tool(name, *args, **kw):
    return run(tool_cmd(name, *args), **kw)


def printed_accuracy(stdout):
    return float(re.search(r"^accuracy (\S+)", stdout, re.M).group(1))


@pytest.fixture(scope="module")
def test_mode_dir(tmp_path_factory, two_epoch_run):
    """A copy of the session's 2-epoch test-mode run: evaluate writes beside it (eval/)."""
    out = tmp_path_factory.mktemp("tools-test-mode") / "run"
    shutil.copytree(two_epoch_run, out)
    return out


@pytest.fixture(scope="module")
def real_dir(agnews_small_run):
    """The session's real-data run: 6,000 rows of test.csv, 1,600 held out (configs/agnews-small.yaml);
    the tools only read it."""
    return agnews_small_run[0]


def test_evaluate_reproduces_the_training_runs_accuracy(test_mode_dir, tmp_path):
    result = tool("evaluate", test_mode_dir, "--test-mode", "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((test_mode_dir / "results.json").read_text())
    records = [json.loads(line) for line in (test_mode_dir / "metrics.jsonl").read_text().splitlines()]
    chosen = max(records, key=lambda r: r["val_accuracy"])  # validation chooses; test is reported
    assert printed_accuracy(result.stdout) == pytest.approx(results["test_accuracy"], abs=5e-5)
    assert results["test_accuracy"] == chosen["test_accuracy"] and results["best_epoch"] == chosen["epoch"]
    assert "Sci/Tech" in result.stdout  # the classification report
    for name in ("confusion_matrix.txt", "confusion_matrix.png", "learning_curves.png",
                 "classification_report.txt"):
        assert (tmp_path / name).stat().st_size > 0
    assert "Business" in (tmp_path / "confusion_matrix.txt").read_text()


def test_evaluate_writes_beside_the_run_by_default(test_mode_dir):
    best = checkpoint.resolve(str(test_mode_dir), "best")  # a checkpoint dir works as well as its run dir
    result = tool("evaluate", best)  # the checkpoint's own (test-mode) evaluation split
    assert result.returncode == 0, result.stderr
    assert (test_mode_dir / "eval" / "learning_curves.png").exists()


def topic_lines():
    """One line per class made of that class's words in the generated data: (class, text)."""
    return [(name, " ".join(words[:8])) for name, words in list(generated.TOPICS.items())[:4]]


def test_predict_params_and_exported_graph_agree(test_mode_dir, tmp_path):
    lines = topic_lines()
    (tmp_path / "lines.txt").write_text("\n".join(text for _, text in lines) + "\n\n")
    from_params = tool("predict", test_mode_dir, input=(tmp_path / "lines.txt").read_text())
    exported = tool("predict", test_mode_dir, tmp_path / "lines.txt", "--exported")
    assert from_params.returncode == 0 and exported.returncode == 0, from_params.stderr + exported.stderr
    rows = [line.split("\t") for line in from_params.stdout.splitlines()]
    assert [row[0] for row in rows] == [label for label, _ in lines]  # blank lines skipped
    assert all(0.25 < float(row[1]) <= 1 for row in rows)
    assert exported.stdout == from_params.stdout


def test_explain_saves_html_for_the_predicted_class(test_mode_dir, tmp_path):
    label, text = topic_lines()[1]
    html = tmp_path / "why.html"
    result = tool("explain", test_mode_dir, text, "--num-samples", 200, "--output", html)
    assert result.returncode == 0, result.stderr
    assert re.search(rf"{label} +[0-9.]+ +<- predicted", result.stdout)
    assert re.search(r"^  [+-]0\.\d{4}  \w+$", result.stdout, re.M)  # word weights
    assert label in html.read_text()


SKLEARN_ROW = "scikit-learn TF-IDF + LinearSVC"
FASTTEXT_ROWS = ["fastText, bigrams", "fastText, bigrams, GloVe as its initial embedding"]


def compare_rows(out):
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r["pooling"] != "-"], [r for r in rows if r["pooling"] == "-"]


def test_compare_trains_and_tabulates_each_approach_beside_the_cheap_baselines(tmp_path):
    result = tool("compare", "--test-mode", "--epochs", 1, "--no-progress", "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    saved = (tmp_path / "results.md").read_text().strip()
    assert saved in result.stdout  # printed as saved
    split, table = saved.split("\n\n")
    assert split.startswith("Rows: 3040 training, 160 validation, 800 test rows")
    approaches, baselines = compare_rows(tmp_path)
    assert len(table.splitlines()) == 2 + len(approaches) + len(baselines)  # header, rule, one row each
    assert [r["pooling"] for r in approaches] == ["flatten", "mean", "sum", "attention"]
    assert all(r["width"] == "50" and 0.25 < float(r["test accuracy"]) <= 1 and
               0.25 < float(r["validation accuracy"]) <= 1 and r["best epoch"] == "1 of 1" for r in approaches)
    fasttext = FASTTEXT_ROWS if importlib.util.find_spec("fasttext") else []
    assert [r["approach"] for r in baselines] == [SKLEARN_ROW, *fasttext]
    assert all(0.5 < float(r["test accuracy"]) <= 1 and float(r["train time (s)"]) >= 0 for r in baselines)


def test_compare_without_fasttext_says_so_and_tabulates_the_rest(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "fasttext.py").write_text('raise ImportError("no fasttext here")\n')
    result = tool("compare", "--test-mode", "--epochs", 1, "--no-progress", "--poolings", "mean", "--output-dir",
                  tmp_path / "out", env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("fastText rows skipped: `import fasttext` failed") == 1
    approaches, baselines = compare_rows(tmp_path / "out")
    assert [r["pooling"] for r in approaches] == ["mean"] and [r["approach"] for r in baselines] == [SKLEARN_ROW]


def test_compare_under_horovodrun_sets_horovod_up_as_train_does(tmp_path):
    """compare starts Horovod through train's one way in: before its first training run the
    0.1 ms cycle is set and, after init, each worker's Gloo threads run under SCHED_IDLE."""
    result = run([str(BIN / "horovodrun"), "-np", "2", "--gloo", sys.executable, "-m", "distjob.compare",
                  "--test-mode", "--epochs", "1", "--no-progress", "--poolings", "mean", "sum",
                  "--output-dir", str(tmp_path)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    setups = re.findall(r"\[rank (\d)/2\] world of 2 worker\(s\).*Horovod cycle (\S+) ms, (\d+) Gloo thread",
                        result.stdout)
    assert sorted(rank for rank, _, _ in setups) == ["0", "0", "1", "1"]  # each rank, each approach
    assert all(cycle == "0.1" and int(lowered) > 0 for _, cycle, lowered in setups), setups
    assert [r["pooling"] for r in compare_rows(tmp_path)[0]] == ["mean", "sum"]


def test_bad_input_is_one_line_and_exit_2(test_mode_dir, tmp_path):
    missing = tmp_path / "no-such-run"
    result, empty = run_all([tool_cmd("predict", missing), tool_cmd("explain", test_mode_dir, " ")],
                            input="some text\n")  # predict's lines; explain takes its text from the argument
    assert result.returncode == 2 and str(missing) in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert empty.returncode == 2 and "no words" in empty.stderr and "Traceback" not in empty.stderr


def test_real_data_evaluate_explain_predict(real_dir, agnews_dir, tmp_path):
    evaluated = tool("evaluate", real_dir, "--data-dir", agnews_dir, "--output-dir", tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads((real_dir / "results.json").read_text())
    assert "1600 rows" in evaluated.stdout  # the run's held-out rows, not all of test.csv
    assert printed_accuracy(evaluated.stdout) == pytest.approx(results["test_accuracy"], abs=5e-5)
    assert results["test_accuracy"] > 0.8

    explained = tool("explain", real_dir, "--index", 0, "--data-dir", agnews_dir,
                     "--num-samples", 200, "--output", tmp_path / "row0.html")
    assert explained.returncode == 0, explained.stderr
    assert "true class:" in explained.stdout and (tmp_path / "row0.html").exists()

    headlines = {"Sports": "The Yankees beat the Red Sox in extra innings to win the series",
                 "Business": "Oil prices jumped and stocks fell as investors worried about profits",
                 "Sci/Tech": "Microsoft releases new software to protect Windows users from internet viruses"}
    predicted = tool("predict", real_dir, input="\n".join(headlines.values()))
    assert predicted.returncode == 0, predicted.stderr
    assert [line.split("\t")[0] for line in predicted.stdout.splitlines()] == list(headlines)
