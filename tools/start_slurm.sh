#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm tests and for trying `--slurm` locally.
#
#   sudo tools/start_slurm.sh [DIR]          install if missing, start (or keep) the cluster
#   sudo tools/start_slurm.sh --stop [DIR]   stop the daemons this script started in DIR
#   export SLURM_CONF=DIR/slurm.conf         then sbatch / srun / squeue / scontrol use it
#
# DIR (default $MOCO_SLURM_DIR, else /tmp/moco-slurm) holds slurm.conf, the state, spool, log and
# pid files. Needs root: the daemons run as root (SlurmUser=root), munged needs its key. When
# slurmctld, slurmd, sbatch or munged is missing, Debian's packages are installed first
# (apt-get install slurmctld slurmd slurm-client munge; Slurm 22.05 on bookworm, ~20 s).
# Safe to run again: a cluster already answering in DIR is kept as it is.
#
# The cluster: one node (this host, its CPU count and memory), one partition `debug`; jobs
# share the node by CPU (select/cons_tres, CR_CPU); no cgroups (proctrack/linuxproc,
# task/none), so it also runs in containers; no accounting database, so `sacct` does not work:
# common/slurm.py reads job states from `squeue` instead. A requeued job may start again after
# 5 s (AuthInfo cred_expire, 120 s by default), the daemons give a job 2 s between SIGTERM
# and SIGKILL (KillWait; 30 s by default) and the schedulers look every second, to keep tests
# short. A node name that does not resolve is added to /etc/hosts as 127.0.0.1.
set -euo pipefail

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi
stop=0
if [ "${1:-}" = "--stop" ]; then
  stop=1
  shift
fi
DIR=${1:-${MOCO_SLURM_DIR:-/tmp/moco-slurm}}
DIR=$(mkdir -p "$DIR" && cd "$DIR" && pwd)
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

say() { echo "start_slurm: $*"; }
die() {
  echo "start_slurm: $*" >&2
  exit 1
}

stop_pidfile() {  # SIGTERM the daemon of a pid file, then wait for it to go
  local pidfile=$1 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile"
}

if [ "$stop" = 1 ]; then
  stop_pidfile "$DIR/slurmd.pid"
  stop_pidfile "$DIR/slurmctld.pid"
  say "stopped the cluster in $DIR (munged is left running: other programs may use it)"
  exit 0
fi

if [ -f "$CONF" ] && scontrol ping 2>/dev/null | grep -q "is UP" \
  && sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|allocated"; then
  say "a cluster is already running in $DIR"
  echo "export SLURM_CONF=$CONF"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "needs root (the daemons run as root); run: sudo $0 $DIR"

missing=()
for bin in slurmctld slurmd sbatch munged; do
  command -v "$bin" >/dev/null || missing+=("$bin")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null \
    || die "${missing[*]} not found and no apt-get here; install Slurm (slurmctld, slurmd, client commands) and munge"
  say "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge \
    >"$DIR/apt.log" 2>&1 || die "apt-get install failed; see $DIR/apt.log"
fi

# munge: one daemon per machine, shared by every Slurm daemon and client on it.
if ! munge -n </dev/null >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  # --force: start even where munged dislikes the permissions of a container's folders
  runuser -u munge -- munged --force
  for _ in $(seq 50); do
    munge -n </dev/null >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n </dev/null >/dev/null 2>&1 || die "munged did not start (see /var/log/munge/munged.log)"
fi

host=$(hostname -s)
# Jobs reach each other by node name (torch's MASTER_ADDR is the first node of the job).
if ! getent hosts "$host" >/dev/null; then
  say "adding '127.0.0.1 $host' to /etc/hosts (the node name did not resolve)"
  echo "127.0.0.1 $host" >>/etc/hosts
fi
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p "$DIR/state" "$DIR/spool"
cat >"$CONF" <<CONF
# written by tools/start_slurm.sh: a one-node cluster on $host
ClusterName=moco
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
SlurmctldPort=${MOCO_SLURMCTLD_PORT:-6817}
SlurmdPort=${MOCO_SLURMD_PORT:-6818}
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=2
SchedulerParameters=bf_interval=1,sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

stop_pidfile "$DIR/slurmd.pid"  # leftovers of an earlier start in DIR
stop_pidfile "$DIR/slurmctld.pid"
slurmctld -c -f "$CONF"  # -c: a clean start, no jobs from an earlier state
slurmd -f "$CONF"
for _ in $(seq 150); do
  sinfo -h -o %T 2>/dev/null | grep -qE "^(idle|mixed|allocated)" && break
  sleep 0.2
done
sinfo -h -o %T 2>/dev/null | grep -qE "^(idle|mixed|allocated)" \
  || die "the node did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log"
say "one-node cluster up in $DIR ($host, $cpus CPUs)"
echo "export SLURM_CONF=$CONF"
