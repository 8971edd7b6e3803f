#!/usr/bin/env bash
# The local metricfold stack without Docker: Apache Kafka 4.3.1 (KRaft, one combined broker+controller node)
# and Redis (Debian's redis-server, AOF everysec), both on 127.0.0.1.
#
#   deploy/local/stack.sh up        start what is not running, wait until both answer   (idempotent)
#   deploy/local/stack.sh down      stop what we started                                 (idempotent)
#   deploy/local/stack.sh status    say what runs where; exit 1 if something is down
#   deploy/local/stack.sh env [consumer|reader|admin]   print the METRICFOLD_* exports that point clients at this
#                                   stack, logged in as that Redis user (default consumer; `up` writes them to
#                                   <stack dir>/env)
#   deploy/local/stack.sh restart-redis | restart-kafka | stop-redis | stop-kafka | start-redis | start-kafka
#   deploy/local/stack.sh kill-redis | kill-kafka      kill -9 (for fault tests)
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
#   METRICFOLD_KAFKA_HEAP (512m)   METRICFOLD_PYTHON  the Python with kafka-python and redis (default: <repo>/.venv)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
KAFKA_VERSION=4.3.1
KAFKA_PORT="${METRICFOLD_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${METRICFOLD_KAFKA_CONTROLLER_PORT:-19093}"
REDIS_PORT="${METRICFOLD_REDIS_PORT:-16379}"
STACK_DIR="${METRICFOLD_STACK_DIR:-$repo/.stack}"
CACHE_DIR="${METRICFOLD_CACHE_DIR:-$HOME/.cache/metricfold}"
KAFKA_HEAP="${METRICFOLD_KAFKA_HEAP:-512m}"
PYTHON="${METRICFOLD_PYTHON:-$repo/.venv/bin/python}"
JARS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KAFKA_DIR="$STACK_DIR/kafka"
REDIS_DIR="$STACK_DIR/redis"
LOG_DIR="$STACK_DIR/logs"
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

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_port_free() {  # $1 port, $2 what for
  if port_busy "$1"; then
    die "port $1 (for $2) is already used by another program; choose another one, e.g. METRICFOLD_${3}=$(( $1 + 100 ))"
  fi
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

write_kafka_config() {
  mkdir -p "$KAFKA_DIR/data" "$LOG_DIR"
  cat > "$KAFKA_DIR/server.properties" <<EOF
# Written by deploy/local/stack.sh: one KRaft node, broker and controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
message.max.bytes=$MAX_RECORD_BYTES
replica.fetch.max.bytes=$MAX_RECORD_BYTES
num.network.threads=2
num.io.threads=4
EOF
}

start_kafka() {
  if pid_alive "$KAFKA_DIR/kafka.pid"; then say "Kafka already running (pid $(cat "$KAFKA_DIR/kafka.pid")) on 127.0.0.1:$KAFKA_PORT"; return 0; fi
  check_port_free "$KAFKA_PORT" "Kafka" KAFKA_PORT
  check_port_free "$CONTROLLER_PORT" "the Kafka controller" KAFKA_CONTROLLER_PORT
  fetch_kafka
  write_kafka_config
  if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
    local cluster_id
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    say "formatting Kafka storage in $KAFKA_DIR/data (cluster id $cluster_id)"
    kafka_java -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$LOG_DIR" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_DIR/server.properties" >"$LOG_DIR/kafka-format.log" 2>&1 \
      || { tail -n 20 "$LOG_DIR/kafka-format.log" >&2; die "could not format Kafka storage"; }
  fi
  say "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (logs: $LOG_DIR/server.log)"
  nohup java -Xms128m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$JARS/*" kafka.Kafka "$KAFKA_DIR/server.properties" >"$LOG_DIR/kafka.out" 2>&1 </dev/null &
  echo $! > "$KAFKA_DIR/kafka.pid"
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

# True when the running Redis was started with the generated ACL users (an older stack.sh started it without)
acl_loaded() { grep -qxF "aclfile $ACL_FILE" "$REDIS_DIR/redis.conf" 2>/dev/null; }

start_redis() {
  if pid_alive "$REDIS_DIR/redis.pid"; then
    say "Redis already running (pid $(cat "$REDIS_DIR/redis.pid")) on 127.0.0.1:$REDIS_PORT"
    acl_loaded || say "warning: this Redis was started without the ACL users (its default user needs no password): run 'bash $here/stack.sh restart-redis'"
    return 0
  fi
  check_port_free "$REDIS_PORT" "Redis" REDIS_PORT
  mkdir -p "$STACK_DIR" "$REDIS_DIR" "$LOG_DIR"
  redis_bin
  write_acl
  cat > "$REDIS_DIR/redis.conf" <<EOF
# Written by deploy/local/stack.sh: loopback only, AOF with fsync every second, the ACL users of namespace
# $NAMESPACE (the default user has a password: $SECRETS_DIR/redis-default.password).
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $REDIS_DIR/redis.pid
logfile $LOG_DIR/redis.log
dir $REDIS_DIR
appendonly yes
appendfsync everysec
save ""
aclfile $ACL_FILE
EOF
  say "starting Redis on 127.0.0.1:$REDIS_PORT (data: $REDIS_DIR, log: $LOG_DIR/redis.log)"
  redis-server "$REDIS_DIR/redis.conf" || { tail -n 20 "$LOG_DIR/redis.log" >&2 || true; die "redis-server did not start"; }
  for _ in $(seq 1 50); do [[ -f "$REDIS_DIR/redis.pid" ]] && break; sleep 0.1; done
}

wait_ready() {
  [[ -x "$PYTHON" ]] || die "no Python at $PYTHON to check the stack (run 'make venv' or set METRICFOLD_PYTHON)"
  local auth=()
  [[ -f "$SECRETS_DIR/redis-default.password" ]] && auth=(--redis-password-file "$SECRETS_DIR/redis-default.password")
  "$PYTHON" "$here/wait_ready.py" --kafka "127.0.0.1:$KAFKA_PORT" --redis "redis://127.0.0.1:$REDIS_PORT/0" ${auth[@]+"${auth[@]}"} "$@" \
    || { echo "--- tail of $LOG_DIR/server.log" >&2; tail -n 30 "$LOG_DIR/server.log" >&2 2>/dev/null || true;
         echo "--- tail of $LOG_DIR/kafka.out" >&2; tail -n 10 "$LOG_DIR/kafka.out" >&2 2>/dev/null || true;
         echo "--- tail of $LOG_DIR/redis.log" >&2; tail -n 10 "$LOG_DIR/redis.log" >&2 2>/dev/null || true;
         die "the stack did not come up"; }
}

print_env() {  # $1: the Redis user, consumer (default), reader or admin; the password stays in its file
  local user namespace
  case "${1:-consumer}" in
    consumer) user=metricfold-consumer ;;
    reader) user=metricfold-reader ;;
    admin) user=default ;;
    *) die "unknown Redis user '$1' (try: consumer, reader, admin)" ;;
  esac
  cat <<EOF
export METRICFOLD_KAFKA=127.0.0.1:$KAFKA_PORT
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
  if pid_alive "$KAFKA_DIR/kafka.pid"; then say "Kafka: running, pid $(cat "$KAFKA_DIR/kafka.pid"), 127.0.0.1:$KAFKA_PORT"; else say "Kafka: stopped"; ok=1; fi
  if pid_alive "$REDIS_DIR/redis.pid"; then say "Redis: running, pid $(cat "$REDIS_DIR/redis.pid"), 127.0.0.1:$REDIS_PORT"; else say "Redis: stopped"; ok=1; fi
  say "data and logs: $STACK_DIR"
  return $ok
}

cmd="${1:-}"
case "$cmd" in
  up) mkdir -p "$STACK_DIR"; start_redis; start_kafka; wait_ready; print_env > "$STACK_DIR/env"; say "up; clients: source $STACK_DIR/env" ;;
  down) stop_pidfile "$KAFKA_DIR/kafka.pid" Kafka TERM; stop_pidfile "$REDIS_DIR/redis.pid" Redis TERM ;;
  status) status ;;
  env) print_env "${2:-consumer}" ;;
  start-kafka) start_kafka; wait_ready --only kafka ;;
  start-redis) start_redis; wait_ready --only redis; print_env > "$STACK_DIR/env" ;;
  stop-kafka) stop_pidfile "$KAFKA_DIR/kafka.pid" Kafka TERM ;;
  stop-redis) stop_pidfile "$REDIS_DIR/redis.pid" Redis TERM ;;
  kill-kafka) stop_pidfile "$KAFKA_DIR/kafka.pid" Kafka KILL ;;
  kill-redis) stop_pidfile "$REDIS_DIR/redis.pid" Redis KILL ;;
  restart-kafka) stop_pidfile "$KAFKA_DIR/kafka.pid" Kafka TERM; start_kafka; wait_ready --only kafka ;;
  restart-redis) stop_pidfile "$REDIS_DIR/redis.pid" Redis TERM; start_redis; wait_ready --only redis; print_env > "$STACK_DIR/env" ;;
  fetch) fetch_kafka ;;
  -h|--help|help|"") sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (try: up, down, status, env, --help)" ;;
esac
