#!/usr/bin/env bash
# A private single-node SLURM cluster with accounting, for clod's SLURM tests and for trying
# sweeps on one machine (Debian 12, run as root, no systemd needed). It listens on
# 127.0.0.1 ports 6817-6819 (slurmctld, slurmd, slurmdbd) and 3307 (its MariaDB).
#
#   cluster.sh install            apt-get install the packages that are missing (idempotent)
#   cluster.sh start  [BASE_DIR]  fresh cluster under BASE_DIR (default /tmp/clod-slurm);
#                                 prints `export SLURM_CONF=...` (also in BASE_DIR/env):
#                                 eval "$(bash scripts/slurm/cluster.sh start)"
#   cluster.sh stop   [BASE_DIR]  cancel every job, then stop the daemons this script started
#   cluster.sh status [BASE_DIR]  the recorded daemons, the node and the queue (rc 0: all up)
#
# Everything (configs, state, spool, logs, pid files, the database) lives under BASE_DIR, which
# `start` wipes: a drained node or stale job records from an earlier cluster never leak in.
# stdout carries only the env lines of `start`; progress and errors go to stderr.
set -euo pipefail

PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)
DEFAULT_BASE=/tmp/clod-slurm
CLUSTER_NAME=clod
DB_PORT=3307 # a private MariaDB; 3306 stays free for a system one
SLURMCTLD_PORT=6817
SLURMD_PORT=6818
SLURMDBD_PORT=6819
STOP_GRACE_S=20 # SIGTERM, then SIGKILL after this long

log() { echo "cluster.sh: $*" >&2; }
die() {
	echo "cluster.sh: error: $*" >&2
	exit 1
}

# The last lines of each given log that exists, to say why a daemon did not come up.
show_logs() {
	local file
	for file in "$@"; do
		[[ -s $file ]] || continue
		echo "---- last lines of $file ----" >&2
		tail -n 25 "$file" >&2
	done
}

need_root() {
	[[ $(id -u) == 0 ]] || die "must run as root: it starts daemons as the munge and mysql users"
}

# ---------------------------------------------------------------------------- install

missing_packages() {
	local pkg
	for pkg in "${PACKAGES[@]}"; do
		if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) != "install ok installed" ]]; then
			echo "$pkg"
		fi
	done
}

cmd_install() {
	local missing
	mapfile -t missing < <(missing_packages)
	if ((${#missing[@]} == 0)); then
		log "SLURM packages already installed"
		return 0
	fi
	need_root
	log "installing ${missing[*]}"
	# Without systemd the postinst scripts start nothing; a policy-rc.d that denies starts makes
	# that explicit where invoke-rc.d would otherwise try (our own `start` runs every daemon).
	local policy=/usr/sbin/policy-rc.d added_policy=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		added_policy=1
	fi
	local rc=0 out
	out=$(mktemp)
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				"${missing[@]}"
	} >"$out" 2>&1 || rc=$?
	((added_policy)) && rm -f "$policy"
	if ((rc != 0)); then
		tail -n 30 "$out" >&2
		rm -f "$out"
		die "apt-get failed (rc $rc) installing ${missing[*]}"
	fi
	rm -f "$out"
	log "installed ${missing[*]}"
}

# ---------------------------------------------------------------------------- helpers

# Is something listening on 127.0.0.1:PORT? (bash's /dev/tcp: no ss/netstat needed)
port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Alive and not a zombie: PID 1 may reap an orphaned daemon late, and a zombie holds nothing.
pid_alive() {
	local pid=$1 state
	[[ -r /proc/$pid/stat ]] || return 1
	state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z && $state != X ]]
}

# The recorded pid still runs the program we started (pids get reused).
pid_is() {
	local pid=$1 name=$2
	pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
# With WATCH_PID set, give up as soon as that process has exited (a daemon that died).
wait_for() {
	local seconds=$1 what=$2
	shift 2
	local deadline=$((SECONDS + seconds))
	until "$@" >/dev/null 2>&1; do
		if [[ -n ${WATCH_PID:-} ]] && ! pid_alive "$WATCH_PID"; then
			log "the daemon exited while waiting for $what"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "timed out after ${seconds} s waiting for $what"
			return 1
		fi
		sleep 0.2
	done
}

record_pid() { echo "$1 $2" >>"$BASE/pids"; }

# A client command that may hang on a half-started daemon (one that accepted the connection
# but never answers): give up after 10 s so that the start fails with the daemon's log.
probe() { timeout 10 "$@"; }

# ---------------------------------------------------------------------------- start

set_paths() {
	BASE=$(realpath -m "${1:-$DEFAULT_BASE}")
	ETC=$BASE/etc
	LOGS=$BASE/log
	RUN=$BASE/run
	DB=$BASE/db # owned by mysql: datadir, socket, pid file and log
	export SLURM_CONF=$ETC/slurm.conf
	MYCNF=$ETC/my.cnf
}

# The node line as slurmd detects the hardware, named localhost so nothing depends on the
# hostname. RealMemory stays the detected value: a larger one drains the node (Low RealMemory).
node_line() {
	local detected
	detected=$(slurmd -C | head -n 1) || die "slurmd -C failed"
	[[ $detected == NodeName=* ]] || die "unexpected output of slurmd -C: $detected"
	echo "NodeName=localhost NodeAddr=127.0.0.1 ${detected#NodeName=* } State=UNKNOWN"
}

write_configs() {
	local db_password=$1 node
	node=$(node_line) || exit 1
	mkdir -p "$ETC" "$LOGS" "$RUN" "$BASE/state/slurmctld" "$BASE/state/slurmd" "$DB/data"
	cat >"$SLURM_CONF" <<EOF
# Written by scripts/slurm/cluster.sh; rewritten at every start.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (default 120 s):
# keep the timeout/requeue tests short.
AuthInfo=cred_expire=10
StateSaveLocation=$BASE/state/slurmctld
SlurmdSpoolDir=$BASE/state/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: the cgroup plugins fail every job step in a VM or container.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that went DOWN comes back by itself once slurmd registers again.
ReturnToService=2
# Reject what the node cannot give at submission, instead of pending forever.
EnforcePartLimits=ALL
SchedulerType=sched/backfill
# The default 3 s batch delay keeps freshly submitted jobs pending. A job that becomes
# eligible without an event (a requeued job after cred_expire) waits for the next periodic
# pass: every 5 s instead of 30-60 s.
SchedulerParameters=batch_sched_delay=0,sched_interval=5,bf_interval=5
MailProg=/bin/true
MpiDefault=none
# submitit reads job states through sacct, which needs slurmdbd.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$SLURMDBD_PORT
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
# Seconds between SIGTERM and SIGKILL at a time limit or cancel: tests should not wait 30 s.
KillWait=5
InactiveLimit=0
$node
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

	# slurmdbd refuses a slurmdbd.conf readable by others (it holds the DB password).
	(
		umask 077
		cat >"$ETC/slurmdbd.conf" <<EOF
# Written by scripts/slurm/cluster.sh; rewritten at every start.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$db_password
StorageLoc=slurm_acct_db
EOF
	)
	chmod 0600 "$ETC/slurmdbd.conf"

	cat >"$MYCNF" <<EOF
# A private MariaDB for slurmdbd; written by scripts/slurm/cluster.sh.
[client]
socket=$DB/mysqld.sock
[mysqld]
user=mysql
datadir=$DB/data
socket=$DB/mysqld.sock
pid-file=$DB/mysqld.pid
log-error=$DB/mariadb.log
port=$DB_PORT
bind-address=127.0.0.1
skip-name-resolve
# slurmdbd warns below these (and 256M is not enough for it).
innodb_buffer_pool_size=1G
innodb_lock_wait_timeout=900
EOF
	chmod 0644 "$MYCNF"
	chown -R mysql:mysql "$DB"
}

munge_works() { probe munge -n | probe unmunge; }

start_munge() {
	if munge_works >/dev/null 2>&1; then
		log "munged already runs (not started here, so stop leaves it alone)"
		return 0
	fi
	# munged rejects a key that others can read, and refuses to run as root.
	local key=/etc/munge/munge.key
	if [[ ! -s $key ]]; then
		log "creating $key"
		dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
	fi
	chown munge:munge /etc/munge "$key"
	chmod 0700 /etc/munge
	chmod 0600 "$key"
	install -d -o munge -g munge -m 0755 /run/munge
	install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
	setsid setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
		</dev/null >"$LOGS/munged.out" 2>&1 &
	record_pid munged $!
	WATCH_PID=$! wait_for 15 "munge -n | unmunge" munge_works ||
		fail "munged did not start" "$LOGS/munged.out" /var/log/munge/munged.log
}

start_mariadb() {
	mariadb-install-db --defaults-file="$MYCNF" --user=mysql --skip-test-db \
		--auth-root-authentication-method=socket >"$LOGS/mariadb-install.log" 2>&1 ||
		fail "mariadb-install-db failed" "$LOGS/mariadb-install.log"
	# mariadbd does not daemonize: a new session keeps it out of the caller's process group
	# (and its terminal signals); its pid comes from its pid file.
	setsid /usr/sbin/mariadbd --defaults-file="$MYCNF" </dev/null >"$LOGS/mariadbd.out" 2>&1 &
	local launched=$!
	if ! WATCH_PID=$launched wait_for 60 "mariadb-admin ping" \
		probe mariadb-admin --defaults-file="$MYCNF" ping; then
		record_pid mariadbd "$launched"
		fail "mariadbd did not start" "$DB/mariadb.log" "$LOGS/mariadbd.out"
	fi
	local pid
	pid=$(cat "$DB/mysqld.pid" 2>/dev/null || echo "$launched")
	record_pid mariadbd "$pid"
	# On stdin, so that the password never shows in the process list.
	mariadb --defaults-file="$MYCNF" -uroot <<EOF || fail "could not create the slurm database user" "$DB/mariadb.log"
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$1';
GRANT ALL PRIVILEGES ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
}

# start_slurm_daemon NAME READY_DESCRIPTION READY_COMMAND... -- DAEMON_ARGS...
start_slurm_daemon() {
	local name=$1 what=$2
	shift 2
	local ready=()
	while [[ $1 != -- ]]; do
		ready+=("$1")
		shift
	done
	shift
	setsid "/usr/sbin/$name" -D "$@" </dev/null >"$LOGS/$name.out" 2>&1 &
	record_pid "$name" $!
	WATCH_PID=$! wait_for 60 "$what" "${ready[@]}" ||
		fail "$name did not start" "$LOGS/$name.log" "$LOGS/$name.out"
}

# Print the error with the daemon logs, stop what this start already ran, exit 1.
fail() {
	local message=$1
	shift
	echo "cluster.sh: error: $message" >&2
	show_logs "$@"
	log "stopping the daemons started so far"
	stop_daemons || true
	exit 1
}

ctld_up() { probe scontrol ping | grep -q "is UP"; }
node_idle() { [[ $(probe sinfo -h -n localhost -o %t) == idle ]]; }
cluster_registered() { probe sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER_NAME"; }

cmd_start() {
	need_root
	set_paths "${1:-}"
	local tool
	for tool in munged mariadbd slurmdbd slurmctld slurmd sbatch sacct; do
		command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] ||
			die "$tool is not installed: run 'bash $0 install' first"
	done
	if [[ -f $BASE/pids ]]; then
		log "stopping the cluster that $BASE/pids records"
		cmd_stop "$BASE"
	fi
	local port
	for port in "$DB_PORT" "$SLURMCTLD_PORT" "$SLURMD_PORT" "$SLURMDBD_PORT"; do
		! port_busy "$port" ||
			die "port $port on 127.0.0.1 is in use: another SLURM or database runs here (stop it, or use its cluster)"
	done
	local started=$SECONDS
	rm -rf "$BASE"
	mkdir -p "$BASE"
	chmod 0755 "$BASE"
	: >"$BASE/pids"
	local password
	password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	write_configs "$password"
	# Checked before anything starts: the database runs as mysql, under BASE_DIR.
	setpriv --reuid=mysql --regid=mysql --clear-groups test -w "$DB" ||
		die "the mysql user cannot write $DB: is a parent of $BASE closed to others (mode 0700)?"

	# Order matters: slurmdbd needs munge and the database; slurmctld registers the cluster in
	# slurmdbd; slurmd registers with slurmctld.
	start_munge
	start_mariadb "$password"
	start_slurm_daemon slurmdbd "sacctmgr to answer" probe sacctmgr -n list cluster --
	start_slurm_daemon slurmctld "scontrol ping: UP" ctld_up --
	start_slurm_daemon slurmd "node localhost idle" node_idle -- -N localhost
	if ! node_idle; then
		sinfo -R >&2 || true
		fail "node localhost is not idle" "$LOGS/slurmctld.log" "$LOGS/slurmd.log"
	fi
	wait_for 30 "cluster $CLUSTER_NAME in slurmdbd" cluster_registered ||
		fail "slurmctld did not register the cluster" "$LOGS/slurmctld.log" "$LOGS/slurmdbd.log"
	sacct -n -X >/dev/null || fail "sacct does not answer" "$LOGS/slurmdbd.log"

	echo "export SLURM_CONF=$SLURM_CONF" >"$BASE/env"
	log "cluster up in $((SECONDS - started)) s: $(sinfo -h -o '%P %D node, %c CPUs, %m MB')"
	cat "$BASE/env"
}

# ---------------------------------------------------------------------------- stop

# SIGTERM the recorded daemons in reverse start order, SIGKILL what survives the grace time.
stop_daemons() {
	[[ -f $BASE/pids ]] || return 0
	local -a names=() pids=()
	local name pid i
	while read -r name pid; do
		[[ -n $name && -n $pid ]] || continue
		names+=("$name")
		pids+=("$pid")
	done <"$BASE/pids"
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		if pid_is "${pids[i]}" "${names[i]}"; then
			kill -TERM "${pids[i]}" 2>/dev/null || true
			# wait for each before the next: slurmd deregisters with slurmctld, slurmdbd
			# flushes to the database
			local deadline=$((SECONDS + STOP_GRACE_S))
			while pid_is "${pids[i]}" "${names[i]}" && ((SECONDS < deadline)); do
				sleep 0.1
			done
			if pid_is "${pids[i]}" "${names[i]}"; then
				log "${names[i]} (pid ${pids[i]}) ignored SIGTERM for ${STOP_GRACE_S} s: SIGKILL"
				kill -KILL "${pids[i]}" 2>/dev/null || true
			fi
		fi
	done
	local left=0
	for ((i = 0; i < ${#pids[@]}; i++)); do
		for _ in {1..50}; do
			pid_is "${pids[i]}" "${names[i]}" || break
			sleep 0.1
		done
		if pid_is "${pids[i]}" "${names[i]}"; then
			log "${names[i]} (pid ${pids[i]}) is still running"
			left=1
		fi
	done
	rm -f "$BASE/pids"
	return "$left"
}

cancel_jobs() {
	ctld_up >/dev/null 2>&1 || return 0
	local jobs
	jobs=$(probe squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
	[[ -n ${jobs// /} ]] || return 0
	log "cancelling jobs $jobs"
	# shellcheck disable=SC2086  # one argument per job id
	probe scancel $jobs 2>/dev/null || true
	local deadline=$((SECONDS + 60))
	while [[ -n $(probe squeue -h -o %A 2>/dev/null) ]]; do
		if ((SECONDS >= deadline)); then
			log "jobs still in the queue after 60 s:"
			squeue >&2 || true
			return 1
		fi
		sleep 0.2
	done
}

cmd_stop() {
	need_root
	set_paths "${1:-}"
	if [[ ! -f $BASE/pids ]]; then
		log "no cluster recorded in $BASE"
		return 0
	fi
	local started=$SECONDS rc=0
	# No job may outlive its slurmd: an orphaned slurmstepd would keep running the job.
	cancel_jobs || rc=1
	stop_daemons || rc=1
	log "cluster stopped in $((SECONDS - started)) s (logs kept in $LOGS)"
	return "$rc"
}

# ---------------------------------------------------------------------------- status

cmd_status() {
	set_paths "${1:-}"
	if [[ ! -f $BASE/pids ]]; then
		echo "no cluster recorded in $BASE"
		return 1
	fi
	local name pid rc=0
	while read -r name pid; do
		if pid_is "$pid" "$name"; then
			echo "$name: running (pid $pid)"
		else
			echo "$name: NOT running (pid $pid)"
			rc=1
		fi
	done <"$BASE/pids"
	echo "SLURM_CONF=$SLURM_CONF"
	if ctld_up >/dev/null 2>&1; then
		sinfo -N -o "%N %t %c %m" || rc=1
		squeue || rc=1
	else
		echo "slurmctld does not answer"
		rc=1
	fi
	return "$rc"
}

case ${1:-} in
install) cmd_install ;;
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
status) cmd_status "${2:-}" ;;
*)
	echo "usage: $0 install | start [BASE_DIR] | stop [BASE_DIR] | status [BASE_DIR]" >&2
	exit 2
	;;
esac
