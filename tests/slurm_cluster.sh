#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests marked `slurm`.
#
#   bash tests/slurm_cluster.sh up      # install (Debian packages, as root) if needed, start, wait until idle
#   bash tests/slurm_cluster.sh down    # stop the daemons this script started, by their PIDs
#
# Made for a container without systemd: munged, slurmctld and slurmd are started by hand, with
# process tracking by /proc (proctrack/linuxproc), no task plugin, no accounting, one partition
# `debug` holding this node with all its CPUs (select/cons_tres, CR_CPU). State lives in $STATE.
set -euo pipefail

STATE=${MNIST37_SLURM_STATE:-/tmp/mnist37-slurm}
CONF=/etc/slurm/slurm.conf
NODE=$(hostname -s)

log() { echo "slurm_cluster: $*" >&2; }

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && return
    [ "$(id -u)" = 0 ] || { log "SLURM is not installed and installing it needs root"; exit 1; }
    log "installing slurmctld slurmd slurm-client munge (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

configure() {
    mkdir -p "$STATE"/{ctld,spool,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge
    local memory
    memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat >"$CONF" <<EOF
ClusterName=mnist37
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MpiDefault=none
KillWait=5
SchedulerParameters=sched_interval=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$NODE CPUs=$(nproc) RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; }
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
    chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
}

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    install
    configure
    running /run/munge/munged.pid || su -s /bin/sh munge -c "munged --force" || { log "munged did not start"; exit 1; }
    running "$STATE/slurmctld.pid" || slurmctld -c
    running "$STATE/slurmd.pid" || slurmd
    for _ in $(seq 120); do
        if [ "$(sinfo -h -n "$NODE" -o %t 2>/dev/null)" = idle ]; then
            log "node $NODE idle, partition debug up ($(nproc) CPUs)"
            return
        fi
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        sleep 0.5
    done
    log "node $NODE did not become idle within 60 s: $(sinfo 2>&1 | tail -n 1); see $STATE/log"
    exit 1
}

down() {
    scancel --user=root >/dev/null 2>&1 || true
    for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
        running "$pidfile" && kill "$(cat "$pidfile")" && log "stopped $(basename "$pidfile" .pid)"
    done
    return 0
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: bash tests/slurm_cluster.sh up|down" >&2; exit 2 ;;
esac
