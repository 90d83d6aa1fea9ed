#!/usr/bin/env bash
# A real, single-node Slurm cluster on this machine, for the slow Slurm tests and for trying
# `launcher=slurm` without a cluster: munge (authentication), MariaDB + slurmdbd (accounting: submitit
# reads job states with `sacct`), slurmctld and slurmd, all on localhost, with every CPU of the machine.
# Debian or Ubuntu, as root, with no systemd needed (a container is fine). Idempotent.
#
#   tools/slurm_cluster.sh up       install the packages if missing (apt), configure, start; waits until
#                                   the node accepts jobs
#   tools/slurm_cluster.sh down     stop the daemons (configuration, accounting and state are kept)
#   tools/slurm_cluster.sh status   the daemons and `sinfo`
#
# Two partitions share the node: `batch` (the default) and `urgent`, whose jobs preempt batch jobs and
# requeue them (PreemptMode=REQUEUE): what a cluster's preemptible partition does to a long sweep.
set -euo pipefail

STATE=${DIFFRL_SLURM_STATE:-/var/lib/diffrl-slurm}
CONF_DIR=/etc/slurm
CLUSTER=diffrl
DB_PASS=diffrl-slurm   # the accounting database's local user; MariaDB only listens on the local socket
PACKAGES=(munge slurm-wlm slurmdbd mariadb-server)

log() { echo "slurm_cluster: $*" >&2; }

need_root() {
  if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (it installs packages and starts system daemons)"
    exit 1
  fi
}

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

running() { pgrep -x "$1" >/dev/null; }

write_config() {
  local host cpus mem_mb
  host=$(hostname -s)
  cpus=$(nproc)
  mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10))
  mkdir -p "$CONF_DIR" "$STATE"/{ctld,d,log}
  cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by diffrl's tools/slurm_cluster.sh: one node, this machine.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
MinJobAge=300
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=batch Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
  cat >"$CONF_DIR/slurmdbd.conf" <<EOF
# Written by diffrl's tools/slurm_cluster.sh.
DbdHost=localhost
SlurmUser=root
AuthType=auth/munge
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
  chmod 600 "$CONF_DIR/slurmdbd.conf"
}

start_munge() {
  running munged && return
  mkdir -p /run/munge && chown munge:munge /run/munge
  [[ -f /etc/munge/munge.key ]] || { mungekey --create >/dev/null 2>&1 || /usr/sbin/create-munge-key -f; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
}

start_database() {
  if ! running mariadbd && ! running mysqld; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (mysqld_safe --user=mysql >/dev/null 2>&1 &)
    for _ in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  mysql -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurm() {
  if ! running slurmdbd; then
    slurmdbd
    for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  sacctmgr -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  running slurmctld || slurmctld || { log "slurmctld failed to start: $STATE/log/slurmctld.log"; exit 1; }
  running slurmd || slurmd || { log "slurmd failed to start: $STATE/log/slurmd.log"; exit 1; }
  local host state
  host=$(hostname -s)
  for _ in $(seq 60); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1)
    case $state in
      idle* | mixed* | allocated*) log "up: node $host $state; partitions: $(sinfo -h -o %P | tr '\n' ' ')"; return ;;
      down* | drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  log "the node did not come up; logs: $STATE/log/"
  exit 1
}

up() {
  need_root
  install_packages
  write_config
  start_munge
  start_database
  start_slurm
}

down() {
  need_root
  for daemon in slurmd slurmctld slurmdbd; do
    pkill -x "$daemon" 2>/dev/null || true
  done
  for _ in $(seq 40); do running slurmctld || running slurmd || running slurmdbd || break; sleep 0.25; done
  mysqladmin shutdown >/dev/null 2>&1 || true
  pkill -x munged 2>/dev/null || true
  for _ in $(seq 40); do running munged || running mariadbd || break; sleep 0.25; done
  log "down"
}

status() {
  for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
    if running "$daemon"; then echo "$daemon: running"; else echo "$daemon: stopped"; fi
  done
  sinfo 2>/dev/null || true
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
