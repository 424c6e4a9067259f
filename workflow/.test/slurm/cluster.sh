#!/usr/bin/env bash
# A one-node Slurm cluster on loopback for the dress rehearsal (rehearse.sh), run as root:
#   cluster.sh start accounting|noaccounting DIR    write DIR/etc/slurm.conf, start munge (+ MariaDB and
#                                                    slurmdbd for 'accounting'), slurmctld, slurmd
#   cluster.sh stop DIR                               stop the daemons started in DIR
# Clients find the cluster with SLURM_CONF=DIR/etc/slurm.conf. The node has every core of the machine,
# a fake GPU (gres gpu:1, File=/dev/null: enough for scheduling --gpus=1) and two partitions, cpu and
# gpu, as the profile workflow/profiles/slurm expects. Exit status 77: no Slurm and no way to install it.
set -euo pipefail

cmd=${1:?usage: cluster.sh start KIND DIR | stop DIR}
if [ "$cmd" = stop ]; then
    dir=${2:?DIR}
    for name in slurmd slurmctld slurmdbd mariadb; do
        if [ -f "$dir/run/$name.pid" ]; then
            pid=$(cat "$dir/run/$name.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null || true
            rm -f "$dir/run/$name.pid"
        fi
    done
    exit 0
fi
kind=${2:?KIND: accounting or noaccounting}
dir=${3:?DIR}
case "$kind" in accounting|noaccounting) ;; *) echo "unknown cluster kind $kind" >&2; exit 2 ;; esac
mkdir -p "$dir"/{etc,run,log,state,spool,db}
dir=$(cd "$dir" && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "!!!!!!!!!! SKIPPED: Slurm rehearsal: it starts Slurm's daemons and needs root !!!!!!!!!!" >&2
    exit 77
fi

# ------------------------------------------------------------------------------------ packages
need=(slurmctld slurmd sbatch munged)
pkgs=(slurmctld slurmd slurm-client munge)
if [ "$kind" = accounting ]; then
    need+=(slurmdbd mariadbd)
    pkgs+=(slurmdbd mariadb-server)
fi
missing=()
for b in "${need[@]}"; do
    command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null; then
        echo ">> installing ${pkgs[*]} (missing: ${missing[*]})"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    else
        echo "!!!!!!!!!! SKIPPED: Slurm rehearsal: ${missing[*]} missing and no package manager to install" \
            "them (no apt-get) !!!!!!!!!!" >&2
        exit 77
    fi
fi
export PATH="$PATH:/usr/sbin"

# ------------------------------------------------------------------------------------ munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
fi

# ------------------------------------------------------------------------------------ config
# every core of the machine (nproc --all: plain nproc obeys OMP_NUM_THREADS), at least 2, the most a
# rule of the rehearsal asks for; config_overrides lets a 1-core machine declare 2
cpus=$(nproc --all)
[ "$cpus" -ge 2 ] || cpus=2
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
port=$([ "$kind" = accounting ] && echo 6917 || echo 6817)   # the two kinds never share ports
if [ "$kind" = accounting ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((port + 2))"
else
    accounting="AccountingStorageType=accounting_storage/none"
fi
cat > "$dir/etc/slurm.conf" <<CONF
ClusterName=matex-$kind
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$accounting
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
CONF
cat > "$dir/etc/gres.conf" <<CONF
AutoDetect=off
NodeName=localhost Name=gpu File=/dev/null
CONF
export SLURM_CONF="$dir/etc/slurm.conf"

# ------------------------------------------------------------------------------------ accounting
if [ "$kind" = accounting ]; then
    mysqld=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    if [ ! -d "$dir/db/mysql" ]; then
        mariadb-install-db --user=root --datadir="$dir/db" --auth-root-authentication-method=socket >/dev/null
    fi
    # a private MariaDB on a loopback port of its own (slurmdbd 22.05 cannot be given a socket path)
    "$mysqld" --user=root --datadir="$dir/db" --socket="$dir/run/mysql.sock" --pid-file="$dir/run/mariadb.pid" \
        --bind-address=127.0.0.1 --port=$((port + 3)) --log-error="$dir/log/mariadb.log" 2>> "$dir/log/mariadb.log" &
    for _ in $(seq 150); do [ -S "$dir/run/mysql.sock" ] && break; sleep 0.2; done
    for host in localhost 127.0.0.1; do
        mariadb --socket="$dir/run/mysql.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'$host' IDENTIFIED BY 'rehearsal';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'$host';"
    done
    cat > "$dir/etc/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$((port + 2))
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((port + 3))
StorageUser=slurm
StoragePass=rehearsal
StorageLoc=slurm_acct_db
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
CONF
    chmod 600 "$dir/etc/slurmdbd.conf"
    slurmdbd
    for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
    sacctmgr -i add cluster "matex-$kind" >/dev/null 2>&1 || true
fi

# ------------------------------------------------------------------------------------ daemons
slurmctld -c
slurmd -N localhost
for _ in $(seq 150); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1)
    case "$state" in idle*|mixed*|allocated*) break ;; esac
    sleep 0.2
done
state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1)
case "$state" in
    idle*|mixed*|allocated*) echo ">> cluster $kind up: $(sinfo -h -o '%P %D %c %G %T' | tr '\n' ';')" ;;
    *) echo "cluster $kind did not come up (node state '$state'); logs in $dir/log" >&2
       tail -n 20 "$dir"/log/*.log >&2 || true
       exit 1 ;;
esac
