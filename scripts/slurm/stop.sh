#!/usr/bin/env bash
# Stop the cluster scripts/slurm/start.sh started in DIR: cancel its jobs, then stop slurmd, slurmctld and munged
# by the PIDs they wrote (SIGTERM, then SIGKILL after 10 s). Leaves DIR (logs, job-completion log) in place.
set -uo pipefail
[ $# -eq 1 ] || { echo "usage: bash scripts/slurm/stop.sh DIR" >&2; exit 2; }
dir=$1
[ -f "$dir/slurm.conf" ] || { echo "stop.sh: $dir/slurm.conf not found; is DIR the folder given to start.sh?" >&2; exit 2; }
export SLURM_CONF=$dir/slurm.conf
alive() { [ -s "$dir/run/$1.pid" ] && kill -0 "$(cat "$dir/run/$1.pid")" 2>/dev/null; }
if alive slurmctld; then
  scancel --user "$(id -un)" 2>/dev/null || true
  for _ in $(seq 100); do   # up to 10 s for the jobs' steps to end
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
    sleep 0.1
  done
fi
for daemon in slurmd slurmctld munged; do
  alive "$daemon" || continue
  pid=$(cat "$dir/run/$daemon.pid")
  kill "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  rm -f "$dir/run/$daemon.pid"
done
echo "Slurm in $dir stopped"
