import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import yaml

try:  # torch (optional: the peers extra) before any test module loads horovod.mxnet: after it,
    import torch  # noqa: F401   torch's import crashes (segfault). tests/test_bench_peers.py uses it.
except ImportError:
    pass

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
AGNEWS = SHARED / "data" / "ag_news"
BIN = Path(sys.executable).parent  # horovodrun lives beside this python


def run(args, timeout=300, env=None, **kw):
    """Run a command as a user would; returns CompletedProcess with text output."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=full_env, **kw)


def run_all(commands, **kw):
    """Run independent commands at once, each as run() does; -> their results, in order. For
    processes that stop early (an error case): their start-up, importing MXNet and Horovod, is
    most of their time, and it runs on one core each."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda command: run(command, **kw), commands))


def one_error_line(result, expected):
    """The result is exit code 2 with exactly one line on stderr, which says `expected`."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert expected in result.stderr, result.stderr


def wait_for_path(path, job, seconds):
    """Wait until path exists while job (a Popen with piped output) runs; if the job ends or the
    time runs out first, stop it and fail showing its output."""
    deadline = time.time() + seconds
    while not path.exists():
        if job.poll() is not None or time.time() > deadline:
            if job.poll() is None:
                # The job's own process group (start_new_session) takes its ranks along.
                os.killpg(job.pid, signal.SIGKILL) if os.getpgid(job.pid) == job.pid else job.kill()
            output = "".join(part or "" for part in job.communicate())
            pytest.fail(f"{path} did not appear; the job ended with {job.returncode}:\n{output[-3000:]}")
        time.sleep(0.1)


def kubectl():
    """kubectl (kustomize v5 built in) on PATH or beside this python; None where neither has it."""
    return shutil.which("kubectl") or shutil.which("kubectl", path=str(BIN))


def kustomize(directory):
    """The objects `kubectl kustomize DIRECTORY` prints (real kustomize); skips without kubectl,
    raises CalledProcessError with kustomize's message when it refuses the files."""
    binary = kubectl()
    if not binary:
        pytest.skip("kubectl is not installed (kustomize renders k8s/ with `kubectl kustomize`)")
    result = subprocess.run([binary, "kustomize", str(directory)], capture_output=True, text=True,
                            timeout=60, check=True)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def train_cmd(*args):
    return [sys.executable, "-m", "distjob.train", "--no-progress", *map(str, args)]


def horovodrun_cmd(n, *args):
    return [str(BIN / "horovodrun"), "-np", str(n), "--gloo", sys.executable, "-m", "distjob.train",
            "--no-progress", *map(str, args)]


@pytest.fixture(scope="session")
def agnews_dir():
    if not (AGNEWS / "test.csv").exists():
        pytest.skip(f"real AG News not present at {AGNEWS}")
    return AGNEWS


@pytest.fixture(scope="session")
def test_mode_run(tmp_path_factory):
    """One `python -m distjob.train --test-mode` run, shared by the tests that read its files."""
    out = tmp_path_factory.mktemp("test-mode")
    result = run(train_cmd("--test-mode", "--output-dir", out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out, result


@pytest.fixture(scope="session")
def two_epoch_run(tmp_path_factory):
    """A finished `--test-mode --epochs 2` run: trained once, copied by the tests that resume,
    damage or write into it (a copy resumes as the original would)."""
    out = tmp_path_factory.mktemp("two-epochs") / "run"
    result = run(train_cmd("--test-mode", "--epochs", 2, "--output-dir", out))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def agnews_small_run(tmp_path_factory, agnews_dir):
    """configs/agnews-small.yaml as it is, on the real test.csv: (output dir, result). Its accuracy
    is test_train's check; the tools read the run."""
    out = tmp_path_factory.mktemp("agnews-small")
    result = run(train_cmd("--config", ROOT / "configs" / "agnews-small.yaml", "--data-dir", agnews_dir,
                           "--output-dir", out), timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def rank_process(rank, output_dir):
    """The distjob process of this Horovod rank writing to output_dir, or None."""
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "distjob." in cmdline and f"--output-dir {output_dir}" in cmdline and \
                    proc.environ().get("HOROVOD_RANK") == str(rank):
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return None
