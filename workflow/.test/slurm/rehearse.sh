#!/usr/bin/env bash
# Dress rehearsal of a cluster run, as root, on a one-node Slurm cluster on loopback (cluster.sh):
#   workflow/.test/slurm/rehearse.sh accounting|noaccounting [WORKDIR]
#   (REHEARSAL_LOCAL=DIR: where the local reference run is made, or found finished)
# 1. checks that Snakemake refuses a config error before submitting any job, and (without accounting)
#    the plugin's sacct status query before it could hang;
# 2. runs a subset of the demo DAG on the tiny config (.test/config/config.yaml) locally:
#    data -> demo model -> MATEX's attribution in 2 shards -> merge -> evaluate (7 jobs);
# 3. runs the same subset through workflow/profiles/slurm, interrupts it with SIGINT (Ctrl-C) while jobs
#    are queued, checks that the jobs were cancelled (squeue empties), resumes it;
# 4. compares every artifact of the two runs (matex compare-runs): they must be identical.
# Prints the time of each phase. Exit 77: no Slurm and no package manager to install it (skipped).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
kind=${1:?usage: rehearse.sh accounting|noaccounting [WORKDIR]}
work=${2:-$(mktemp -d /tmp/matex-rehearsal-$kind.XXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
t0=$(date +%s)
phase() { echo ">> [$(($(date +%s) - t0)) s] $*"; }

# the cluster's state in a short path: slurmd's and MariaDB's unix sockets live there (108 characters at most)
cluster=$(mktemp -d /tmp/matex-slurm.XXXX)
status=0
"$here/cluster.sh" start "$kind" "$cluster" || status=$?
if [ "$status" != 0 ]; then
    "$here/cluster.sh" stop "$cluster"
    [ "$status" = 77 ] || { cp -r "$cluster/log" "$work/cluster-log" 2>/dev/null || true; }
    rm -rf "$cluster"
    exit "$status"
fi
export SLURM_CONF="$cluster/etc/slurm.conf"
# Inside a job, snakemake-executor-plugin-slurm-jobstep starts the rule with srun in an environment
# stripped of SLURM_* variables, SLURM_CONF included; a real cluster's srun finds /etc/slurm/slurm.conf,
# this private one would not: an srun first on PATH (which the jobs inherit) points it at our config.
mkdir -p "$work/bin"
printf '#!/bin/sh\nSLURM_CONF=%s exec %s "$@"\n' "$SLURM_CONF" "$(command -v srun)" > "$work/bin/srun"
chmod +x "$work/bin/srun"
export PATH="$work/bin:$PATH"
cleanup() {
    scancel --quiet --user root 2>/dev/null || true
    "$here/cluster.sh" stop "$cluster"
    cp -r "$cluster/log" "$work/cluster-log" 2>/dev/null || true
    rm -rf "$cluster"
}
trap cleanup EXIT
phase "cluster $kind up"

cd "$repo"
overlay="$repo/.test/config/config.yaml"
target=results/synthetic/demo/metrics/matex.parquet
on_slurm=(--profile workflow/profiles/slurm --slurm-init-seconds-before-status-checks 5)
smk=("$py" -m snakemake --configfile "$overlay")
slurm=("${smk[@]}" "${on_slurm[@]}")
fail() { echo "REHEARSAL FAILED ($kind): $*" >&2; exit 1; }
jobs_known() { scontrol -o show job 2>/dev/null | grep -c JobId= || true; }

# 1a. a config error: refused while parsing, nothing submitted
printf 'attribution:\n  methods: [matex, no_such_method]\n' > "$work/bad.yaml"
if "$py" -m snakemake "${on_slurm[@]}" --configfile "$overlay" "$work/bad.yaml" -d "$work/bad" "$target" > "$work/bad.log" 2>&1; then
    fail "a config naming an unknown method was accepted"
fi
grep -q no_such_method "$work/bad.log" || fail "the config error does not name the method: $(tail -5 "$work/bad.log")"
[ "$(jobs_known)" = 0 ] || fail "a job was submitted for a config that cannot work"
phase "config error refused before any job was submitted"
# 1b. no accounting: the sacct status query is refused before submitting (it would wait for ever)
if [ "$kind" = noaccounting ]; then
    if "${slurm[@]}" --slurm-status-command sacct -d "$work/sacct" "$target" > "$work/sacct.log" 2>&1; then
        fail "the sacct status query was accepted on a cluster without accounting"
    fi
    grep -q "slurm-status-command: squeue" "$work/sacct.log" || fail "no hint at the status command: $(tail -5 "$work/sacct.log")"
    [ "$(jobs_known)" = 0 ] || fail "a job was submitted although the status query cannot work"
    phase "sacct status query refused before any job was submitted"
fi

# 2. the local reference run (REHEARSAL_LOCAL: a folder shared by rehearsals, finished once)
local_run=${REHEARSAL_LOCAL:-$work/local}
"${smk[@]}" --profile workflow/profiles/local -d "$local_run" "$target" > "$work/local.log" 2>&1 \
    || fail "local run: $(tail -20 "$work/local.log")"
phase "local run done"

# 3. the SLURM run, interrupted while attribution jobs are queued, then resumed
# job control on: the run gets its own process group and, unlike a plain background job of a script,
# does not ignore SIGINT; Ctrl-C in a terminal sends SIGINT to the whole group, as below
set -m
"${slurm[@]}" -d "$work/slurm" "$target" > "$work/slurm-interrupted.log" 2>&1 &
pid=$!
set +m
queued=""
for _ in $(seq 1200); do
    queued=$(squeue -h -o '%i %T %k' | grep -i attribute || true)
    [ -n "$queued" ] && break
    kill -0 "$pid" 2>/dev/null || fail "the SLURM run ended before an attribution job was queued: $(tail -20 "$work/slurm-interrupted.log")"
    sleep 0.5
done
[ -n "$queued" ] || fail "no attribution job was queued within 10 min"
echo "$queued" | sed 's/^/   queued: /'
kill -INT -- "-$pid"
wait "$pid" && fail "the interrupted run exited 0" || true
phase "SIGINT sent, controller exited"
left=""
for _ in $(seq 60); do
    left=$(squeue -h -o '%i %T %k')
    [ -z "$left" ] && break
    sleep 0.5
done
[ -z "$left" ] || fail "jobs still in the queue 30 s after the interrupt: $left"
grep -q "Terminating processes on user request" "$work/slurm-interrupted.log" \
    || fail "the interrupted run's log does not say it stopped on request: $(tail -5 "$work/slurm-interrupted.log")"
phase "queue empty: every job cancelled"

"${slurm[@]}" -d "$work/slurm" "$target" > "$work/slurm-resumed.log" 2>&1 \
    || fail "resumed SLURM run: $(tail -30 "$work/slurm-resumed.log")"
phase "resumed SLURM run done"
# the jobs SLURM still remembers (MinJobAge): model rules on the gpu partition with one GPU, the rest on cpu
scontrol -o show job > "$work/jobs.txt"
awk '{ id = st = part = rule = gpu = ""
       for (i = 1; i <= NF; i++) { split($i, kv, "=")
           if (kv[1] == "JobId") id = kv[2]; else if (kv[1] == "JobState") st = kv[2]
           else if (kv[1] == "Partition") part = kv[2]; else if (kv[1] == "Comment") rule = kv[2]
           else if (kv[1] == "TresPerJob") gpu = kv[2] }
       sub(/_wildcards.*/, "", rule)
       print "   job " id " " st " " rule " partition=" part (gpu ? " " gpu : "") }' "$work/jobs.txt" | tee "$work/jobs-summary.txt"
if grep -E "rule_(attribute|evaluate) " "$work/jobs-summary.txt" | grep -v "partition=gpu gres:gpu:1" | grep -q .; then
    fail "a model job did not ask for a GPU on the gpu partition"
fi
if grep -E "rule_merge_attribution " "$work/jobs-summary.txt" | grep -v "partition=cpu$" | grep -q .; then
    fail "a CPU job went elsewhere than the cpu partition or asked for a GPU"
fi

# 4. identical artifacts
"$py" -m matex.cli compare-runs "$local_run/results" "$work/slurm/results" > "$work/compare.txt" 2>&1 \
    || fail "local and SLURM artifacts differ: $(cat "$work/compare.txt")"
sed 's/^/   /' "$work/compare.txt" | head -5
phase "REHEARSAL PASSED ($kind): local and SLURM artifacts identical; logs in $work"
