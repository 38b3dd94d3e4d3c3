"""The MPIJob's launch rehearsed across hosts on this machine (docs/multihost.md).

Each test host is a network namespace on a test bridge with its own address, hostname, /etc
(an overlay: hosts file, the ConfigMap at /etc/distjob, the hostfile at /etc/mpi) and /mnt/distjob
(one shared directory standing in for the PVC), as pods have. Workers run the image's sshd
(launch/sshd_config, port 2222) as uid 1000 with the key pair mounted at sshAuthMountPath as the
operator mounts it; the launcher host runs the rendered CPU overlay's launcher command verbatim.
The only addresses used are loopback and the test hosts' own, on SUBNET.

Overrides (docs/multihost.md): the config is the ConfigMap's with a small real AG News run
(REHEARSAL), -np fits the test hosts, HOROVOD_GLOO_TIMEOUT_SECONDS is shortened for the fault
tests, and where the ranks must run as root, mpirun is allowed to and ssh finds the key.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import AGNEWS, BIN, ROOT, kustomize, run
from distjob.checkpoint import position

pytestmark = pytest.mark.multihost

SUBNET = "10.216.16"  # the test bridge's /24: unusual, so it collides with no real route
BRIDGE = "dj16br"
PREFIX = "dj16-"      # network namespaces (and veths) the tests make and remove
UID = 1000            # the image's mpiuser (Dockerfile.gpu: USER 1000:1000)
PVC = "/mnt/distjob"
# A small real AG News run in place of the ConfigMap's full one.
REHEARSAL = {"train_file": "train_10k.csv", "epochs": 2}
GLOO_TIMEOUT = 20     # HOROVOD_GLOO_TIMEOUT_SECONDS for the fault tests (the manifests set more)
LAUNCH_TIMEOUT = 420
MPI_BIN = ROOT / ".venv-mpi" / "bin"  # launch/install.sh cpu-mpi: Horovod built with MPI and Gloo


def sh(*args, check=True, timeout=60):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=check, timeout=timeout)


def rendered_launch():
    """The CPU overlay's launcher (command + args, env), the MPIJob and its distjob config."""
    objects = kustomize(ROOT / "k8s" / "overlays" / "cpu")
    mpijob, = [o for o in objects if o["kind"] == "MPIJob"]
    config_map, = [o for o in objects if o["kind"] == "ConfigMap"]
    launcher = mpijob["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in launcher.get("env", [])}
    return launcher["command"] + launcher["args"], env, mpijob, config_map


def user_can_run_the_project():
    """uid 1000 can read this python and checkout (as in the image), or the ranks run as root."""
    # Through env, as on the hosts: a first exec straight from setpriv can pass where later ones fail.
    check = [shutil.which("setpriv") or "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
             "env", str(BIN / "horovodrun"), "--version"]
    try:
        return subprocess.run(check, cwd=ROOT, capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Host:
    """A test host: a network namespace with its own hostname, /etc, /home and /mnt/distjob,
    kept by a holder process whose namespaces every command on the host enters."""

    def __init__(self, name, index, workdir, user):
        self.name, self.netns, self.veth = name, PREFIX + name, f"{PREFIX}v{index}"
        self.address = f"{SUBNET}.{10 + index}"
        self.hostname = name
        self.dir = workdir / name
        self.user = user  # uid the sshd, the launcher and so the ranks run as
        self.etc = self.dir / "etc"  # the overlay's upper layer: files written here replace /etc's
        self.home = self.dir / "home" / "mpiuser"
        self.holder = None

    def setup_network(self):
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        sh("ip", "link", "set", self.veth, "master", BRIDGE, "up")
        sh("ip", "-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "eth0")
        sh("ip", "-n", self.netns, "link", "set", "eth0", "up")
        sh("ip", "-n", self.netns, "link", "set", "lo", "up")

    def write(self, path, text, mode=0o644, owner=None):
        """A file on this host: /etc/... goes into its overlay, /home/... into its home."""
        local = (self.etc / path.removeprefix("/etc/")) if path.startswith("/etc/") else \
            self.dir / path.removeprefix("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)
        local.chmod(mode)
        if owner is not None:
            os.chown(local, owner, owner)

    def start(self, shared):
        """Enter the namespaces: hostname, /etc overlay, the shared dir at the PVC's mount path."""
        work = self.dir / "overlay-work"
        for d in (self.etc, work, self.home / ".ssh"):
            d.mkdir(parents=True, exist_ok=True)
        os.chown(self.home, self.user, self.user)
        setup = (f"hostname {self.hostname} && "
                 f"mount -t overlay overlay -o lowerdir=/etc,upperdir={self.etc},workdir={work} /etc && "
                 f"mount --bind {self.dir / 'home'} /home && "
                 f"mount -t tmpfs tmpfs /mnt && mkdir {PVC} && mount --bind {shared} {PVC} && "
                 "mkdir -p /run/sshd && exec sleep 3600")
        self.holder = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "--uts", "--mount",
                                        "--propagation", "private", "sh", "-c", setup],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        for _ in range(100):  # ready once the setup succeeded and the holder sleeps
            if Path(f"/proc/{self.holder.pid}/cmdline").read_bytes().startswith(b"sleep"):
                return
            assert self.holder.poll() is None, f"{self.name}: {self.holder.stderr.read().decode()}"
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: namespaces not ready")

    def popen(self, args, env=None, cwd=ROOT):
        """A process on this host, as its user, in a process group of its own."""
        command = ["nsenter", "-t", str(self.holder.pid), "-n", "-u", "-m", f"--wd={cwd}"]
        if self.user != 0:
            command += ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups"]
        return subprocess.Popen(command + ["env", "-i", *[f"{k}={v}" for k, v in (env or {}).items()], *args],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def pids(self):
        """Processes in this host's network namespace: (pid, argv)."""
        found = []
        for pid in sh("ip", "netns", "pids", self.netns, check=False).stdout.split():
            try:
                found.append((int(pid), Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")))
            except OSError:
                pass
        return found

    def ranks(self):
        """Its distjob ranks: python processes running distjob.train (not the shells or ssh around them)."""
        return [pid for pid, argv in self.pids() if Path(argv[0]).name.startswith("python")
                and argv[1:3] == ["-m", "distjob.train"]]

    def link(self, state):
        sh("ip", "link", "set", self.veth, state)


def kill_group(process):
    if process is not None and process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


def remove_test_network():
    """Whatever an earlier run left: this module's namespaces (and their processes), veths, bridge."""
    for netns in sh("ip", "netns", "list", check=False).stdout.split("\n"):
        netns = netns.split(" ")[0]
        if netns.startswith(PREFIX):
            for pid in sh("ip", "netns", "pids", netns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            sh("ip", "netns", "del", netns, check=False)
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(": ")[1].split("@")[0]
        if name.startswith(PREFIX) or name == BRIDGE:
            sh("ip", "link", "del", name, check=False)


@pytest.fixture(scope="module")
def machine():
    """Skips, with the reason, where this machine cannot make test hosts."""
    if os.geteuid() != 0:
        pytest.skip("test hosts need root (network namespaces, mounts)")
    for tool in ("ip", "unshare", "nsenter", "setpriv", "ssh", "ssh-keygen", "/usr/sbin/sshd"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (.ci/run installs openssh-server)")
    remove_test_network()
    probe = sh("ip", "netns", "add", PREFIX + "probe", check=False)
    sh("ip", "netns", "del", PREFIX + "probe", check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make network namespaces here: {probe.stderr.strip()}")
    return {"user": UID if user_can_run_the_project() else 0}


@pytest.fixture(scope="module")
def mpi_bin():
    """The environment whose Horovod is built with MPI too, as the image's (make test builds it)."""
    horovodrun = MPI_BIN / "horovodrun"
    if not horovodrun.exists():
        pytest.skip(f"no {MPI_BIN.parent}: `make test` builds it where OpenMPI (mpicc) is installed")
    check = sh(horovodrun, "--check-build", timeout=120).stdout
    assert "[X] MPI" in check and "[X] Gloo" in check, check
    return MPI_BIN


@pytest.fixture
def cluster(machine, tmp_path, request):
    """make(workers, slots, ...) -> (launcher host, worker hosts, rank 0's output dir on the shared
    dir, launch() starting the launcher command, start_sshd_on(host)): test hosts on a bridge, sshd
    up on the workers unless start_sshd=False."""
    hosts, processes = [], []

    def cleanup():
        for process in processes:
            kill_group(process)
        for host in hosts:
            kill_group(host.holder)
        remove_test_network()

    request.addfinalizer(cleanup)

    def make(workers, slots, hostnames=None, timeout=None, start_sshd=True, config=None, bin_dir=BIN):
        command, env, mpijob, config_map = rendered_launch()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "link", "set", BRIDGE, "up")
        user = machine["user"]
        names = ["launcher"] + [f"worker-{i}" for i in range(workers)]
        hosts[:] = [Host(name, i, tmp_path, user) for i, name in enumerate(names)]
        shared = tmp_path / "pvc"
        (shared / "data").mkdir(parents=True)
        (shared / "data" / "ag_news").symlink_to(AGNEWS)
        (shared / "runs").mkdir()
        os.chown(shared / "runs", user, user)
        ssh_dir = tmp_path / "secret"  # the Secret the operator makes: one key pair for all pods
        ssh_dir.mkdir()
        sh("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", ssh_dir / "id_rsa")
        key_mount = mpijob["spec"]["sshAuthMountPath"]
        assert key_mount == "/home/mpiuser/.ssh"  # the image's home, where each host mounts its /home
        (key,) = config_map["data"]
        distjob_config = {**yaml.safe_load(config_map["data"][key]), **REHEARSAL, **(config or {})}
        passwd = [line for line in Path("/etc/passwd").read_text().splitlines() if line.split(":")[2] != str(UID)]
        group = [line for line in Path("/etc/group").read_text().splitlines() if line.split(":")[2] != str(UID)]
        for i, host in enumerate(hosts):
            if hostnames:
                host.hostname = hostnames[i]
            host.setup_network()
        for host in hosts:
            # /etc/hosts as the pod's: its own name, then the others' (headless-service DNS here).
            lines = ["127.0.0.1 localhost"]
            lines += [f"{h.address} {h.name}" for h in hosts]
            if hostnames:  # cloned machines: each resolves the shared name to itself (loopback)
                lines.insert(1, f"127.0.1.1 {host.hostname}")
            host.write("/etc/hosts", "\n".join(lines) + "\n")
            host.write("/etc/passwd", "\n".join(passwd + [f"mpiuser:x:{UID}:{UID}::/home/mpiuser:/bin/bash"]) + "\n")
            host.write("/etc/group", "\n".join(group + [f"mpiuser:x:{UID}:"]) + "\n")
            host.write(f"/etc/distjob/{key}", yaml.safe_dump(distjob_config))
            client = (ROOT / "launch" / "ssh_config").read_text()
            server = (ROOT / "launch" / "sshd_config").read_text()
            if user == 0:  # root's home is /root: point both ends at the mounted key instead
                client += f"    IdentityFile {key_mount}/id_rsa\n"
                server += f"AuthorizedKeysFile {key_mount}/authorized_keys\n"
            host.write("/etc/ssh/ssh_config.d/distjob.conf", client)
            host.write("/home/mpiuser/.sshd_config", server, owner=user)  # Dockerfile.gpu's COPY
            # The operator's key Secret at sshAuthMountPath: id_rsa, id_rsa.pub, authorized_keys.
            public = (ssh_dir / "id_rsa.pub").read_text()
            for name, text, mode in [("id_rsa", (ssh_dir / "id_rsa").read_text(), 0o600),
                                     ("id_rsa.pub", public, 0o644), ("authorized_keys", public, 0o644)]:
                host.write(f"{key_mount}/{name}", text, mode, owner=user)
        launcher, *worker_hosts = hosts
        launcher.write("/etc/mpi/hostfile", "".join(f"{h.name} slots={slots}\n" for h in worker_hosts))
        for host in hosts:
            host.start(shared)

        def start_sshd_on(host):
            worker = mpijob["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
            processes.append(host.popen(worker["command"] + worker["args"], cwd="/"))
            wait_for_port(host, worker["readinessProbe"]["tcpSocket"]["port"])

        if start_sshd:
            for host in worker_hosts:
                start_sshd_on(host)
        launch_env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/home/mpiuser",
                      **env}
        if user == 0:  # mpirun refuses root without these (the image's user is not root)
            launch_env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        if timeout is not None:
            launch_env["HOROVOD_GLOO_TIMEOUT_SECONDS"] = str(timeout)
        np = workers * slots
        manifest_np = mpijob["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"] * mpijob["spec"]["slotsPerWorker"]
        assert command[command.index("-np") + 1] == str(manifest_np)
        command[command.index("-np") + 1] = str(np)  # the operator's -np for this many test hosts

        def launch(launch_command=command):  # the manifest's launcher command, or another one in its place
            process = launcher.popen(launch_command, env=launch_env)
            processes.append(process)
            return process

        return launcher, worker_hosts, shared / "runs" / "agnews", launch, start_sshd_on

    return make


def wait_for_port(host, port, seconds=30):
    """The readiness probe: a TCP connect to the worker's sshd, from its own namespace."""
    probe = f"import socket; socket.create_connection(('{host.address}', {port}), timeout=1)"
    for _ in range(seconds * 5):
        if sh("ip", "netns", "exec", host.netns, sys.executable, "-c", probe, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{host.name}: sshd not listening on {port}")


def wait_for_ranks(process, hosts, slots, seconds=180):
    """Until every host runs its slots' ranks (the launcher must still be running)."""
    for _ in range(seconds * 5):
        if all(len(host.ranks()) == slots for host in hosts):
            return
        if process.poll() is not None:
            pytest.fail(f"launcher ended before all ranks ran:\n{process.stdout.read()[-6000:]}")
        time.sleep(0.2)
    pytest.fail(f"not {slots} rank(s) on each of {[h.name for h in hosts]} within {seconds} s")


def finish(process, timeout=LAUNCH_TIMEOUT):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        try:  # a child in a process group of its own may hold the pipe until the cleanup
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            output = ""
        pytest.fail(f"launcher still running after {timeout} s:\n{output[-6000:]}")
    return process.returncode, output


def single_host_run(tmp_path, np, config=None):
    """What `horovodrun -np N` on one host writes, from the same config."""
    _, _, _, config_map = rendered_launch()
    (key,) = config_map["data"]
    output = tmp_path / "single-host"
    cfg = {**yaml.safe_load(config_map["data"][key]), **REHEARSAL, **(config or {}),
           "data_dir": str(AGNEWS), "output_dir": str(output), "embedding_root": str(tmp_path / "embeddings")}
    (tmp_path / "single-host.yaml").write_text(yaml.safe_dump(cfg))
    result = run([str(BIN / "horovodrun"), "-np", str(np), "--gloo", sys.executable, "-m", "distjob.train",
                  "--config", tmp_path / "single-host.yaml", "--no-progress", "--ctx", "cpu"],
                 timeout=LAUNCH_TIMEOUT, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return output


@pytest.fixture(scope="module")
def single_host(tmp_path_factory):
    """np -> single_host_run's output for that -np, trained once per -np for the module (the Gloo
    and the MPI 2x1 tests compare against the same one)."""
    outputs = {}

    def output(np):
        if np not in outputs:
            outputs[np] = single_host_run(tmp_path_factory.mktemp(f"single-host-np{np}"), np)
        return outputs[np]
    return output


def files(directory):
    """The files under directory; a TensorBoard event file's name holds its time and host."""
    return sorted(re.sub(r"tfevents\..*", "tfevents.*", str(p.relative_to(directory)))
                  for p in directory.rglob("*") if p.is_file())


def accuracy(directory):
    return json.loads((directory / "results.json").read_text())["test_accuracy"]


@pytest.mark.parametrize("workers, slots", [(2, 1), (2, 2)], ids=["2x1", "2x2"])
def test_launcher_command_trains_across_hosts_as_on_one(cluster, agnews_dir, single_host, workers, slots):
    launcher, worker_hosts, output, launch, _ = cluster(workers, slots)
    process = launch()
    wait_for_ranks(process, worker_hosts, slots)
    assert not launcher.ranks()
    returncode, log = finish(process)
    assert returncode == 0, log[-6000:]
    single = single_host(workers * slots)
    assert files(output) == files(single)
    assert abs(accuracy(output) - accuracy(single)) <= 0.005, (accuracy(output), accuracy(single))
    assert not any(h.ranks() for h in [launcher, *worker_hosts])


def test_launcher_command_trains_across_hosts_over_mpi(cluster, agnews_dir, mpi_bin, single_host):
    # horovodrun picks MPI where Horovod was built with it, as in the image: same command.
    launcher, worker_hosts, output, launch, _ = cluster(2, 1, bin_dir=mpi_bin)
    process = launch()
    wait_for_ranks(process, worker_hosts, 1)
    returncode, log = finish(process)
    assert returncode == 0, log[-6000:]
    assert re.search(r"^\[1,0\]<stdout>:", log, re.M), log[-3000:]  # mpirun's tags, not Gloo's [0]
    single = single_host(2)
    assert files(output) == files(single)
    assert abs(accuracy(output) - accuracy(single)) <= 0.005, (accuracy(output), accuracy(single))
    assert not any(h.ranks() for h in [launcher, *worker_hosts])


FAULT_RUN = {"epochs": 3, "batch_size": 16}  # epochs long enough to be cut in the middle


def wait_for_epoch(process, output, epoch, seconds=300):
    """Until rank 0 has written this epoch's checkpoint, with the launcher still running."""
    for _ in range(seconds * 5):
        if (output / "checkpoints" / f"epoch-{epoch:04d}").is_dir():
            return
        if process.poll() is not None:
            pytest.fail(f"launcher ended before epoch {epoch}:\n{process.stdout.read()[-6000:]}")
        time.sleep(0.2)
    pytest.fail(f"no checkpoint of epoch {epoch} within {seconds} s")


def wait_until_no_ranks(hosts, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = {h.name: h.ranks() for h in hosts if h.ranks()}
        if not left:
            return
        time.sleep(0.5)
    pytest.fail(f"ranks still running after {seconds:.0f} s: {left}")


@pytest.mark.parametrize("transport, fault", [("gloo", "kill-9"), ("gloo", "link-down"), ("mpi", "kill-9"),
                                              ("mpi", "link-down")])
def test_a_lost_host_ends_the_launcher_in_bounded_time_and_a_relaunch_resumes(cluster, agnews_dir, request,
                                                                              transport, fault):
    bin_dir = request.getfixturevalue("mpi_bin") if transport == "mpi" else BIN
    launcher, worker_hosts, output, launch, _ = cluster(2, 1, timeout=GLOO_TIMEOUT, config=FAULT_RUN,
                                                        bin_dir=bin_dir)
    lost = worker_hosts[1]
    process = launch()
    wait_for_ranks(process, worker_hosts, 1)
    wait_for_epoch(process, output, 1)  # written after epoch 1's last step: the fault lands in epoch 2
    if fault == "kill-9":
        for pid in lost.ranks():
            os.kill(pid, signal.SIGKILL)
    else:
        lost.link("down")
    cut = time.monotonic()
    assert process.poll() is None, "the run ended before the fault"
    # docs/multihost.md: the launcher exits within HOROVOD_GLOO_TIMEOUT_SECONDS + 30 s (Gloo), or
    # OpenMPI's keepalive time + interval x probes + 30 s (MPI), from the manifests' launcher env
    env = rendered_launch()[1]
    bound = 30 + (GLOO_TIMEOUT if transport == "gloo" else int(env["OMPI_MCA_oob_tcp_keepalive_time"]) +
                  int(env["OMPI_MCA_oob_tcp_keepalive_intvl"]) * int(env["OMPI_MCA_oob_tcp_keepalive_probes"]))
    returncode, log = finish(process, timeout=bound)
    assert returncode != 0, log[-6000:]
    # ... and a cut-off rank ends by itself within twice that.
    wait_until_no_ranks([launcher, *worker_hosts], 2 * bound - (time.monotonic() - cut))
    assert not (output / "results.json").exists()
    if fault == "link-down":
        lost.link("up")
    # The MPIJob's backoffLimit: the launcher runs again, and continues from the last checkpoint.
    returncode, log = finish(launch())
    assert returncode == 0, log[-6000:]
    assert re.search(r"resumed from \S+/checkpoints/epoch-000[12] \(epoch [12]\)", log), log[-6000:]
    epochs = [json.loads(line)["epoch"] for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3], epochs
    assert (output / "results.json").exists()


def test_a_worker_whose_sshd_is_not_up_is_a_clear_error(cluster, agnews_dir):
    # What launcherCreationPolicy: WaitForWorkersReady prevents on a cluster.
    launcher, worker_hosts, output, launch, start_sshd_on = cluster(2, 1, start_sshd=False)
    start_sshd_on(worker_hosts[0])
    returncode, log = finish(launch(), timeout=60)  # horovodrun's ssh check, before any rank starts
    assert returncode != 0
    assert "ssh not successful for host worker-1" in log and "port 2222: Connection refused" in log, log
    assert not any(h.ranks() for h in [launcher, *worker_hosts])


def test_hosts_that_share_one_hostname_are_a_clear_error(cluster, agnews_dir):
    # Cloned machines: every host is "node", which its own hosts file resolves to 127.0.1.1.
    launcher, worker_hosts, output, launch, _ = cluster(2, 1, hostnames=["node"] * 3)
    returncode, log = finish(launch(), timeout=300)
    assert returncode != 0
    # One line from each rank before Horovod starts, instead of Gloo's connect crash.
    assert "hostname 'node' resolves to 127.0.1.1 (loopback) on this host" in log, log[-6000:]
    assert "gloo::IoException" not in log, log[-6000:]
    wait_until_no_ranks([launcher, *worker_hosts], 30)


# ---- distjob.launch: lose a host, keep training (docs/multihost.md, "Restarts") -------------
ELASTIC_RUN = {"epochs": 5, "batch_size": 16, "checkpoint_every_steps": 40}


def elastic_command(*flags):
    """distjob.launch in place of horovodrun, on the operator's hostfile, with the launcher's
    distjob.train arguments; short waits for the test."""
    command = rendered_launch()[0]
    train_args = command[command.index("distjob.train") + 1:]
    return ["python", "-m", "distjob.launch", "--hostfile", "/etc/mpi/hostfile", "--min-np", "1", "--max-np", "3",
            "--max-restarts", "5", "--backoff", "1", "--poll", "3", "--ssh-timeout", "3", *flags, "--", *train_args]


def crash(host):
    """The host goes down: every process on it (its ranks and its sshd), killed at once."""
    for pid, _ in host.pids():
        if pid != host.holder.pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def checkpoints_of(output):
    """The names of the checkpoints in output (not last/best, nor checkpoints/damaged/)."""
    root = output / "checkpoints"
    return {name for name in os.listdir(root) if position(name) is not None} if root.is_dir() else set()


def wait_for_world(process, hosts, others, output, old=(), seconds=300):
    """Until these hosts run one rank each, none of them a rank of an earlier round (old: their
    pids), the others none, and the round has saved a checkpoint -> its ranks' pids."""
    before = checkpoints_of(output)
    for _ in range(seconds * 5):
        ranks = {pid for h in hosts for pid in h.ranks()}
        if all(len(h.ranks()) == 1 for h in hosts) and not ranks & set(old) and \
                not any(h.ranks() for h in others) and checkpoints_of(output) - before:
            return ranks
        if process.poll() is not None:
            pytest.fail(f"launcher ended before a world of {[h.name for h in hosts]} checkpointed:\n"
                        f"{process.stdout.read()[-6000:]}")
        time.sleep(0.2)
    pytest.fail(f"no checkpoint from a world of {[h.name for h in hosts]} within {seconds} s")


@pytest.fixture(scope="module")
def unbroken_accuracy(tmp_path_factory):
    """The test accuracy of the same run on three workers that nothing interrupts."""
    return accuracy(single_host_run(tmp_path_factory.mktemp("unbroken"), 3, ELASTIC_RUN))


@pytest.mark.parametrize("transport", ["gloo", "mpi"])
def test_the_launcher_loses_two_hosts_finishes_on_what_is_left_and_takes_one_back(
        cluster, agnews_dir, request, tmp_path, transport, unbroken_accuracy):
    bin_dir = request.getfixturevalue("mpi_bin") if transport == "mpi" else BIN
    launcher, (w0, w1, w2), output, launch, _ = cluster(3, 1, timeout=GLOO_TIMEOUT, config=ELASTIC_RUN,
                                                        bin_dir=bin_dir)
    process = launch(elastic_command())
    ranks = wait_for_world(process, [w0, w1, w2], [], output)
    wait_for_epoch(process, output, 1)
    w2.link("down")  # mid-epoch: worker-2 cut off, its ranks hang until the transport's timeout
    ranks = wait_for_world(process, [w0, w1], [], output, old=ranks)
    crash(w1)  # mid-epoch: worker-1 gone, sshd and all
    wait_for_world(process, [w0], [w1], output, old=ranks)
    w2.link("up")  # worker-2 answers again: taken back at the next agreed step
    returncode, log = finish(process)
    (tmp_path / "launcher.log").write_text(log)
    assert returncode == 0, log[-6000:]
    restarts = re.findall(r"distjob\.launch: restart \d/5: (.*); new world (\d) slot\(s\) on (\S+); (.*)", log)
    worlds = [hosts for _, _, hosts, _ in restarts]
    # (a round may also fail at its start, Gloo's rendezvous: restarted on the same world)
    assert [w for i, w in enumerate(worlds) if i == 0 or w != worlds[i - 1]] == [
        "worker-0:1,worker-1:1", "worker-0:1", "worker-0:1,worker-2:1"], log[-6000:]
    assert all(re.match(r"resuming from \S+/checkpoints/epoch-\d{4}(-step-\d{6})? \(epoch \d", resumed)
               for *_, resumed in restarts), restarts
    assert "a worker or host lost" in restarts[0][0]
    assert "more slots answer than the 1 this round had" in restarts[-1][0], restarts
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert records[0]["world_size"] == 3 and records[-1]["world_size"] == 2, records
    assert abs(accuracy(output) - unbroken_accuracy) <= 0.01, (accuracy(output), unbroken_accuracy)
    assert not any(h.ranks() for h in [launcher, w0, w2])


@pytest.mark.parametrize("transport", ["gloo", "mpi"])
def test_the_launcher_does_not_restart_a_user_error(cluster, agnews_dir, request, transport):
    bin_dir = request.getfixturevalue("mpi_bin") if transport == "mpi" else BIN
    launcher, worker_hosts, output, launch, _ = cluster(3, 1, bin_dir=bin_dir)
    # A flag only the ranks can check: the data dir is not on the workers.
    returncode, log = finish(launch(elastic_command() + ["--data-dir", "/mnt/distjob/data/missing"]), timeout=240)
    assert returncode == 2, log[-6000:]
    assert "distjob: error: " in log and "/mnt/distjob/data/missing" in log, log[-6000:]
    assert log.count("distjob.launch: world 3 slot(s)") == 1 and "launch: restart" not in log, log[-6000:]
    assert "not restarting: a user error (the ranks exited 2" in log, log[-6000:]
    # A bad flag is the launcher's own check: one line, before any rank starts.
    returncode, log = finish(launch(elastic_command() + ["--no-such-flag"]), timeout=60)
    assert returncode == 2 and "distjob.launch: error: " in log and "--no-such-flag" in log, log
    assert "world" not in log


def test_the_launcher_stops_for_good_on_too_few_slots_and_on_its_own_sigterm(cluster, agnews_dir, tmp_path):
    launcher, (w0, w1, w2), output, launch, _ = cluster(3, 1, timeout=GLOO_TIMEOUT, config=ELASTIC_RUN)
    process = launch(elastic_command("--min-np", "3"))
    wait_for_world(process, [w0, w1, w2], [], output)
    w2.link("down")
    returncode, log = finish(process, timeout=GLOO_TIMEOUT + 90)
    assert returncode == 1, log[-6000:]
    assert re.search(r"not restarting: 2 slot\(s\) answer \(worker-0:1,worker-1:1\), fewer than --min-np 3; "
                     r"exit 1$", log, re.M), log[-6000:]
    wait_until_no_ranks([launcher, w0, w1, w2], 2 * (GLOO_TIMEOUT + 30))
    w2.link("up")
    # SIGTERM to the launcher: every rank checkpoints one step and exits; nothing restarts.
    process = launch(elastic_command("--min-np", "3"))
    wait_for_world(process, [w0, w1, w2], [], output)
    saved_before = checkpoints_of(output)
    os.kill(process.pid, signal.SIGTERM)  # nsenter, setpriv and env exec the launcher in place: this is its pid
    returncode, log = finish(process, timeout=120)
    assert returncode == 143, log[-6000:]
    # Rank 0 saved the step the ranks stopped at (its own line may be cut: horovodrun ends the
    # other ranks once one has exited 143).
    newest = max(checkpoints_of(output), key=position)
    assert newest not in saved_before, (newest, saved_before)
    assert "not restarting: stopped by SIGTERM (the ranks stopped at one step" in log, log[-6000:]
    assert "launch: restart" not in log
    wait_until_no_ranks([launcher, w0, w1, w2], 30)
