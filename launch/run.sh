#!/usr/bin/env bash
# Start distjob under horovodrun with sensible defaults, printing the command it runs.
#
#   launch/run.sh [-n WORKERS] [--cpu|--gpu] [-H host1:4,host2:4 | --hostfile FILE]
#                 [--nic eth0] [--output-dir DIR] [--no-bind] [-- ARGS FOR distjob.train...]
#   launch/run.sh (--hostfile FILE | --host-discovery-script SCRIPT) --min-np N [--max-np M]
#                 [--max-restarts R] [--cpu|--gpu] [--nic eth0] [--output-dir DIR] [-- ARGS...]
#
#   launch/run.sh -n 4 -- --test-mode                     # 4 CPU workers on this machine
#   launch/run.sh --gpu -- --config configs/agnews.yaml --data-dir /data/ag_news
#   launch/run.sh --gpu -H host1:4,host2:4 --nic eth0 -- --data-dir /shared/ag_news
#   launch/run.sh --gpu --hostfile hosts --min-np 4 -- --data-dir /shared/ag_news
#
# --min-np (with --max-np, --max-restarts) keeps the run going as hosts come and go: python -m
# distjob.launch restarts horovodrun on the hosts that answer, from the newest checkpoint
# (docs/multihost.md, "Restarts").
# Workers default to the GPU count (--gpu, or GPUs found) or the CPU core count. CPU
# workers on this host split its cores: each runs on cores of its own (taskset; --no-bind
# lets them float).
# Several hosts: every host needs the same python environment at the same path, the
# data dir readable at the same path, and passwordless SSH from this host; only rank 0
# writes --output-dir (put it on shared storage so a restarted job can resume there).
set -euo pipefail
# No cd: relative paths (--output-dir, --hostfile, --data-dir, ...) are the caller's.
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || command -v python3 )}
workers="" device="" hosts=() nic=() output=() bind=1 elastic=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--workers) workers=$2; shift 2 ;;
    --cpu|--gpu) device=${1#--}; shift ;;
    -H|--hosts) hosts=(-H "$2"); shift 2 ;;
    --hostfile) hosts=(--hostfile "$2"); shift 2 ;;
    --nic) nic=(--network-interface "$2"); shift 2 ;;
    --output-dir) output=(--output-dir "$2"); shift 2 ;;
    --no-bind) bind=0; shift ;;
    --) shift; break ;;
    --host-discovery-script) hosts=(--host-discovery-script "$2"); elastic+=("$1" "$2"); shift 2 ;;
    --min-np|--max-np|--max-restarts) elastic+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "launch/run.sh: unknown option '$1' (train arguments go after --)" >&2; exit 2 ;;
  esac
done
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
[ -n "$device" ] || device=$([ "${gpus:-0}" -gt 0 ] && echo gpu || echo cpu)
cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # GNU nproc obeys those two
[ -n "$workers" ] || workers=$([ "$device" = gpu ] && echo "$gpus" || echo "$cores")
# CPU: split this host's cores between its workers instead of letting each grab them all.
# Each worker computes on all its cores but one (at least one): the other runs its python
# thread, which dispatches the operators (machine.compute_threads says why).
threads=$(( cores / workers > 0 ? cores / workers : 1 ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( threads > 1 ? threads - 1 : 1 ))} MXNET_CPU_WORKER_NTHREADS=${MXNET_CPU_WORKER_NTHREADS:-1}
# A worker that vanishes (host lost) fails the job in bounded time instead of hanging it.
export HOROVOD_GLOO_TIMEOUT_SECONDS=${HOROVOD_GLOO_TIMEOUT_SECONDS:-60}
bin=$(dirname "$python")
horovodrun=$([ -x "$bin/horovodrun" ] && echo "$bin/horovodrun" || echo horovodrun)
# CPU, this host only: worker k runs on cores k*threads .. k*threads+threads-1 (by its local
# rank), so workers do not trade cores: -np 2 on 2 cores ran 1.2-1.35x faster than unbound at
# 50-d, even at 300-d (python -m distjob.bench, "one core per worker").
bound=()
if [ "$device" = cpu ] && [ ${#hosts[@]} -eq 0 ] && [ "$bind" = 1 ] && command -v taskset >/dev/null; then
  bound=(sh -c 'first=$(( HOROVOD_LOCAL_RANK * $0 % $1 )); shift; exec taskset -c "$first-$(( first + $0 - 1 ))" "$@"'
         "$threads" "$cores")
fi
if [ ${#elastic[@]} -gt 0 ]; then  # the agent picks -np and the hosts itself, each round
  [ "${hosts[0]:-}" = --hostfile ] || [ "${hosts[0]:-}" = --host-discovery-script ] || {
    echo "launch/run.sh: --min-np/--max-np/--max-restarts need --hostfile or --host-discovery-script" >&2; exit 2; }
  [ "${hosts[0]}" = --hostfile ] && elastic+=("${hosts[@]}")
  cmd=("$python" -m distjob.launch "${elastic[@]}" "${nic[@]}" --gloo --horovodrun "$horovodrun"
       -- --ctx "$device" "${output[@]}" "$@")
  echo "+ OMP_NUM_THREADS=$OMP_NUM_THREADS ${cmd[*]}"
  exec "${cmd[@]}"
fi
cmd=("$horovodrun" -np "$workers" "${hosts[@]}" "${nic[@]}" --gloo
     "${bound[@]}" "$python" -m distjob.train --ctx "$device" "${output[@]}" "$@")
echo "+ OMP_NUM_THREADS=$OMP_NUM_THREADS ${cmd[*]}"
exec "${cmd[@]}"
