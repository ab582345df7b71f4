#!/usr/bin/env bash
# A one-node Slurm cluster on one machine (slurmctld + slurmd on 127.0.0.1, MUNGE for authentication), every
# file of it under one folder: try mkd's SLURM path (`mkd fanout --engine slurm`) on a laptop or in CI.
#
#   bash scripts/slurm/start.sh DIR [CPUS]     # then: source DIR/env.sh (sets SLURM_CONF for sbatch, squeue, ...)
#   bash scripts/slurm/stop.sh DIR
#
# CPUS (default 8) is what the node offers, not what the machine has (SlurmdParameters=config_overrides), so a
# job array's %N limit, not the node's size, decides how many tasks run at once. Needs Slurm and MUNGE
# (Debian/Ubuntu: apt-get install slurmctld slurmd slurm-client munge), run as root: slurmd starts every job
# step as its submitting user. No systemd: the daemons are started here and stopped by PID (stop.sh).
# No accounting database (slurmdbd): `sacct` answers "accounting storage is disabled", as on small clusters;
# Slurm's own job-completion log (DIR/log/jobcomp.txt: state, start and end of every job) is kept instead.
set -euo pipefail
usage="usage: bash scripts/slurm/start.sh DIR [CPUS]"
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "$usage" >&2; exit 2; }
cpus=${2:-8}
[[ $cpus =~ ^[1-9][0-9]*$ ]] || { echo "start.sh: CPUS must be a whole number > 0, not '$cpus'; $usage" >&2; exit 2; }
for tool in munged slurmctld slurmd sbatch squeue scancel sinfo python3; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "start.sh: $tool not found; install Slurm and MUNGE (Debian/Ubuntu: apt-get install slurmctld slurmd slurm-client munge)" >&2
    exit 3; }
done
[ "$(id -u)" = 0 ] || { echo "start.sh: run as root (sudo): slurmd starts job steps as their user" >&2; exit 2; }
dir=$(python3 -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$1")
# a unix socket's path has at most 107 bytes
[ ${#dir} -le 80 ] || { echo "start.sh: DIR '$dir' is too long for the MUNGE socket's path (at most 80 characters)" >&2; exit 2; }
# munged serves its socket only from a path every user may enter (o+x on each folder above it)
up=$dir
while up=$(dirname "$up"); [ "$up" != / ]; do
  if [ -d "$up" ] && [ "$(( 0$(stat -c %a "$up") & 1 ))" = 0 ]; then
    echo "start.sh: MUNGE refuses a socket under $up (others may not enter it); use a DIR whose folders are all" \
         "o+x (e.g. one made with 'mktemp -d /tmp/slurm-XXXX' and 'chmod 755' on it)" >&2
    exit 2
  fi
done
for pid_file in "$dir"/run/*.pid; do
  if [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    echo "start.sh: a cluster is already running in $dir ($(basename "$pid_file" .pid) pid $(cat "$pid_file")); stop it first: bash scripts/slurm/stop.sh $dir" >&2
    exit 2
  fi
done
mkdir -p "$dir"/{munge,run,state,spool,log}
chmod 755 "$dir"
chmod 700 "$dir/munge"   # munged refuses a key others can read
chmod 755 "$dir/run"     # ... and a socket folder others cannot enter
[ -s "$dir/munge/munge.key" ] || { head -c 1024 /dev/urandom > "$dir/munge/munge.key"; chmod 400 "$dir/munge/munge.key"; }
node=$(hostname -s)
read -r ctld_port slurmd_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
user=$(id -un)
cat > "$dir/slurm.conf" <<CONF
# written by scripts/slurm/start.sh: a one-node cluster on 127.0.0.1
ClusterName=mkd
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/run/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# no cgroups, no systemd: track a job's processes through /proc, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
printf 'export SLURM_CONF=%q\n' "$dir/slurm.conf" > "$dir/env.sh"
export SLURM_CONF=$dir/slurm.conf

failed() {
  echo "start.sh: $1; the logs:" >&2
  tail -n 15 "$dir"/log/*.log >&2 || true
  bash "$(dirname "$0")/stop.sh" "$dir" >&2 || true
  exit 1
}
munged --socket="$dir/run/munge.socket" --key-file="$dir/munge/munge.key" --pid-file="$dir/run/munged.pid" \
       --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" || failed "munged did not start"
slurmctld -c -f "$SLURM_CONF" || failed "slurmctld did not start"   # -c: no state from an earlier run
slurmd -f "$SLURM_CONF" -N "$node" || failed "slurmd did not start"
for _ in $(seq 600); do   # up to 60 s for the node to register
  state=$(sinfo -h -N -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 0.1
done
[ "$state" = idle ] || failed "node $node is '${state:-not reported}' after 60 s, not idle"
echo "one-node Slurm up in $dir (node $node, $cpus CPUs, slurmctld port $ctld_port); now: source $dir/env.sh"
