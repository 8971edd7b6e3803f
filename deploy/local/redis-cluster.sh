# A local Redis Cluster for stack.sh (sourced by it when METRICFOLD_REDIS_MODE=cluster): six of Debian's
# redis-server on loopback, three masters and three replicas made by `redis-cli --cluster create`, each node with
# AOF (fsync every second), the stack's ACL users and a short cluster-node-timeout, so that a killed master's
# replica takes over within seconds.
#
# Node N (1 to 6) listens on METRICFOLD_REDIS_PORT + N - 1 (16379 to 16384) and on that + 10000 for the cluster bus
# (26379 to 26384); its config, data and pid file are in <stack dir>/redis/nodeN, its log in
# <stack dir>/logs/redis-nodeN.log. Replicas log in to their masters as the default user (masterauth: each node's
# redis.conf is mode 0600, like the password file it copies). redis-cli gets the password through REDISCLI_AUTH,
# never on its command line.
#
# Settings: METRICFOLD_REDIS_CLUSTER_NODE_TIMEOUT (ms, default 2000)

REDIS_CLUSTER_NODES=6
REDIS_CLUSTER_REPLICAS=1
REDIS_CLUSTER_NODE_TIMEOUT="${METRICFOLD_REDIS_CLUSTER_NODE_TIMEOUT:-2000}"
[[ "$REDIS_CLUSTER_NODE_TIMEOUT" =~ ^[0-9]+$ ]] && (( REDIS_CLUSTER_NODE_TIMEOUT >= 100 )) \
  || die "METRICFOLD_REDIS_CLUSTER_NODE_TIMEOUT=$REDIS_CLUSTER_NODE_TIMEOUT: say milliseconds, 100 or more"

redis_node_port() { echo $(( REDIS_PORT + $1 - 1 )); }
redis_node_bus_port() { echo $(( REDIS_PORT + $1 - 1 + 10000 )); }
redis_node_dir() { echo "$REDIS_DIR/node$1"; }
redis_node_name() { echo "Redis node $1"; }

(( $(redis_node_bus_port "$REDIS_CLUSTER_NODES") < 65536 )) \
  || die "a Redis Cluster from port $REDIS_PORT needs ports up to $(redis_node_bus_port "$REDIS_CLUSTER_NODES") (the cluster bus is +10000); choose METRICFOLD_REDIS_PORT below 55530"
for n in $(seq 1 "$REDIS_CLUSTER_NODES"); do
  for port in "$(redis_node_port "$n")" "$(redis_node_bus_port "$n")"; do
    for k in $(seq 1 "$KAFKA_NODES"); do
      [[ "$port" != "$(node_port "$k")" && "$port" != "$(node_controller_port "$k")" ]] \
        || die "port $port is wanted by Redis node $n and by Kafka node $k: choose METRICFOLD_REDIS_PORT or METRICFOLD_KAFKA_PORT further apart"
    done
  done
done

redis_node_cli() {  # $1 the node, then redis-cli's arguments; as the default user
  local n="$1"; shift
  REDISCLI_AUTH="$(cat "$SECRETS_DIR/redis-default.password")" \
    redis-cli -h 127.0.0.1 -p "$(redis_node_port "$n")" --no-auth-warning "$@"
}

redis_node_config() {  # $1 the node
  local n="$1" dir
  dir="$(redis_node_dir "$n")"
  cat <<EOF
# Written by deploy/local/stack.sh (redis-cluster.sh): node $n of a $REDIS_CLUSTER_NODES-node Redis Cluster, loopback
# only, AOF with fsync every second, the ACL users of namespace $NAMESPACE. Mode 0600: it holds masterauth.
bind 127.0.0.1
port $(redis_node_port "$n")
cluster-enabled yes
cluster-config-file nodes.conf
cluster-port $(redis_node_bus_port "$n")
cluster-node-timeout $REDIS_CLUSTER_NODE_TIMEOUT
repl-diskless-sync-delay 0
masteruser default
masterauth $(cat "$SECRETS_DIR/redis-default.password")
$(redis_common_config "$dir" "$LOG_DIR/redis-node$n.log")
EOF
}

start_redis_node() {  # $1 the node; returns at once (wait_redis_cluster waits)
  local n="$1" dir
  dir="$(redis_node_dir "$n")"
  if pid_alive "$dir/redis.pid"; then say "$(redis_node_name "$n") already running (pid $(cat "$dir/redis.pid")) on 127.0.0.1:$(redis_node_port "$n")"; return 0; fi
  check_port_free "$(redis_node_port "$n")" "$(redis_node_name "$n")" REDIS_PORT
  check_port_free "$(redis_node_bus_port "$n")" "the cluster bus of $(redis_node_name "$n")" REDIS_PORT
  mkdir -p "$dir" "$LOG_DIR"
  (umask 077; redis_node_config "$n" > "$dir/redis.conf")
  say "starting $(redis_node_name "$n") on 127.0.0.1:$(redis_node_port "$n") (bus $(redis_node_bus_port "$n"); data: $dir, log: $LOG_DIR/redis-node$n.log)"
  redis-server "$dir/redis.conf" || { tail -n 20 "$LOG_DIR/redis-node$n.log" >&2 || true; die "redis-server did not start"; }
  for _ in $(seq 1 50); do [[ -f "$dir/redis.pid" ]] && break; sleep 0.1; done
}

start_redis_cluster() {
  local n ports=() answered
  mkdir -p "$STACK_DIR" "$REDIS_DIR" "$LOG_DIR"
  redis_bin
  [[ -f "$REDIS_DIR/redis.pid" ]] && pid_alive "$REDIS_DIR/redis.pid" \
    && die "a standalone Redis runs from $STACK_DIR on port $REDIS_PORT; stop it first (make down), then METRICFOLD_REDIS_MODE=cluster make up"
  write_acl
  for n in $(seq 1 "$REDIS_CLUSTER_NODES"); do start_redis_node "$n"; ports+=("127.0.0.1:$(redis_node_port "$n")"); done
  for n in $(seq 1 "$REDIS_CLUSTER_NODES"); do
    answered=0
    for _ in $(seq 1 100); do [[ "$(redis_node_cli "$n" ping 2>/dev/null)" == PONG ]] && { answered=1; break; }; sleep 0.1; done
    (( answered )) || { tail -n 20 "$LOG_DIR/redis-node$n.log" >&2 || true; die "$(redis_node_name "$n") does not answer"; }
  done
  # made once: the nodes remember their cluster in nodes.conf and form it again when they start
  if [[ "$(redis_node_cli 1 cluster info | tr -d '\r' | sed -n 's/^cluster_known_nodes://p')" == 1 ]]; then
    say "creating the Redis Cluster: $(( REDIS_CLUSTER_NODES / (REDIS_CLUSTER_REPLICAS + 1) )) masters with $REDIS_CLUSTER_REPLICAS replica each (redis-cli --cluster create)"
    REDISCLI_AUTH="$(cat "$SECRETS_DIR/redis-default.password")" redis-cli --no-auth-warning --cluster create "${ports[@]}" \
      --cluster-replicas "$REDIS_CLUSTER_REPLICAS" --cluster-yes >"$LOG_DIR/redis-cluster-create.log" 2>&1 \
      || { tail -n 20 "$LOG_DIR/redis-cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
  fi
}

# A node's view of the cluster: each node's id and role (master or replica), sorted
redis_node_view() { redis_node_cli "$1" cluster nodes 2>/dev/null | awk '{ print $1, ($3 ~ /slave/ ? "replica" : "master") }' | sort; }

# Until every running node says cluster_state:ok (every slot served), every running replica has its copy of its
# master's data (master_link_status:up: a replica that never synced cannot take over from its master), and every
# running node sees the same masters and replicas (the gossip has spread)
wait_redis_cluster() {
  local n state link view first waited=0 bad
  while :; do
    bad=""; first=""
    for n in $(seq 1 "$REDIS_CLUSTER_NODES"); do
      pid_alive "$(redis_node_dir "$n")/redis.pid" || continue
      state="$(redis_node_cli "$n" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p')"
      [[ "$state" == ok ]] || { bad+=" $n(cluster_state:${state:-no answer})"; continue; }
      link="$(redis_node_cli "$n" info replication 2>/dev/null | tr -d '\r' | sed -n 's/^master_link_status://p')"
      [[ -z "$link" || "$link" == up ]] || bad+=" $n(master_link_status:$link)"
      view="$(redis_node_view "$n")"
      if [[ -z "$first" ]]; then first="$view"; elif [[ "$view" != "$first" ]]; then bad+=" $n(sees other roles than the first node)"; fi
    done
    [[ -z "$bad" ]] && { say "redis cluster answers (cluster_state:ok, replicas in sync)"; return 0; }
    (( waited >= 600 )) && die "the Redis Cluster is not ok after 60 s; nodes not ok:$bad (logs: $LOG_DIR/redis-node*.log)"
    sleep 0.1; waited=$(( waited + 1 ))
  done
}

status_redis_cluster() {  # returns 1 when a node is down
  local n dir ok=0 role state=""
  for n in $(seq 1 "$REDIS_CLUSTER_NODES"); do
    dir="$(redis_node_dir "$n")"
    if pid_alive "$dir/redis.pid"; then
      role="$(redis_node_cli "$n" role 2>/dev/null | head -n 1)"
      [[ -n "$state" ]] || state="$(redis_node_cli "$n" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p')"
      say "$(redis_node_name "$n"): running, pid $(cat "$dir/redis.pid"), 127.0.0.1:$(redis_node_port "$n"), ${role:-no answer}"
    else say "$(redis_node_name "$n"): stopped"; ok=1; fi
  done
  say "Redis Cluster: cluster_state:${state:-unknown}"
  [[ "$state" == ok ]] || ok=1
  return $ok
}

redis_node_arg() {  # $1: the node number given on the command line
  [[ "${1:-}" =~ ^[1-9]$ ]] && (( $1 <= REDIS_CLUSTER_NODES )) \
    || die "say which Redis node, 1 to $REDIS_CLUSTER_NODES, e.g. kill-redis-node 2"
  echo "$1"
}
