#!/usr/bin/env bash
# The local metricfold stack without Docker: Apache Kafka 4.3.1 (KRaft, one combined broker+controller node, or
# with METRICFOLD_KAFKA_NODES=3 a cluster of three) and Redis (Debian's redis-server, AOF everysec), on 127.0.0.1.
#
#   deploy/local/stack.sh up        start what is not running, wait until both answer   (idempotent)
#   deploy/local/stack.sh down      stop what we started                                 (idempotent)
#   deploy/local/stack.sh status    say what runs where; exit 1 if something is down
#   deploy/local/stack.sh env [consumer|reader|admin]   print the METRICFOLD_* exports that point clients at this
#                                   stack, logged in as that Redis user (default consumer; `up` writes them to
#                                   <stack dir>/env); in secure mode the roles are trainer|consumer|replay|admin|reader
#   deploy/local/stack.sh mode      print the stack directory's mode: plain or secure
#   deploy/local/stack.sh restart-redis | restart-kafka | stop-redis | stop-kafka | start-redis | start-kafka
#   deploy/local/stack.sh kill-redis | kill-kafka      kill -9 (for fault tests; kill-kafka: every Kafka node)
#   deploy/local/stack.sh start-kafka-node N | stop-kafka-node N | kill-kafka-node N | restart-kafka-node N
#                                   one node of a Kafka cluster (N from 1; kill: kill -9), for fault tests
#   deploy/local/stack.sh start-redis-node N | stop-redis-node N | kill-redis-node N    one node of a Redis Cluster
#
# Redis has three ACL users (deploy/redis/README.md): default (the administrator), metricfold-consumer and
# metricfold-reader, written by `python -m consumer.acl` for METRICFOLD_NAMESPACE each time Redis starts. Their
# random passwords are in <stack dir>/secrets/redis-<user>.password (mode 0600, made once per stack directory).
#
# Settings (environment):
#   METRICFOLD_KAFKA_PORT (19092)  METRICFOLD_KAFKA_CONTROLLER_PORT (19093)  METRICFOLD_REDIS_PORT (16379)
#   METRICFOLD_NAMESPACE  the key prefix the consumer and reader users may use (default: mf)
#   METRICFOLD_STACK_DIR  data, logs, pid files and passwords (default: <repo>/.stack)
#   METRICFOLD_CACHE_DIR  the Kafka jars from Maven Central (default: ~/.cache/metricfold), reused when present
#   METRICFOLD_KAFKA_HEAP (512m; 384m per node in a cluster)
#   METRICFOLD_KAFKA_JVM_OPTS (G1; in a cluster: serial GC, one core, C1 only, as its nodes share this host)
#   METRICFOLD_PYTHON  the Python with kafka-python and redis (default: <repo>/.venv)
#   METRICFOLD_KAFKA_NODES (1)  Kafka nodes, 1 to 5, each a combined broker+controller (a controller quorum of all).
#     Node N (from 1) listens on METRICFOLD_KAFKA_PORT + 2(N-1) and its controller on
#     METRICFOLD_KAFKA_CONTROLLER_PORT + 2(N-1) (19092/19093, 19094/19095, 19096/19097); its data, config and pid
#     file are in <stack dir>/kafka/nodeN, its logs in <stack dir>/logs/kafka-nodeN. The cluster's defaults for new
#     topics: replication factor min(3, nodes), min.insync.replicas 2 from 3 nodes on (else 1), no unclean leader
#     election. The stack directory remembers its node count (<stack dir>/kafka/nodes): later commands without
#     the variable use it; METRICFOLD_KAFKA_NODES=1 goes back to one node (`down` first).
#   METRICFOLD_REDIS_MODE (standalone)  cluster: a Redis Cluster of 6 nodes, 3 masters + 3 replicas, on
#     METRICFOLD_REDIS_PORT .. +5 (bus ports +10000; deploy/local/redis-cluster.sh); the stack directory remembers it
#     (<stack dir>/redis-mode). metricfold finds the cluster from the one URL in .stack/env (README, "Redis Cluster").
#     METRICFOLD_REDIS_CLUSTER_NODE_TIMEOUT (2000 ms) how soon a replica takes over from a master that stopped.
#   METRICFOLD_SECURE  1: the stack locked down (deploy/local/secure.sh: Kafka SASL_SSL with SCRAM users and ACLs per
#     role, Redis TLS only, a private CA; one Kafka node), its data, logs and certificates in <stack dir>/secure; 0:
#     the plain stack. The stack directory remembers its mode (<stack dir>/mode): later commands without the variable
#     use it. One mode runs at a time (`down` first to change it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
KAFKA_VERSION=4.3.1
KAFKA_PORT="${METRICFOLD_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${METRICFOLD_KAFKA_CONTROLLER_PORT:-19093}"
REDIS_PORT="${METRICFOLD_REDIS_PORT:-16379}"
STACK_DIR="${METRICFOLD_STACK_DIR:-$repo/.stack}"
CACHE_DIR="${METRICFOLD_CACHE_DIR:-$HOME/.cache/metricfold}"
case "${METRICFOLD_SECURE:-}" in
  1|yes|true|on) SECURE=1 ;;
  0|no|false|off) SECURE=0 ;;
  "") if [[ "$(cat "$STACK_DIR/mode" 2>/dev/null)" == secure ]]; then SECURE=1; else SECURE=0; fi ;;
  *) printf '[stack] error: METRICFOLD_SECURE=%s: say 1 (locked down) or 0 (plain)\n' "$METRICFOLD_SECURE" >&2; exit 1 ;;
esac
if (( SECURE )); then
  KAFKA_NODES="${METRICFOLD_KAFKA_NODES:-1}"
  [[ "$KAFKA_NODES" == 1 ]] || { printf '[stack] error: METRICFOLD_SECURE=1 runs one Kafka node (a locked-down cluster is not built yet); unset METRICFOLD_KAFKA_NODES\n' >&2; exit 1; }
else
  KAFKA_NODES="${METRICFOLD_KAFKA_NODES:-$(cat "$STACK_DIR/kafka/nodes" 2>/dev/null || echo 1)}"
fi
case "${METRICFOLD_REDIS_MODE:-$(cat "$STACK_DIR/redis-mode" 2>/dev/null || echo standalone)}" in
  standalone) REDIS_CLUSTER=0 ;;
  cluster) REDIS_CLUSTER=1 ;;
  *) printf '[stack] error: METRICFOLD_REDIS_MODE=%s: say standalone or cluster\n' "$METRICFOLD_REDIS_MODE" >&2; exit 1 ;;
esac
if (( SECURE && REDIS_CLUSTER )); then
  printf '[stack] error: METRICFOLD_SECURE=1 runs a standalone Redis (a locked-down Redis Cluster is not built yet); unset METRICFOLD_REDIS_MODE\n' >&2; exit 1
fi
[[ "$KAFKA_NODES" =~ ^[1-5]$ ]] || { printf '[stack] error: METRICFOLD_KAFKA_NODES=%s: say how many Kafka nodes, 1 to 5\n' "$KAFKA_NODES" >&2; exit 1; }
if (( KAFKA_NODES == 1 )); then KAFKA_HEAP="${METRICFOLD_KAFKA_HEAP:-512m}"; else KAFKA_HEAP="${METRICFOLD_KAFKA_HEAP:-384m}"; fi
# Several brokers on one host: each JVM sized for one core, C1 only, serial GC. A node's start then costs ~5 s of CPU
# instead of ~25 (what the cluster tests pay at every restart); under bench/load.py no clear difference either way
# (docs/SCALING.md). One node keeps the JVM's defaults.
if (( KAFKA_NODES == 1 )); then KAFKA_JVM_OPTS="${METRICFOLD_KAFKA_JVM_OPTS:--XX:+UseG1GC}"
else KAFKA_JVM_OPTS="${METRICFOLD_KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:ActiveProcessorCount=1 -XX:TieredStopAtLevel=1}"; fi
PYTHON="${METRICFOLD_PYTHON:-$repo/.venv/bin/python}"
JARS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
# the plain stack's data and logs; the secure stack's are in <stack dir>/secure
PLAIN_KAFKA_DIR="$STACK_DIR/kafka"
PLAIN_REDIS_DIR="$STACK_DIR/redis"
SECURE_KAFKA_DIR="$STACK_DIR/secure/kafka"
SECURE_REDIS_DIR="$STACK_DIR/secure/redis"
if (( SECURE )); then
  KAFKA_DIR="$SECURE_KAFKA_DIR"; REDIS_DIR="$SECURE_REDIS_DIR"; LOG_DIR="$STACK_DIR/secure/logs"
else
  KAFKA_DIR="$PLAIN_KAFKA_DIR"; REDIS_DIR="$PLAIN_REDIS_DIR"; LOG_DIR="$STACK_DIR/logs"
fi
SECRETS_DIR="$STACK_DIR/secrets"
ACL_FILE="$REDIS_DIR/users.acl"
NAMESPACE="${METRICFOLD_NAMESPACE:-mf}"
# A record must fit the largest tensor event (schemas.limits: 16 MiB tensor + 8 MiB of headroom).
MAX_RECORD_BYTES=25165824

say() { printf '[stack] %s\n' "$*"; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

for port in "$KAFKA_PORT" "$CONTROLLER_PORT" "$REDIS_PORT"; do
  [[ "$port" =~ ^[0-9]+$ ]] && (( port > 0 && port < 65536 )) || die "port '$port' is not a number from 1 to 65535"
done
# Kafka node N (from 1): broker port KAFKA_PORT + 2(N-1), controller port CONTROLLER_PORT + 2(N-1)
node_port() { echo $(( KAFKA_PORT + 2 * ($1 - 1) )); }
node_controller_port() { echo $(( CONTROLLER_PORT + 2 * ($1 - 1) )); }
if (( KAFKA_NODES > 1 )); then
  (( $(node_port "$KAFKA_NODES") < 65536 && $(node_controller_port "$KAFKA_NODES") < 65536 )) \
    || die "the ports of $KAFKA_NODES Kafka nodes from $KAFKA_PORT/$CONTROLLER_PORT go past 65535; choose lower ones"
  taken=" $REDIS_PORT "
  for n in $(seq 1 "$KAFKA_NODES"); do
    for port in "$(node_port "$n")" "$(node_controller_port "$n")"; do
      [[ "$taken" != *" $port "* ]] || die "port $port is wanted twice by $KAFKA_NODES Kafka nodes (broker ports are METRICFOLD_KAFKA_PORT + 0, 2, 4, ..., controller ports METRICFOLD_KAFKA_CONTROLLER_PORT + 0, 2, 4, ...; Redis METRICFOLD_REDIS_PORT): choose ports further apart"
      taken+="$port "
    done
  done
fi

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_port_free() {  # $1 port, $2 what for
  if port_busy "$1"; then
    die "port $1 (for $2) is already used by another program; choose another one, e.g. METRICFOLD_${3}=$(( $1 + 100 ))"
  fi
}

# The pid files of the other mode's Kafka and Redis in this stack directory (plain <-> secure)
other_mode_pidfiles() {
  local f
  if (( SECURE )); then
    for f in "$PLAIN_KAFKA_DIR/kafka.pid" "$PLAIN_KAFKA_DIR"/node*/kafka.pid "$PLAIN_REDIS_DIR/redis.pid"; do [[ -f "$f" ]] && echo "$f"; done
  else
    for f in "$SECURE_KAFKA_DIR/kafka.pid" "$SECURE_REDIS_DIR/redis.pid"; do [[ -f "$f" ]] && echo "$f"; done
  fi
  return 0
}

check_other_mode() {  # one mode at a time: they share the ports
  local f
  while read -r f; do
    [[ -n "$f" ]] && pid_alive "$f" || continue
    if (( SECURE )); then
      die "the plain stack runs from $STACK_DIR ($f); stop it first (make down), then METRICFOLD_SECURE=1 make up"
    else
      die "the locked-down stack (METRICFOLD_SECURE=1) runs from $STACK_DIR ($f); stop it first (make down), or use it with METRICFOLD_SECURE=1"
    fi
  done < <(other_mode_pidfiles)
}

stop_other_mode() {  # `down` stops whatever runs from this stack directory, in either mode
  local f
  while read -r f; do
    [[ -n "$f" ]] || continue
    if [[ "$f" == */redis.pid ]]; then stop_pidfile "$f" Redis TERM; else stop_pidfile "$f" Kafka TERM; fi
  done < <(other_mode_pidfiles)
}

# ---------------------------------------------------------------- Kafka
fetch_kafka() {
  [[ -f "$JARS/.complete" ]] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars: apt-get install -y maven"
  command -v java >/dev/null || die "Java 17+ is needed to run Kafka: apt-get install -y openjdk-17-jre-headless"
  say "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $JARS (once; cached)"
  mkdir -p "$JARS"
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$JARS" \
    || die "mvn could not fetch the Kafka jars (see the output above)"
  touch "$JARS/.complete"
}

kafka_java() { java -Xms128m -Xmx"$KAFKA_HEAP" -cp "$JARS/*" "$@"; }

# Where node $1 keeps its config, data and pid file, and its logs: one node as ever (kafka/, logs/), a cluster's
# nodes each in their own directories (kafka/nodeN, logs/kafka-nodeN)
node_dir() { if (( KAFKA_NODES == 1 )); then echo "$KAFKA_DIR"; else echo "$KAFKA_DIR/node$1"; fi; }
node_log_dir() { if (( KAFKA_NODES == 1 )); then echo "$LOG_DIR"; else echo "$LOG_DIR/kafka-node$1"; fi; }
node_name() { if (( KAFKA_NODES == 1 )); then echo "Kafka"; else echo "Kafka node $1"; fi; }
kafka_bootstrap() {  # every node's broker address, comma-separated (METRICFOLD_KAFKA)
  local n out=""
  for n in $(seq 1 "$KAFKA_NODES"); do out+="${out:+,}127.0.0.1:$(node_port "$n")"; done
  echo "$out"
}

kafka_common_config() {  # $1 the node's directory, $2 the internal topics' replication factor, $3 their min ISR
  cat <<EOF
log.dirs=$1/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=$2
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=$2
transaction.state.log.min.isr=$3
share.coordinator.state.topic.replication.factor=$2
share.coordinator.state.topic.min.isr=$3
group.initial.rebalance.delay.ms=0
message.max.bytes=$MAX_RECORD_BYTES
replica.fetch.max.bytes=$MAX_RECORD_BYTES
num.network.threads=2
num.io.threads=4
EOF
}

# Every Kafka pid file of this stack directory, whatever the node count it was started with
all_kafka_pidfiles() { local f; for f in "$KAFKA_DIR/kafka.pid" "$KAFKA_DIR"/node*/kafka.pid; do [[ -f "$f" ]] && echo "$f"; done; return 0; }

write_kafka_config() {  # $1: the node number
  local n="$1" dir voters="" i rf isr
  dir="$(node_dir "$n")"
  mkdir -p "$dir/data" "$(node_log_dir "$n")"
  for i in $(seq 1 "$KAFKA_NODES"); do voters+="${voters:+,}$i@127.0.0.1:$(node_controller_port "$i")"; done
  rf=$(( KAFKA_NODES < 3 ? KAFKA_NODES : 3 ))  # of the internal topics and, by default, of new topics
  isr=$(( rf >= 3 ? 2 : 1 ))
  {
    if (( KAFKA_NODES == 1 )); then
      echo "# Written by deploy/local/stack.sh: one KRaft node, broker and controller, loopback only."
    else
      echo "# Written by deploy/local/stack.sh: KRaft node $n of $KAFKA_NODES, broker and controller (a quorum of all $KAFKA_NODES), loopback only."
    fi
    cat <<EOF
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(node_port "$n"),CONTROLLER://127.0.0.1:$(node_controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(node_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
$(kafka_common_config "$dir" "$rf" "$isr")
EOF
    if (( KAFKA_NODES > 1 )); then
      cat <<EOF
default.replication.factor=$rf
min.insync.replicas=$isr
unclean.leader.election.enable=false
EOF
    fi
  } > "$dir/server.properties"
}

start_kafka_node() {  # $1: the node number
  local n="$1" dir logs name cluster_id
  dir="$(node_dir "$n")"; logs="$(node_log_dir "$n")"; name="$(node_name "$n")"
  if pid_alive "$dir/kafka.pid"; then say "$name already running (pid $(cat "$dir/kafka.pid")) on 127.0.0.1:$(node_port "$n")"; return 0; fi
  check_port_free "$(node_port "$n")" "$name" KAFKA_PORT
  check_port_free "$(node_controller_port "$n")" "the controller of $name" KAFKA_CONTROLLER_PORT
  fetch_kafka
  if (( SECURE )); then secure_tls; secure_secrets; secure_write_kafka_config "$n"; else write_kafka_config "$n"; fi
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    if (( KAFKA_NODES == 1 )); then
      cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    else  # the nodes of a cluster share one cluster id, made once
      [[ -s "$KAFKA_DIR/cluster.id" ]] || kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 > "$KAFKA_DIR/cluster.id"
      cluster_id="$(cat "$KAFKA_DIR/cluster.id")"
    fi
    if (( SECURE )); then
      secure_format_kafka "$dir" "$logs" "$cluster_id"
    else
      say "formatting Kafka storage in $dir/data (cluster id $cluster_id)"
      kafka_java -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$logs" \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" >"$logs/kafka-format.log" 2>&1 \
        || { tail -n 20 "$logs/kafka-format.log" >&2; die "could not format Kafka storage"; }
    fi
  fi
  say "starting $name ($KAFKA_VERSION) on 127.0.0.1:$(node_port "$n")$( (( SECURE )) && echo ", SASL_SSL only") (logs: $logs/server.log)"
  nohup java -Xms128m -Xmx"$KAFKA_HEAP" $KAFKA_JVM_OPTS -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$logs" \
    -cp "$JARS/*" kafka.Kafka "$dir/server.properties" >"$logs/kafka.out" 2>&1 </dev/null &
  echo $! > "$dir/kafka.pid"
}

start_kafka() {
  local f n
  check_other_mode
  # a Kafka of this stack directory started with another node count holds the ports: say so rather than clash
  while read -r f; do
    [[ -n "$f" ]] && pid_alive "$f" || continue
    [[ "$f" == "$(node_dir 1)/kafka.pid" || ( "$KAFKA_NODES" != 1 && "$f" == "$KAFKA_DIR"/node*/kafka.pid ) ]] && continue
    die "a Kafka with another node count runs from $STACK_DIR ($f); stop it first: bash $here/stack.sh down"
  done < <(all_kafka_pidfiles)
  mkdir -p "$KAFKA_DIR"
  echo "$KAFKA_NODES" > "$KAFKA_DIR/nodes"
  for n in $(seq 1 "$KAFKA_NODES"); do start_kafka_node "$n"; done
}

node_arg() {  # $1: the node number given on the command line
  [[ "${1:-}" =~ ^[1-9]$ ]] && (( $1 <= KAFKA_NODES )) \
    || die "say which Kafka node, 1 to $KAFKA_NODES (METRICFOLD_KAFKA_NODES=$KAFKA_NODES), e.g. kill-kafka-node 2"
  echo "$1"
}

# Stop every Kafka node of this stack directory (whatever node count it was started with): the signal goes to
# all first (a node that stops alone after the others left waits for a controller quorum that is gone), then
# each is waited for, and killed after 30 s.
stop_kafka() {  # $1 signal
  local f files=()
  while read -r f; do [[ -n "$f" ]] && files+=("$f"); done < <(all_kafka_pidfiles)
  stop_pidfiles "$1" ${files[@]+"${files[@]}"}
}

# What a pid file of this stack directory runs: Kafka, Redis, "Kafka node N" or "Redis node N"
pidfile_name() {
  local service=Redis dir="${1%/*}"
  [[ "$1" == */kafka.pid ]] && service=Kafka
  if [[ "${dir##*/}" == node* ]]; then echo "$service node ${dir##*/node}"; else echo "$service"; fi
}

# $1 signal, then pid files: the signal goes to every process at once (a cluster's nodes stop together, each in
# its own time: a Redis master waits up to a second for its replica's acknowledgement), then each gets 30 s to
# exit before kill -9. A pid file whose process is gone is removed without a word.
stop_pidfiles() {
  local sig="$1" f pid i alive=() pids=()
  shift
  for f in "$@"; do  # the pids first: a Redis removes its own pid file as it exits
    if pid_alive "$f"; then alive+=("$f"); pids+=("$(cat "$f")"); else rm -f "$f"; fi
  done
  for pid in ${pids[@]+"${pids[@]}"}; do kill "-$sig" "$pid" 2>/dev/null || true; done
  for i in "${!alive[@]}"; do
    f="${alive[$i]}"; pid="${pids[$i]}"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then say "$(pidfile_name "$f") did not stop in 30 s; killing it"; kill -9 "$pid" 2>/dev/null || true; sleep 0.5; fi
    rm -f "$f"
    say "$(pidfile_name "$f") stopped"
  done
}

stop_pidfile() {  # $1 pidfile, $2 name, $3 signal
  local pidfile="$1" pid
  pid_alive "$pidfile" || { rm -f "$pidfile"; return 0; }
  pid="$(cat "$pidfile")"
  kill "-${3:-TERM}" "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then say "$2 did not stop in 30 s; killing it"; kill -9 "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$pidfile"
  say "$2 stopped"
}

# ---------------------------------------------------------------- Redis
redis_bin() {
  if command -v redis-server >/dev/null; then return 0; fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "installing redis-server with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >"$STACK_DIR/apt.log" 2>&1 \
      || { tail -n 20 "$STACK_DIR/apt.log" >&2; die "apt-get could not install redis-server"; }
  else
    die "redis-server is not installed: run 'sudo apt-get install -y redis-server' (or use deploy/docker-compose.yml)"
  fi
}

# The ACL users for $NAMESPACE, with the stack's passwords (created once, mode 0600): consumer/acl.py
write_acl() {
  [[ -x "$PYTHON" ]] || die "no Python at $PYTHON to write the Redis ACL users (run 'make venv' or set METRICFOLD_PYTHON)"
  (cd "$repo" && "$PYTHON" -m consumer.acl --namespace "$NAMESPACE" --secrets "$SECRETS_DIR" --output "$ACL_FILE") \
    || die "could not write the Redis ACL users (see the error above)"
}

redis_common_config() {  # the lines of redis.conf all modes share (secure.sh puts its TLS lines before them);
  # $1 the data directory (default: the Redis directory), $2 the log file (default: <logs>/redis.log)
  cat <<EOF
protected-mode yes
daemonize yes
pidfile ${1:-$REDIS_DIR}/redis.pid
logfile ${2:-$LOG_DIR/redis.log}
dir ${1:-$REDIS_DIR}
appendonly yes
appendfsync everysec
save ""
aclfile $ACL_FILE
EOF
}

# True when the running Redis was started with the generated ACL users (an older stack.sh started it without)
acl_loaded() {
  local conf="$REDIS_DIR/redis.conf"
  (( REDIS_CLUSTER )) && conf="$REDIS_DIR/node1/redis.conf"
  grep -qxF "aclfile $ACL_FILE" "$conf" 2>/dev/null
}

start_redis() {
  if (( REDIS_CLUSTER )); then start_redis_cluster; return 0; fi
  local f
  for f in "$REDIS_DIR"/node*/redis.pid; do
    pid_alive "$f" && die "a Redis Cluster runs from $STACK_DIR ($f); stop it first (make down), or use it with METRICFOLD_REDIS_MODE=cluster"
  done
  if pid_alive "$REDIS_DIR/redis.pid"; then
    say "Redis already running (pid $(cat "$REDIS_DIR/redis.pid")) on 127.0.0.1:$REDIS_PORT"
    acl_loaded || say "warning: this Redis was started without the ACL users (its default user needs no password): run 'bash $here/stack.sh restart-redis'"
    return 0
  fi
  check_other_mode
  check_port_free "$REDIS_PORT" "Redis" REDIS_PORT
  mkdir -p "$STACK_DIR" "$REDIS_DIR" "$LOG_DIR"
  redis_bin
  write_acl
  if (( SECURE )); then
    secure_tls
    secure_write_redis_config
    say "starting Redis on 127.0.0.1:$REDIS_PORT, TLS only (data: $REDIS_DIR, log: $LOG_DIR/redis.log)"
    redis-server "$REDIS_DIR/redis.conf" || { tail -n 20 "$LOG_DIR/redis.log" >&2 || true; die "redis-server did not start"; }
    for _ in $(seq 1 50); do [[ -f "$REDIS_DIR/redis.pid" ]] && break; sleep 0.1; done
    return 0
  fi
  cat > "$REDIS_DIR/redis.conf" <<EOF
# Written by deploy/local/stack.sh: loopback only, AOF with fsync every second, the ACL users of namespace
# $NAMESPACE (the default user has a password: $SECRETS_DIR/redis-default.password).
bind 127.0.0.1
port $REDIS_PORT
$(redis_common_config)
EOF
  say "starting Redis on 127.0.0.1:$REDIS_PORT (data: $REDIS_DIR, log: $LOG_DIR/redis.log)"
  redis-server "$REDIS_DIR/redis.conf" || { tail -n 20 "$LOG_DIR/redis.log" >&2 || true; die "redis-server did not start"; }
  for _ in $(seq 1 50); do [[ -f "$REDIS_DIR/redis.pid" ]] && break; sleep 0.1; done
}

wait_ready() {
  [[ -x "$PYTHON" ]] || die "no Python at $PYTHON to check the stack (run 'make venv' or set METRICFOLD_PYTHON)"
  if (( SECURE )); then secure_wait_ready "$@"; return 0; fi
  if (( REDIS_CLUSTER )) && [[ "$*" != *"--only kafka"* ]]; then wait_redis_cluster; fi
  local auth=()
  [[ -f "$SECRETS_DIR/redis-default.password" ]] && auth=(--redis-password-file "$SECRETS_DIR/redis-default.password")
  # Kafka is ready when as many brokers as there are running nodes are in the cluster's metadata (asked of every
  # node, or with WAIT_BOOTSTRAP of that one: a node just started answers only once it is up)
  local n brokers=0
  for n in $(seq 1 "$KAFKA_NODES"); do pid_alive "$(node_dir "$n")/kafka.pid" && brokers=$(( brokers + 1 )); done
  (( brokers > 0 )) || brokers=1
  "$PYTHON" "$here/wait_ready.py" --kafka "${WAIT_BOOTSTRAP:-$(kafka_bootstrap)}" --brokers "$brokers" --timeout $(( 60 + 30 * KAFKA_NODES )) \
    --redis "redis://127.0.0.1:$REDIS_PORT/0" ${auth[@]+"${auth[@]}"} "$@" \
    || { for n in $(seq 1 "$KAFKA_NODES"); do
           echo "--- tail of $(node_log_dir "$n")/server.log" >&2; tail -n 30 "$(node_log_dir "$n")/server.log" >&2 2>/dev/null || true;
           echo "--- tail of $(node_log_dir "$n")/kafka.out" >&2; tail -n 10 "$(node_log_dir "$n")/kafka.out" >&2 2>/dev/null || true;
         done
         echo "--- tail of $LOG_DIR/redis.log" >&2; tail -n 10 "$LOG_DIR/redis.log" >&2 2>/dev/null || true;
         die "the stack did not come up"; }
}

print_env() {  # $1: the Redis user, consumer (default), reader or admin; the password stays in its file
  local user namespace
  if (( SECURE )); then secure_print_env "${1:-consumer}"; return 0; fi
  case "${1:-consumer}" in
    consumer) user=metricfold-consumer ;;
    reader) user=metricfold-reader ;;
    admin) user=default ;;
    *) die "unknown Redis user '$1' (try: consumer, reader, admin)" ;;
  esac
  cat <<EOF
export METRICFOLD_KAFKA=$(kafka_bootstrap)
export METRICFOLD_REDIS=redis://127.0.0.1:$REDIS_PORT/0
EOF
  if acl_loaded; then
    namespace="$(grep -o -m 1 '~[A-Za-z0-9_.-]*:\*' "$ACL_FILE" | sed 's/^~//; s/:\*$//')"
    cat <<EOF
export METRICFOLD_NAMESPACE=$namespace
export METRICFOLD_REDIS_USERNAME=$user
export METRICFOLD_REDIS_PASSWORD_FILE=$SECRETS_DIR/redis-$user.password
unset METRICFOLD_REDIS_PASSWORD
EOF
  else
    echo "# this Redis was started without the ACL users: bash $here/stack.sh restart-redis"
  fi
}

status() {
  local ok=0
  local n dir
  for n in $(seq 1 "$KAFKA_NODES"); do
    dir="$(node_dir "$n")"
    if pid_alive "$dir/kafka.pid"; then
      say "$(node_name "$n"): running, pid $(cat "$dir/kafka.pid"), 127.0.0.1:$(node_port "$n")$( (( KAFKA_NODES > 1 )) && echo " (controller 127.0.0.1:$(node_controller_port "$n"))")"
    else say "$(node_name "$n"): stopped"; ok=1; fi
  done
  if (( REDIS_CLUSTER )); then status_redis_cluster || ok=1
  elif pid_alive "$REDIS_DIR/redis.pid"; then say "Redis: running, pid $(cat "$REDIS_DIR/redis.pid"), 127.0.0.1:$REDIS_PORT"; else say "Redis: stopped"; ok=1; fi
  (( SECURE )) && say "locked down (METRICFOLD_SECURE=1): Kafka SASL_SSL (SCRAM-SHA-512, ACLs per role), Redis TLS only; certificates in $STACK_DIR/secure/tls"
  say "data and logs: $( (( SECURE )) && echo "$STACK_DIR/secure" || echo "$STACK_DIR")"
  return $ok
}

remember_mode() {
  if (( SECURE )); then echo secure; else echo plain; fi > "$STACK_DIR/mode"
  if (( REDIS_CLUSTER )); then echo cluster; else echo standalone; fi > "$STACK_DIR/redis-mode"
}

# Every Redis of this stack directory: the standalone server, or each node of a cluster (whichever mode started it)
stop_redis() {  # $1 signal
  local f files=()
  for f in "$REDIS_DIR/redis.pid" "$REDIS_DIR"/node*/redis.pid; do [[ -f "$f" ]] && files+=("$f"); done
  stop_pidfiles "$1" ${files[@]+"${files[@]}"}
}

# shellcheck source=deploy/local/secure.sh
(( SECURE )) && source "$here/secure.sh"
# shellcheck source=deploy/local/redis-cluster.sh
(( REDIS_CLUSTER )) && source "$here/redis-cluster.sh"
need_cluster() { (( REDIS_CLUSTER )) || die "'$1' is for a Redis Cluster (METRICFOLD_REDIS_MODE=cluster); this stack runs a standalone Redis"; }

cmd="${1:-}"
case "$cmd" in
  up) mkdir -p "$STACK_DIR"; check_other_mode; start_redis; start_kafka; wait_ready; remember_mode; print_env > "$STACK_DIR/env"
      say "up$( (( SECURE )) && echo " (locked down)"); clients: source $STACK_DIR/env$( (( SECURE )) && echo " (the consumer role; bash $here/stack.sh env trainer|consumer|replay|admin|reader for the others)")" ;;
  down) stop_kafka TERM; stop_redis TERM; stop_other_mode ;;
  mode) if (( SECURE )); then echo secure; else echo plain; fi ;;
  status) status ;;
  env) print_env "${2:-consumer}" ;;
  start-kafka) start_kafka; wait_ready --only kafka ;;
  start-redis) start_redis; wait_ready --only redis; remember_mode; print_env > "$STACK_DIR/env" ;;
  stop-kafka) stop_kafka TERM ;;
  stop-redis) stop_redis TERM ;;
  kill-kafka) stop_kafka KILL ;;
  kill-redis) stop_redis KILL ;;
  restart-kafka) stop_kafka TERM; start_kafka; wait_ready --only kafka ;;
  start-kafka-node) n="$(node_arg "${2:-}")"; start_kafka_node "$n"; WAIT_BOOTSTRAP="127.0.0.1:$(node_port "$n")" wait_ready --only kafka ;;
  stop-kafka-node) n="$(node_arg "${2:-}")"; stop_pidfile "$(node_dir "$n")/kafka.pid" "$(node_name "$n")" TERM ;;
  kill-kafka-node) n="$(node_arg "${2:-}")"; stop_pidfile "$(node_dir "$n")/kafka.pid" "$(node_name "$n")" KILL ;;
  restart-kafka-node) n="$(node_arg "${2:-}")"; stop_pidfile "$(node_dir "$n")/kafka.pid" "$(node_name "$n")" TERM
    start_kafka_node "$n"; WAIT_BOOTSTRAP="127.0.0.1:$(node_port "$n")" wait_ready --only kafka ;;
  restart-redis) stop_redis TERM; start_redis; wait_ready --only redis; remember_mode; print_env > "$STACK_DIR/env" ;;
  start-redis-node) need_cluster "$cmd"; n="$(redis_node_arg "${2:-}")"; start_redis_node "$n"; wait_redis_cluster ;;
  stop-redis-node) need_cluster "$cmd"; n="$(redis_node_arg "${2:-}")"; stop_pidfile "$(redis_node_dir "$n")/redis.pid" "$(redis_node_name "$n")" TERM ;;
  kill-redis-node) need_cluster "$cmd"; n="$(redis_node_arg "${2:-}")"; stop_pidfile "$(redis_node_dir "$n")/redis.pid" "$(redis_node_name "$n")" KILL ;;
  fetch) fetch_kafka ;;
  -h|--help|help|"") sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (try: up, down, status, env, --help)" ;;
esac
