#!/usr/bin/env bash
# Manage a throw-away single-node Slurm cluster (slurmctld + slurmd + munged)
# for picas tests and CI.
#
# Usage: scripts/slurm-cluster.sh start|stop|status|env
#
#   start   install packages if needed (root only), set up munge, write
#           slurm.conf into the state directory, start the daemons and wait
#           until the node is idle. A no-op if the cluster is already running.
#   stop    stop the daemons this script started (by recorded PID only).
#   status  show recorded daemons and sinfo; exit 0 if up, 1 otherwise.
#   env     print "export SLURM_CONF=..." for use with eval.
#
# State directory: $PICAS_SLURM_DIR (default /tmp/picas-slurm). It holds
# slurm.conf, logs, spool/state directories and the PID records (pids/).
# Timeouts: PICAS_SLURM_START_TIMEOUT (seconds, default 60).
# Ports: free ones, picked at each start (not Slurm's 6817/6818, which
# another Slurm on the machine may hold). When start fails, it says why in a
# few lines, kept in $STATE_DIR/start-error too.

set -euo pipefail

STATE_DIR="${PICAS_SLURM_DIR:-/tmp/picas-slurm}"
CONF="$STATE_DIR/slurm.conf"
PID_DIR="$STATE_DIR/pids"
START_TIMEOUT="${PICAS_SLURM_START_TIMEOUT:-60}"
NODE="$(hostname -s)"
PACKAGES=(slurmctld slurmd slurm-client munge)
MUNGE_KEY=/etc/munge/munge.key

export SLURM_CONF="$CONF"

log() { echo "slurm-cluster: $*"; }
err() { echo "slurm-cluster: ERROR: $*" >&2; }

usage() {
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
}

# --------------------------------------------------------------------------
# PID records
# --------------------------------------------------------------------------

pid_of() {
    # Print the recorded PID of daemon $1 (empty if none).
    local f="$PID_DIR/$1.pid"
    [[ -r "$f" ]] && tr -dc '0-9' <"$f" || true
}

is_alive() {
    # True if daemon $1 has a record and that PID is still the same program.
    local name="$1" pid comm
    pid="$(pid_of "$name")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ "$comm" == "$name"* ]]
}

record_pid() { echo "$2" >"$PID_DIR/$1.pid"; }

await_exec() {
    # Wait until the launcher (setpriv, setsid) recorded for $1 has exec'd
    # the daemon itself; until then is_alive would see the launcher's name.
    local pid i
    pid="$(pid_of "$1")"
    for ((i = 0; i < 50; i++)); do
        is_alive "$1" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Poll up to TRIES times, 0.2 s apart, until the recorded daemon NAME is gone.
wait_gone() {
    local name=$1 tries=$2 i
    for ((i = 0; i < tries; i++)); do
        is_alive "$name" || return 0
        sleep 0.2
    done
}

forget_pid() { rm -f "$PID_DIR/$1.pid"; }

stop_daemon() {
    # Stop daemon $1 by its recorded PID: SIGTERM, wait, SIGKILL if needed.
    local name="$1" pid i
    pid="$(pid_of "$name")"
    if [[ -z "$pid" ]]; then
        return 0
    fi
    if ! is_alive "$name"; then
        log "$name (pid $pid) not running; removing stale record"
        forget_pid "$name"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$name" 100
    if is_alive "$name"; then
        log "$name (pid $pid) ignored SIGTERM for 20s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$name" 25
    fi
    if is_alive "$name"; then
        err "$name (pid $pid) did not exit"
        return 1
    fi
    forget_pid "$name"
}

# Say why the cluster could not start, in a few lines: what failed, the
# last error lines of its logs, and where the full logs are. The same lines
# go to $STATE_DIR/start-error, which scripts/test.sh hands to the tests.
fail_start() {
    local what="$1" reason f logs=()
    shift
    for f in "$@"; do [[ -s "$f" ]] && logs+=("$f"); done
    reason=""
    if ((${#logs[@]} > 0)); then
        reason="$(grep -hiE 'fatal|error' "${logs[@]}" | tail -n 2 |
            sed -E 's/^\[[^]]*\] //' || true)"
        [[ -n "$reason" ]] || reason="$(tail -q -n 2 "${logs[@]}")"
    fi
    {
        echo "$what"
        if [[ -n "$reason" ]]; then sed 's/^/  /' <<<"$reason"; fi
        if ((${#logs[@]} > 0)); then echo "  (full logs: ${logs[*]})"; fi
    } >"$STATE_DIR/start-error"
    err "$(cat "$STATE_DIR/start-error")"
    exit 1
}

# A TCP port that nothing listens on now, so that another Slurm on this
# machine (on the default 6817/6818) does not stop ours.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

# --------------------------------------------------------------------------
# start helpers
# --------------------------------------------------------------------------

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $EUID -ne 0 ]]; then
        err "missing packages (${missing[*]}) and not root; install them first"
        exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${missing[@]}"; then
        apt-get update
        apt-get install -y "${missing[@]}"
    fi
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
    if [[ ! -s "$MUNGE_KEY" ]]; then
        log "creating munge key $MUNGE_KEY"
        mkdir -p "$(dirname "$MUNGE_KEY")"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --force --keyfile="$MUNGE_KEY"
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge "$(dirname "$MUNGE_KEY")" "$MUNGE_KEY"
    chmod 700 "$(dirname "$MUNGE_KEY")"
    chmod 400 "$MUNGE_KEY"
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge

    if is_alive munged; then
        log "munged already running (pid $(pid_of munged))"
        return 0
    fi
    forget_pid munged
    if munge_works; then
        log "using munged that was already running (not started by this script)"
        return 0
    fi
    log "starting munged"
    # setpriv execs munged directly, so $! is munged's own PID.
    setpriv --reuid=munge --regid=munge --init-groups -- \
        munged --foreground --force >>"$STATE_DIR/munged.out" 2>&1 </dev/null &
    record_pid munged $!
    await_exec munged || true
    local i
    for ((i = 0; i < 50; i++)); do
        munge_works && return 0
        is_alive munged || break
        sleep 0.2
    done
    fail_start "munged did not come up" "$STATE_DIR/munged.out" /var/log/munge/munged.log
}

write_conf() {
    local cpus mem_total mem
    cpus="$(nproc)"
    mem_total="$(free -m | awk '/^Mem:/ {print $2}')"
    # Stay a little below the real total so slurmd never drains the node
    # for "low RealMemory".
    mem=$((mem_total - mem_total / 20 - 64))
    ((mem < 256)) && mem=256

    local ctl_host="$NODE" node_addr=""
    if ! getent hosts "$NODE" >/dev/null 2>&1; then
        # Host name does not resolve: talk over loopback explicitly.
        ctl_host="$NODE(127.0.0.1)"
        node_addr=" NodeAddr=127.0.0.1"
    fi

    mkdir -p "$STATE_DIR/state" "$STATE_DIR/spool" "$STATE_DIR/run" "$PID_DIR"
    local tmp="$CONF.tmp.$$"
    cat >"$tmp" <<EOF
# Generated by scripts/slurm-cluster.sh -- single-node test cluster.
ClusterName=picas
SlurmctldHost=$ctl_host
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core

StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmdPidFile=$STATE_DIR/run/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# Keep everything fast for tests.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=0,batch_sched_delay=0
KillWait=5
OverTimeLimit=0
MinJobAge=5
CompleteWait=0
ReturnToService=2
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=30
UnkillableStepTimeout=30

NodeName=$NODE$node_addr CPUs=$cpus RealMemory=$mem State=UNKNOWN
# FORCE:4 lets up to 4 jobs share each CPU, so that tests can run several
# pilots at once on a 2-core machine (pilots mostly wait on the network).
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
    if [[ -f "$CONF" ]] && cmp -s "$tmp" "$CONF"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$CONF"
        log "wrote $CONF"
    fi
}

start_slurm_daemon() {
    # Start $1 in the foreground (-D) in its own session, record $!.
    local name="$1"
    if is_alive "$name"; then
        log "$name already running (pid $(pid_of "$name"))"
        return 0
    fi
    forget_pid "$name"
    log "starting $name"
    # Without job control a background job is not a process-group leader,
    # so setsid execs the daemon in place and $! is the daemon itself.
    setsid "$name" -D -f "$CONF" >>"$STATE_DIR/$name.out" 2>&1 </dev/null &
    record_pid "$name" $!
    await_exec "$name" || true
}

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

wait_for_cluster() {
    local deadline=$((SECONDS + START_TIMEOUT)) state="" resumed=0
    while ((SECONDS < deadline)); do
        if ! is_alive slurmctld; then
            fail_start "slurmctld exited during startup" \
                "$STATE_DIR/slurmctld.out" "$STATE_DIR/slurmctld.log"
        fi
        if ! is_alive slurmd; then
            fail_start "slurmd exited during startup" \
                "$STATE_DIR/slurmd.out" "$STATE_DIR/slurmd.log"
        fi
        state="$(node_state)"
        case "$state" in
            idle | mixed | allocated | completing)
                log "node $NODE is $state; cluster ready (SLURM_CONF=$CONF)"
                return 0
                ;;
            down | drain* | drained | fail*)
                if ((resumed == 0)); then
                    log "node $NODE is $state; resuming it"
                    scontrol update nodename="$NODE" state=resume || true
                    resumed=1
                fi
                ;;
        esac
        sleep 0.5
    done
    fail_start "node $NODE not idle after ${START_TIMEOUT}s (state: '${state:-unknown}')" \
        "$STATE_DIR/slurmctld.log" "$STATE_DIR/slurmd.log"
}

# --------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------

cmd_start() {
    if is_alive slurmctld && is_alive slurmd; then
        log "already running (slurmctld pid $(pid_of slurmctld), slurmd pid $(pid_of slurmd))"
        log "SLURM_CONF=$CONF"
        return 0
    fi
    if [[ $EUID -ne 0 ]]; then
        err "must be run as root (SlurmUser=root, SlurmdUser=root)"
        exit 1
    fi
    ensure_packages
    mkdir -p "$STATE_DIR" "$PID_DIR"
    rm -f "$STATE_DIR/start-error"
    # Only rewrite the config while no slurm daemon of ours is using it.
    if ! is_alive slurmctld && ! is_alive slurmd; then
        write_conf
    fi
    ensure_munge
    start_slurm_daemon slurmctld
    local i
    for ((i = 0; i < 100; i++)); do
        scontrol ping 2>/dev/null | grep -q UP && break
        is_alive slurmctld || break
        sleep 0.2
    done
    start_slurm_daemon slurmd
    wait_for_cluster
}

cmd_stop() {
    if [[ -f "$CONF" ]] && is_alive slurmctld; then
        # Cancel leftover jobs so slurmd does not leave orphaned job steps.
        if [[ -n "$(squeue -h -o %i 2>/dev/null | head -n 1)" ]]; then
            log "cancelling remaining jobs"
            local jobs=() i
            mapfile -t jobs < <(squeue -h -o %A 2>/dev/null | sort -u)
            ((${#jobs[@]} > 0)) && scancel --quiet "${jobs[@]}" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                [[ -z "$(squeue -h -o %i 2>/dev/null | head -n 1)" ]] && break
                sleep 0.2
            done
        fi
    fi
    local rc=0
    stop_daemon slurmd || rc=1
    stop_daemon slurmctld || rc=1
    stop_daemon munged || rc=1
    ((rc == 0)) && log "stopped"
    return "$rc"
}

cmd_status() {
    local up=0 name pid
    for name in munged slurmctld slurmd; do
        pid="$(pid_of "$name")"
        if [[ -z "$pid" ]]; then
            if [[ "$name" == munged ]] && munge_works; then
                echo "munged: running (not started by this script)"
            else
                echo "$name: not running (no PID record)"
                [[ "$name" == munged ]] || up=1
            fi
        elif is_alive "$name"; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: dead (stale pid $pid)"
            up=1
        fi
    done
    echo "SLURM_CONF=$CONF"
    if [[ -f "$CONF" ]] && sinfo 2>/dev/null; then
        :
    else
        echo "sinfo: controller not reachable"
        up=1
    fi
    return "$up"
}

cmd_env() {
    printf 'export SLURM_CONF=%q\n' "$CONF"
}

[[ $# -eq 1 ]] || usage
case "$1" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) usage ;;
esac
