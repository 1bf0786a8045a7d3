#!/usr/bin/env bash
# A real single-node Slurm cluster (with accounting) on this machine, for tests and for trying a
# pipeline before the real cluster:   slurm/local-cluster.sh up | down | status
#
# Runs as root: munged, MariaDB (mysqld_safe) + slurmdbd, slurmctld, and one slurmd per node.
# It looks like a small GPU cluster, so a paper preset can be checked and rehearsed here:
#   partition `cpu` (default, MaxTime 2 days): node <host>, SKYMATH_SLURM_CPUS CPUs (default 8)
#     and SKYMATH_SLURM_MEM_MB (16 GB);
#   partition `gpu` (MaxTime 3 days): SKYMATH_SLURM_GPU_NODES nodes <host>-gpu1.. (default 2),
#     each a DGX-like 64 CPUs / 1000 GB / gres gpu:8 / Feature=a100, served by its own slurmd on
#     this host (`slurmd -N`; names resolve through /etc/hosts). The GPUs are fake: gres.conf
#     points at /dev/null links, so `--gres=gpu:N` is scheduled and counted (CUDA_VISIBLE_DEVICES
#     is set) but no GPU exists; torch sees none and runs on CPU.
# Accounting is enforced (associations, limits, qos) as on real sites: user root has the accounts
# `root` (default) and `mathlab` (the example profile's), QOS `normal` (default) and
# `skymath-small` (MaxSubmitJobsPerUser=4, for tests of submit limits). EnforcePartLimits=ALL.
# Nodes declare more than the host has (SlurmdParameters=config_overrides) so small array tasks
# run side by side; nothing is bound to cores (TaskPlugin=task/none). Processes are tracked with
# proctrack/cgroup (cgroup v1 freezer) where available, so scancel kills every process of a job.
# `up` is idempotent: it keeps a running cluster and restarts the daemons only when the generated
# configuration changed (saved job state survives: queued jobs stay queued).
set -euo pipefail

CLUSTER=${SKYMATH_SLURM_CLUSTER:-skymath-local}
CPUS=${SKYMATH_SLURM_CPUS:-8}
MEM_MB=${SKYMATH_SLURM_MEM_MB:-16384}
DEF_MEM_PER_CPU=${SKYMATH_SLURM_DEF_MEM_PER_CPU:-512}
GPU_NODES=${SKYMATH_SLURM_GPU_NODES:-2}
GPU_NODE_CPUS=${SKYMATH_SLURM_GPU_NODE_CPUS:-64}
GPU_NODE_MEM_MB=${SKYMATH_SLURM_GPU_NODE_MEM_MB:-1024000}
GPUS_PER_NODE=${SKYMATH_SLURM_GPUS_PER_NODE:-8}
GPU_FEATURE=${SKYMATH_SLURM_GPU_FEATURE:-a100}
NODE=$(hostname -s)
FAKE_GPU_DIR=/var/lib/skymath-slurm/fake-gpus
SMALL_QOS=skymath-small
SITE_ACCOUNT=mathlab
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
DB_PASS_FILE=/etc/slurm/.skymath-dbpass
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

log() { echo "[local-cluster] $*" >&2; }
die() { log "error: $*"; exit 1; }
# Under `set -e` a failing command ends the script without a word; say which one (and where).
set -E
trap 'rc=$?; log "error: line $LINENO: \`$BASH_COMMAND\` exited $rc"' ERR

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it starts system daemons)"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq 1 "$((t * 2))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "timed out after ${t}s waiting for $what"
}

gpu_node_names() { local i; for i in $(seq 1 "$GPU_NODES"); do echo "$NODE-gpu$i"; done; }

ensure_hosts() {  # the GPU node names must resolve (torchrun's rendezvous host is a node name)
  local n
  for n in $(gpu_node_names); do
    getent hosts "$n" >/dev/null || echo "127.0.0.1 $n" >>/etc/hosts
  done
}

fake_gpu_devices() {  # gres/gpu needs a device file per GPU; /dev/null links are enough
  install -d -m 0755 "$FAKE_GPU_DIR"
  local i
  for i in $(seq 0 $((GPUS_PER_NODE - 1))); do ln -sfn /dev/null "$FAKE_GPU_DIR/nvidia$i"; done
}

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurm-wlm)
  command -v slurmdbd >/dev/null || missing+=(slurmdbd)
  command -v munged >/dev/null || missing+=(munge)
  command -v mysqld_safe >/dev/null || missing+=(mariadb-server)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
  fi
}

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge /etc/munge
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating the munge key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  if ! pid_alive /run/munge/munged.pid; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
  fi
  wait_for 20 "munge" bash -c 'munge -n | unmunge'
}

start_mariadb() {
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    log "initialising MariaDB"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  if ! mysqladmin ping >/dev/null 2>&1; then
    log "starting MariaDB"
    # every fd redirected: a daemon must not hold the caller's stdout (`up | tail` would never end)
    (cd / && exec setsid nohup mysqld_safe --user=mysql) </dev/null >/var/log/skymath-mysqld_safe.log 2>&1 &
    wait_for 60 "MariaDB" mysqladmin ping
  fi
  if [ ! -s "$DB_PASS_FILE" ]; then
    install -d -m 0755 "$CONF_DIR"
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DB_PASS_FILE")
  fi
  local pw; pw=$(cat "$DB_PASS_FILE")
  mysql -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${pw}';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '${pw}';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
}

write_if_changed() {  # write_if_changed PATH MODE < content ; returns 0 when the file changed
  local path=$1 mode=$2 tmp; tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path"; then rm -f "$tmp"; chmod "$mode" "$path"; return 1; fi
  install -m "$mode" -o root -g root "$tmp" "$path"; rm -f "$tmp"; return 0
}

choose_proctrack() {
  # proctrack/cgroup (cgroup v1 freezer) kills every process of a cancelled job, also one that
  # ignores SIGTERM and outlived its batch shell; proctrack/linuxproc loses such a reparented process
  # (it tracks by parent pid), which then runs on after scancel. linuxproc only where no v1 freezer.
  PROCTRACK=proctrack/linuxproc
  if [ -z "${SKYMATH_SLURM_PROCTRACK:-}" ] && [ -d /sys/fs/cgroup/freezer ] && [ -w /sys/fs/cgroup/freezer ]; then
    PROCTRACK=proctrack/cgroup
  fi
  PROCTRACK=${SKYMATH_SLURM_PROCTRACK:-$PROCTRACK}
}

write_configs() {  # sets CONF_CHANGED=1 when slurm.conf, gres.conf or slurmdbd.conf changed
  install -d -m 0755 "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld
  CONF_CHANGED=0
  write_if_changed "$CONF_DIR/slurmdbd.conf" 0600 <<EOC && CONF_CHANGED=1
# generated by skymath slurm/local-cluster.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$(cat "$DB_PASS_FILE")
StorageLoc=slurm_acct_db
EOC
  write_if_changed "$CONF_DIR/slurm.conf" 0644 <<EOC && CONF_CHANGED=1
# generated by skymath slurm/local-cluster.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again cred_expire + 1 s later (default 120 s; the rehearsal requeues twice)
AuthInfo=cred_expire=30
MpiDefault=none
ProctrackType=$PROCTRACK
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
ReturnToService=2
KillWait=10
MinJobAge=300
MaxArraySize=1001
SlurmdParameters=config_overrides
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd-%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd-%n.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageEnforce=associations,limits,qos
EnforcePartLimits=ALL
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
$(i=0; for n in $(gpu_node_names); do i=$((i + 1)); echo "NodeName=$n NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$((6830 + i)) CPUs=$GPU_NODE_CPUS RealMemory=$GPU_NODE_MEM_MB Gres=gpu:$GPUS_PER_NODE Feature=$GPU_FEATURE State=UNKNOWN"; done)
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=2-00:00:00 State=UP
PartitionName=gpu Nodes=$(gpu_node_names | paste -sd, -) MaxTime=3-00:00:00 State=UP
EOC
  write_if_changed "$CONF_DIR/gres.conf" 0644 <<EOC && CONF_CHANGED=1
# generated by skymath slurm/local-cluster.sh: fake GPUs (device files are /dev/null links)
$(for n in $(gpu_node_names); do echo "NodeName=$n Name=gpu Count=$GPUS_PER_NODE File=$FAKE_GPU_DIR/nvidia[0-$((GPUS_PER_NODE - 1))]"; done)
EOC
  if [ "$PROCTRACK" = proctrack/cgroup ]; then
    write_if_changed "$CONF_DIR/cgroup.conf" 0644 <<EOC && CONF_CHANGED=1
# generated by skymath slurm/local-cluster.sh: cgroups only track a job's processes (no limits)
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOC
  else
    [ -f "$CONF_DIR/cgroup.conf" ] || echo "CgroupPlugin=autodetect" >"$CONF_DIR/cgroup.conf"
  fi
  return 0  # an unchanged last file is not a failure (set -e would end `up` here without a word)
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
  if pid_alive "$2"; then
    local pid; pid=$(cat "$2")
    log "stopping $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$2"
}

all_nodes() { echo "$NODE"; gpu_node_names; }

stop_slurmds() {  # every slurmd of this host (also nodes no longer configured, and the old pid file)
  local f
  for f in /run/slurmd.pid /run/slurmd-*.pid; do [ -e "$f" ] && stop_pidfile slurmd "$f"; done
  return 0
}

setup_accounting() {  # idempotent: the site account and QOS the tests and the example profile use
  if [ -z "$(sacctmgr -n -P show qos "$SMALL_QOS" format=name 2>/dev/null)" ]; then
    log "adding QOS $SMALL_QOS (MaxSubmitJobsPerUser=4)"
    sacctmgr -i add qos "$SMALL_QOS" MaxSubmitJobsPerUser=4 >/dev/null
  fi
  if [ -z "$(sacctmgr -n -P show account "$SITE_ACCOUNT" format=account 2>/dev/null)" ]; then
    log "adding account $SITE_ACCOUNT"
    sacctmgr -i add account "$SITE_ACCOUNT" cluster="$CLUSTER" Description=skymath Organization=skymath >/dev/null
  fi
  if [ -z "$(sacctmgr -n -P show assoc cluster="$CLUSTER" account="$SITE_ACCOUNT" user=root format=user 2>/dev/null)" ]; then
    sacctmgr -i add user root account="$SITE_ACCOUNT" cluster="$CLUSTER" >/dev/null
  fi
  if sacctmgr -n -P show assoc cluster="$CLUSTER" user=root format=qos 2>/dev/null | grep -qv "$SMALL_QOS"; then
    log "allowing QOS normal,$SMALL_QOS for root"
    sacctmgr -i modify user root set qos=normal,"$SMALL_QOS" defaultqos=normal >/dev/null || true
  fi
}

node_state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n1; }

start_slurm() {
  if [ "$CONF_CHANGED" = 1 ]; then
    stop_slurmds
    stop_pidfile slurmctld /run/slurmctld.pid
    stop_pidfile slurmdbd /run/slurmdbd.pid
  fi
  if ! pid_alive /run/slurmdbd.pid; then log "starting slurmdbd"; slurmdbd; fi
  wait_for 60 "slurmdbd" sacctmgr -n show cluster
  if [ -z "$(sacctmgr -n -P show cluster "$CLUSTER" format=cluster 2>/dev/null)" ]; then
    log "registering cluster $CLUSTER in the accounting database"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
  setup_accounting
  if ! pid_alive /run/slurmctld.pid; then log "starting slurmctld"; slurmctld; fi
  wait_for 60 "slurmctld" scontrol ping
  local n state
  for n in $(all_nodes); do
    if ! pid_alive "/run/slurmd-$n.pid"; then log "starting slurmd for node $n"; slurmd -N "$n"; fi
  done
  for n in $(all_nodes); do
    wait_for 60 "node $n to register" bash -c "sinfo -h -N -n '$n' -o %T | grep -qvE 'unknown|not_responding'"
    state=$(node_state "$n")
    case "$state" in
      down*|drain*|fail*|inval*) log "resuming node $n ($state)"; scontrol update NodeName="$n" State=RESUME ;;
    esac
    wait_for 60 "node $n to be idle or in use" bash -c "sinfo -h -N -n '$n' -o %T | grep -qE '^(idle|mixed|allocated|completing)'"
  done
}

cmd_up() {
  need_root
  install_packages
  start_munge
  start_mariadb
  ensure_hosts
  fake_gpu_devices
  choose_proctrack
  write_configs
  start_slurm
  log "up: cluster $CLUSTER: partition cpu (default) = $NODE ($CPUS CPUs / ${MEM_MB} MB); partition gpu =" \
    "$(gpu_node_names | paste -sd' ' -) (each $GPU_NODE_CPUS CPUs / ${GPU_NODE_MEM_MB} MB / gpu:$GPUS_PER_NODE, feature $GPU_FEATURE)"
  sinfo -N -o "%N %P %T %c %m %G %f"
}

cmd_down() {
  need_root
  stop_slurmds
  stop_pidfile slurmctld /run/slurmctld.pid
  stop_pidfile slurmdbd /run/slurmdbd.pid
  if mysqladmin ping >/dev/null 2>&1; then log "stopping MariaDB"; mysqladmin shutdown || true; fi
  stop_pidfile munged /run/munge/munged.pid
  log "down"
}

cmd_status() {
  local ok=0
  local nodes; nodes=$(all_nodes | sed 's|.*|slurmd-&:/run/slurmd-&.pid|')
  for d in munged:/run/munge/munged.pid slurmdbd:/run/slurmdbd.pid slurmctld:/run/slurmctld.pid $nodes; do
    if pid_alive "${d#*:}"; then echo "${d%%:*}: running (pid $(cat "${d#*:}"))"; else echo "${d%%:*}: not running"; ok=1; fi
  done
  if mysqladmin ping >/dev/null 2>&1; then echo "mariadb: running"; else echo "mariadb: not running"; ok=1; fi
  if sinfo >/dev/null 2>&1; then sinfo; else echo "sinfo: failed"; ok=1; fi
  if sacct -n -X -S now-1minutes >/dev/null 2>&1; then echo "sacct: ok"; else echo "sacct: failed"; ok=1; fi
  return $ok
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
