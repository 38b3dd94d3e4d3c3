"""Keep a multi-host run going as hosts come and go: horovodrun, started again on the hosts
that answer (Horovod has no elastic mode for MXNet; this is torchrun's agent, for horovodrun).

    python -m distjob.launch --hostfile hosts --min-np 2 --max-np 3 -- --config run.yaml
    python -m distjob.launch --host-discovery-script ./hosts.sh --min-np 1 -- --data-dir /data

Each round runs `horovodrun -np N -H host:slots,... python -m distjob.train TRAIN_ARGS` on the
hosts of the host source (a hostfile, re-read each time, or a script printing `host:slots`
lines) that answer ssh, up to --max-np slots. Training resumes from the newest checkpoint that
verifies, so a round loses at most the steps since it.

- horovodrun ends because a worker or host was lost: after --backoff seconds, a new round on
  the hosts that answer (at most --max-restarts times).
- The host source shows more answering slots than the round has (up to --max-np): the round
  is stopped with SIGTERM (every rank checkpoints the same step) and a wider one starts.
- Never restarted: a user error (a rank printed `distjob: error:` and exited 2), SIGTERM or
  SIGINT to this launcher (forwarded: every rank checkpoints and exits), fewer than --min-np
  slots answering, or --max-restarts spent. One line says which; the exit code follows it.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from .config import UserError, parse_config

USER_ERROR = re.compile(r"distjob: error: ")  # config.run_main's line: the ranks exit 2 after it
# ... but this one passes: a lost round's rank 0, cut off, holds the output dir's lock until it ends
# by itself (docs/multihost.md: within twice the transport's bound).
OUTPUT_DIR_BUSY = re.compile(r"distjob: error: --output-dir .*: in use by another run")
BUSY_WAIT_SECONDS = 600  # then it is another run's, not a lost round's
LOCAL_NAMES = {"localhost", "127.0.0.1", socket.gethostname()}


def say(message):
    print(f"{time.strftime('%H:%M:%S')} distjob.launch: {message}", flush=True)


# ---- the host source -----------------------------------------------------------------------
def parse_hosts(text, where):
    """Hostfile lines (`host slots=N`, horovodrun's and mpirun's) or discovery lines (`host:N`);
    a bare host has one slot -> {host: slots}, in the order given."""
    hosts = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([^\s:]+)(?::(\d+)|\s+slots\s*=\s*(\d+))?", line)
        if not match:
            raise UserError(f"{where}: cannot read the host line {line!r} (expected 'host slots=N' or 'host:N')")
        hosts[match[1]] = int(match[2] or match[3] or 1)
    return hosts


def read_hosts(args):
    """The host source now -> {host: slots}."""
    if args.hostfile:
        try:
            with open(args.hostfile) as f:
                return parse_hosts(f.read(), f"--hostfile {args.hostfile}")
        except OSError as e:
            raise UserError(f"--hostfile {args.hostfile}: {e.strerror}") from None
    try:
        found = subprocess.run([args.host_discovery_script], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"--host-discovery-script {args.host_discovery_script}: {e}") from None
    if found.returncode != 0:
        raise UserError(f"--host-discovery-script {args.host_discovery_script}: exited {found.returncode}: "
                        f"{found.stderr.strip()[-300:]}")
    return parse_hosts(found.stdout, f"--host-discovery-script {args.host_discovery_script}")


def answering(hosts, args):
    """The hosts that answer ssh (as horovodrun will reach them: the ssh config, --ssh-port), all
    probed at once -> {host: slots}."""
    local = {host: slots for host, slots in hosts.items() if host in LOCAL_NAMES}  # horovodrun runs these without ssh
    probes = {host: subprocess.Popen(ssh_command(args, host, "true"), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for host in hosts if host not in local}
    up = dict(local)
    for host, probe in probes.items():
        try:
            if probe.wait(timeout=args.ssh_timeout + 5) == 0:
                up[host] = hosts[host]
        except subprocess.TimeoutExpired:
            probe.kill()
            probe.wait()
    return {host: up[host] for host in hosts if host in up}  # the source's order


def ssh_command(args, host, command):
    """command run on host as horovodrun reaches it (the ssh config, --ssh-port), never waiting
    for a password and giving up after --ssh-timeout."""
    port = ["-p", str(args.ssh_port)] if args.ssh_port else []
    return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={args.ssh_timeout}", *port, host, command]


def take(hosts, max_np):
    """The hosts a round runs on: in the source's order, until --max-np slots -> {host: slots}."""
    world, total = {}, 0
    for host, slots in hosts.items():
        slots = min(slots, max_np - total) if max_np else slots
        if slots <= 0:
            break
        world[host], total = slots, total + slots
    return world


def describe(world):
    return ",".join(f"{host}:{slots}" for host, slots in world.items()) or "no hosts"


# ---- the checkpoint a round resumes ---------------------------------------------------------
def newest_checkpoint(output_dir):
    """The checkpoint a new round resumes (the newest that verifies, as rank 0 will choose) ->
    (its dir, its meta) or None. Seen from this host: the output dir must be shared storage."""
    from .checkpoint import scan  # imports mxnet: only once there is a checkpoint to name
    found = scan(output_dir, report=lambda line: None)
    return (found[-1].dir, found[-1].meta) if found else None


def resume_point(cfg, ended_at):
    """Where a new round resumes and what the last one loses, in words."""
    newest = newest_checkpoint(cfg.output_dir)
    if newest is None:
        return f"no checkpoint in {cfg.output_dir}: starting from the beginning"
    path, meta = newest
    where = f"epoch {meta['epoch']}" + ("" if meta["finished"] else f", step {meta['steps']}")
    age = max(0.0, ended_at - os.path.getmtime(os.path.join(path, "meta.json")))
    bound = f"at most {cfg.checkpoint_every_steps}" if cfg.checkpoint_every_steps else "at most an epoch's"
    return (f"resuming from {path} ({where}); steps lost: those after it, {bound} "
            f"(it was saved {age:.0f} s before horovodrun ended)")


# ---- one round: horovodrun on a world -------------------------------------------------------
# Signals this round's ranks on a host: they carry its id in their environment (horovodrun passes
# the launcher's on). No pgrep: the image need not have procps.
SIGNAL_RANKS = ("for d in /proc/[0-9]*; do grep -qz '^DISTJOB_ROUND={round}$' $d/environ 2>/dev/null && "
                "grep -q distjob.train $d/cmdline 2>/dev/null && kill -{signal} ${{d#/proc/}}; done; true")


class Round:
    """horovodrun on one world of hosts, its output passed through and watched."""

    def __init__(self, args, world, train_args):
        np = sum(world.values())
        command = [args.horovodrun, "-np", str(np), "-H", describe(world), *args.horovodrun_flags,
                   sys.executable, "-m", "distjob.train", *train_args]
        self.args, self.np, self.world, self.user_error, self.resized = args, np, world, False, False
        self.busy = False  # the output dir still locked by a lost round's rank 0
        self.id = f"{os.getpid()}-{time.monotonic_ns()}"
        # A session of its own: a Ctrl-C at a terminal reaches this launcher, which forwards it once.
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True, env={**os.environ, "DISTJOB_ROUND": self.id})
        self.reader = threading.Thread(target=self._pass_through, daemon=True)
        self.reader.start()

    def _pass_through(self):
        for line in self.process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            self.busy = self.busy or bool(OUTPUT_DIR_BUSY.search(line))
            self.user_error = self.user_error or (bool(USER_ERROR.search(line)) and not self.busy)

    def stop(self, signum=signal.SIGTERM):
        """Every rank checkpoints the step they agree on and exits: the signal goes to the ranks
        on their hosts, since horovodrun's own (Gloo) only ends its ssh clients, which leaves
        the ranks behind them running."""
        if self.process.poll() is not None:
            return
        script = SIGNAL_RANKS.format(round=self.id, signal=signal.Signals(signum).name[3:])
        senders = [subprocess.Popen(["sh", "-c", script] if host in LOCAL_NAMES else
                                    ssh_command(self.args, host, script), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for host in self.world]
        for sender in senders:  # a host that does not answer has no ranks left to stop
            try:
                sender.wait(timeout=self.args.ssh_timeout + 5)
            except subprocess.TimeoutExpired:
                sender.kill()

    def wait(self, poll_seconds, wider, signalled):
        """Until horovodrun ends -> its exit code. A signal to the launcher (signalled() -> its
        number) stops the ranks; every poll_seconds, wider() says whether more slots answer than
        this round has: if so, the ranks stop too, to restart wider."""
        forwarded, next_look = False, time.monotonic() + poll_seconds
        while True:
            try:
                code = self.process.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                pass
            if signalled() and not forwarded:
                forwarded = True
                self.stop(signalled())
            elif not self.resized and not forwarded and time.monotonic() >= next_look:
                next_look = time.monotonic() + poll_seconds
                if wider(self):
                    self.resized = True
                    self.stop()
        self.reader.join(timeout=10)
        return code


# ---- the agent -------------------------------------------------------------------------------
class Signals:
    """SIGTERM and SIGINT to this launcher: remembered, for the running round to pass on."""

    def __init__(self):
        self.signum = 0
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.note)

    def note(self, signum, frame):
        self.signum = signum


def world_now(args):
    """The hosts of the host source that answer, up to --max-np slots."""
    return take(answering(read_hosts(args), args), args.max_np)


def agent(args, cfg, train_args):
    """Rounds of horovodrun until one ends for good -> the exit code."""
    signals, restarts, reason, ended_at = Signals(), 0, None, time.time()
    busy_since = float("inf")  # when a round first found the output dir locked
    while True:
        world = world_now(args)
        np = sum(world.values())
        if signals.signum:  # during the backoff or the probes: no round is running to stop
            say(f"not restarting: stopped by {signal.Signals(signals.signum).name}; exit {128 + signals.signum}")
            return 128 + signals.signum
        if np < args.min_np:
            say(f"not {'re' if reason else ''}starting: {np} slot(s) answer ({describe(world)}), fewer than "
                f"--min-np {args.min_np}; exit 1")
            return 1
        if reason:
            say(f"restart {restarts}/{args.max_restarts}: {reason}; new world {np} slot(s) on {describe(world)}; "
                f"{resume_point(cfg, ended_at)}")
        else:
            say(f"world {np} slot(s) on {describe(world)}")
        current = Round(args, world, train_args)
        code = current.wait(args.poll, lambda r: more_slots(args, r), lambda: signals.signum)
        ended_at = time.time()
        if code == 0:
            say("training finished; exit 0")
            return 0
        if signals.signum:
            name = signal.Signals(signals.signum).name
            say(f"not restarting: stopped by {name} (the ranks stopped at one step, rank 0 checkpointed it; "
                f"horovodrun exited {code}); "
                f"exit {128 + signals.signum}")
            return 128 + signals.signum
        if current.busy and time.time() - busy_since < BUSY_WAIT_SECONDS:
            busy_since = min(busy_since, ended_at)
            reason = "the output dir is still locked by the lost round's rank 0 (not counted)"
            time.sleep(args.backoff)
            continue
        if current.busy or current.user_error:
            say("not restarting: a user error (the ranks exited 2; see 'distjob: error:' above); exit 2")
            return 2
        if current.resized:
            reason = f"more slots answer than the {current.np} this round had (horovodrun stopped, exit {code})"
            continue  # taking back hosts is not a failure: it does not count against --max-restarts
        if restarts >= args.max_restarts:
            say(f"not restarting: --max-restarts {args.max_restarts} spent (horovodrun exited {code}); exit {code}")
            return code
        restarts += 1
        reason = f"horovodrun exited {code} (a worker or host lost)"
        time.sleep(args.backoff)


def more_slots(args, current):
    """Whether the host source now has answering slots beyond the round's, up to --max-np."""
    if args.max_np and current.np >= args.max_np:
        return False
    hosts = read_hosts(args)
    new = {host: slots for host, slots in hosts.items() if host not in current.world}
    grown = {host: hosts[host] for host in current.world if hosts.get(host, 0) > current.world[host]}
    if not new and not grown:
        return False
    wider = sum(take({**current.world, **grown, **answering(new, args)}, args.max_np).values())
    if wider > current.np:
        say(f"{wider} slot(s) answer, more than the round's {current.np}: checkpointing to restart with them")
        return True
    return False


# ---- the command line ------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m distjob.launch", description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s (--hostfile FILE | --host-discovery-script SCRIPT) "
                                           "[options] -- [distjob.train arguments]")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hostfile", help="'host slots=N' lines, re-read before each round and while it runs")
    source.add_argument("--host-discovery-script", help="an executable printing 'host:slots' lines "
                        "(as horovodrun's), run before each round and while it runs")
    parser.add_argument("--min-np", type=int, default=1, help="fewest slots to (re)start on (default 1)")
    parser.add_argument("--max-np", type=int, default=0, help="most slots to run on (default: all that answer)")
    parser.add_argument("--max-restarts", type=int, default=3, help="restarts after a lost worker or host "
                        "(default 3); taking back hosts does not count")
    parser.add_argument("--backoff", type=float, default=5.0, help="seconds before a restart (default 5)")
    parser.add_argument("--poll", type=float, default=15.0, help="seconds between looks at the host source "
                        "for hosts to take back (default 15)")
    parser.add_argument("--ssh-port", type=int, help="the workers' ssh port (default: the ssh config's)")
    parser.add_argument("--ssh-timeout", type=int, default=5, help="seconds a host has to answer ssh (default 5)")
    parser.add_argument("--network-interface", help="passed to horovodrun (--nic)")
    transport = parser.add_mutually_exclusive_group()
    transport.add_argument("--gloo", action="store_true", help="horovodrun --gloo")
    transport.add_argument("--mpi", action="store_true", help="horovodrun --mpi")
    parser.add_argument("--horovodrun", default=horovodrun_path() or "horovodrun", help="the horovodrun to run")
    own, train_args = split_at_dashes(argv)
    args = parser.parse_args(own)
    for flag, value, low in (("--min-np", args.min_np, 1), ("--max-np", args.max_np, 0),
                             ("--max-restarts", args.max_restarts, 0), ("--backoff", args.backoff, 0),
                             ("--poll", args.poll, 1), ("--ssh-timeout", args.ssh_timeout, 1)):
        if value < low:
            parser.error(f"{flag} {value:g}: must be at least {low}")
    if args.max_np and args.max_np < args.min_np:
        parser.error(f"--max-np {args.max_np}: less than --min-np {args.min_np}")
    args.horovodrun_flags = (["--gloo"] if args.gloo else []) + (["--mpi"] if args.mpi else []) + \
        (["--network-interface", args.network_interface] if args.network_interface else []) + \
        (["-p", str(args.ssh_port)] if args.ssh_port else [])
    return args, train_args


def split_at_dashes(argv):
    """-> (the launcher's arguments, distjob.train's: those after the first --)."""
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1:]
    return argv, []


def horovodrun_path():
    """The horovodrun of this python's environment, else the one on PATH, else None."""
    beside = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    return beside if os.access(beside, os.X_OK) else shutil.which("horovodrun")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, train_args = parse_args(argv)  # argparse: one line naming the flag, exit 2
    try:
        cfg = parse_config(train_args)  # the ranks' own parser: a bad flag stops here, once
        read_hosts(args)
    except UserError as e:
        print(f"distjob.launch: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        sys.exit(agent(args, cfg, train_args))
    except UserError as e:  # the host source became unreadable mid-run
        say(f"not restarting: {e}; exit 2")
        sys.exit(2)


if __name__ == "__main__":
    main()
