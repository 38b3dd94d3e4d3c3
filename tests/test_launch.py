"""distjob.launch's parts that need no hosts: the host source, the world it takes, its flags, and
the learning rate after a change of world size (the rounds themselves: tests/test_multihost.py)."""
import pytest

from conftest import ROOT, run

from distjob.config import UserError
from distjob.launch import parse_hosts, take


def test_hostfile_and_discovery_lines_give_slots_in_order():
    text = "# the operator's hostfile\nworker-0 slots=4\nworker-1  slots = 2\nworker-2:3\nworker-3\n\n"
    assert list(parse_hosts(text, "x").items()) == [("worker-0", 4), ("worker-1", 2), ("worker-2", 3),
                                                    ("worker-3", 1)]


def test_a_host_line_it_cannot_read_names_the_source():
    with pytest.raises(UserError, match=r"--hostfile h: cannot read the host line 'worker-0 slots four'"):
        parse_hosts("worker-0 slots four\n", "--hostfile h")


def test_a_world_takes_hosts_in_order_up_to_max_np():
    hosts = {"a": 2, "b": 2, "c": 2}
    assert take(hosts, 0) == hosts
    assert take(hosts, 3) == {"a": 2, "b": 1}
    assert take({}, 3) == {}


@pytest.mark.parametrize("flags, message", [
    (["--hostfile", "h", "--min-np", "0"], "--min-np 0: must be at least 1"),
    (["--hostfile", "h", "--min-np", "3", "--max-np", "2"], "--max-np 2: less than --min-np 3"),
    ([], "one of the arguments --hostfile --host-discovery-script is required"),
])
def test_bad_launcher_flags_are_one_line_naming_the_flag(flags, message):
    result = run(["python", "-m", "distjob.launch", *flags, "--", "--test-mode"], timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_bad_train_flag_stops_the_launcher_before_any_round(tmp_path):
    (tmp_path / "hosts").write_text("localhost slots=1\n")
    result = run(["python", "-m", "distjob.launch", "--hostfile", tmp_path / "hosts", "--", "--no-such-flag"],
                 timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "distjob.launch: error: python -m distjob.train: unrecognized arguments: --no-such-flag" in result.stderr
    assert "world" not in result.stdout


def test_the_learning_rate_ramps_from_the_old_worlds_after_a_change():
    from distjob.optimizer import WorldChangeWarmup
    ramp = WorldChangeWarmup(None, 0.003, 2 / 3, 10)  # 2 workers -> 3, a constant lr of 3 x 0.001
    assert [round(ramp(n), 6) for n in (100, 105, 110, 200)] == [0.002, 0.0025, 0.003, 0.003]
    assert WorldChangeWarmup(None, 0.002, 1.0, 10)(50) == 0.002  # shrinking: the lower rate at once


def test_run_sh_needs_a_host_source_for_min_np():
    result = run(["bash", ROOT / "launch" / "run.sh", "--min-np", "2", "--", "--test-mode"], timeout=60)
    assert result.returncode == 2
    assert "--min-np/--max-np/--max-restarts need --hostfile or --host-discovery-script" in result.stderr
