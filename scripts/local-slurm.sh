#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py (run as root; .ci/run uses it).
#
#   scripts/local-slurm.sh start   install slurm-wlm + munge (Debian) if missing, write
#                                  /etc/slurm/slurm.conf for this host, start munged, slurmctld,
#                                  slurmd, wait until the node is idle; fast when already up
#   scripts/local-slurm.sh stop    stop the daemons that `start` started (by the pids it recorded)
#
# A SLURM that already answers (`sinfo` lists an idle node) is used as it is: nothing is
# written or started, and `stop` leaves it alone.
set -euo pipefail

STATE=/run/vqacache-local-slurm
LOGS=/var/log/vqacache-local-slurm

die() { echo "local-slurm: $*" >&2; exit 1; }

node_ready() {
  command -v sinfo >/dev/null 2>&1 || return 1
  sinfo -h -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

start_daemon() {  # name, command...: started in the background, its pid recorded
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.out" 2>&1 < /dev/null &
  echo $! >"$STATE/$name.pid"
}

start() {
  if node_ready; then
    echo "local-slurm: a SLURM is already running here; using it"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "must run as root"
  if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
     || ! command -v munged >/dev/null 2>&1; then
    echo "local-slurm: installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
      || die "could not install slurm-wlm and munge with apt-get"
  fi
  mkdir -p "$STATE" "$LOGS" /etc/slurm /var/spool/slurmd /var/spool/slurmctld /run/munge /var/lib/munge /var/log/munge

  # munge: a key, then munged (as root: --force accepts root-owned paths)
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chmod 0400 /etc/munge/munge.key
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    start_daemon munged munged --foreground --force
    for _ in $(seq 50); do (munge -n | unmunge) >/dev/null 2>&1 && break; sleep 0.2; done
    (munge -n | unmunge) >/dev/null 2>&1 || { cat "$LOGS/munged.out" >&2; die "munged did not start"; }
  fi

  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(free -m | awk '/^Mem:/ {print $2}') - 1024 ))
  [ "$mem" -gt 512 ] || mem=512
  cat >/etc/slurm/slurm.conf <<EOF
# written by vqacache scripts/local-slurm.sh: a one-node cluster for tests
ClusterName=vqacache-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
MailProg=/bin/true
KillWait=5
InactiveLimit=0
MinJobAge=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  pgrep -x slurmctld >/dev/null || start_daemon slurmctld slurmctld -D -c
  pgrep -x slurmd >/dev/null || start_daemon slurmd slurmd -D
  for _ in $(seq 120); do
    node_ready && break
    sinfo -h -o '%t' 2>/dev/null | grep -Eq '^(down|drain)' && scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 0.5
  done
  if ! node_ready; then
    echo "local-slurm: the node did not become idle; sinfo says:" >&2
    sinfo -N -l >&2 || true
    tail -n 20 "$LOGS"/*.log "$LOGS"/*.out >&2 2>/dev/null || true
    stop
    die "SLURM did not start"
  fi
  echo "local-slurm: node $host up ($cpus CPUs, ${mem} MiB)"
}

stop() {
  local name pid
  # our own cluster: cancel its jobs first (their steps would outlive slurmd)
  [ -f "$STATE/slurmctld.pid" ] && { scancel -u root 2>/dev/null || true; sleep 1; }
  for name in slurmd slurmctld munged; do
    [ -f "$STATE/$name.pid" ] || continue
    pid=$(cat "$STATE/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$STATE/$name.pid"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
