# The local stack locked down (METRICFOLD_SECURE=1): sourced by deploy/local/stack.sh, which calls these functions.
#
# - A private CA and its certificates, made with the openssl command at the first start (and again when one is
#   missing, does not verify against the CA or expires within a day), valid 90 days, in <stack dir>/secure/tls
#   (directory 0700, every file 0600): ca.crt/ca.key; kafka.crt/kafka.key (CN=broker, 127.0.0.1 and localhost: the
#   broker's listeners, and its client certificate on the controller listener); redis.crt/redis.key (the Redis
#   server); redis-client-<user>.crt/.key for each Redis user (Redis asks every client for a certificate of this CA);
#   serve.crt/serve.key (`metricfold serve --tls-cert/--tls-key`).
# - Kafka: one KRaft node. Clients: SASL_SSL only (SCRAM-SHA-512) on METRICFOLD_KAFKA_PORT, also the inter-broker
#   listener (the brokers' own user `broker`). The controller listener on METRICFOLD_KAFKA_CONTROLLER_PORT speaks SSL
#   and requires a client certificate of the CA (KRaft does not offer SCRAM on controller listeners: the credentials
#   live in the metadata the controller serves); the broker's certificate (CN=broker) maps to User:broker, the only
#   super user. StandardAuthorizer with allow.everyone.if.no.acl.found=false. The SCRAM users (broker, trainer,
#   consumer, replay, admin) are made by the storage tool's --add-scram when the storage is formatted, from an
#   argument file (java @file, mode 0600, deleted at once) so that no password is in a process's command line.
#   Their passwords: <stack dir>/secrets/kafka-<user>.password (0600). The roles' ACLs are set at each start
#   (deploy/local/secure.py acls, as `broker`) for METRICFOLD_TOPIC and METRICFOLD_GROUP (default metricfold-<ns>).
# - Redis: Debian's redis-server with `port 0` and `tls-port` METRICFOLD_REDIS_PORT, `tls-auth-clients yes`, and the
#   ACL users of consumer/acl.py as in the plain stack.
# - `metricfold serve`: a token in <stack dir>/secrets/serve.token (0600); `stack.sh env reader` names it and the
#   serve certificate, so `metricfold serve` there speaks HTTPS and asks for the token.

TLS_DIR="$STACK_DIR/secure/tls"
CERT_DAYS=90
KAFKA_ROLES=(trainer consumer replay admin)
REDIS_USERS=(default metricfold-consumer metricfold-reader)
ACL_SCOPE="$KAFKA_DIR/acl-scope"   # the topic and group the Kafka ACLs were set for (env prints them)

# ---------------------------------------------------------------- certificates
_issue() {  # $1 file name, $2 CN, $3 extendedKeyUsage, $4 subjectAltName ("" for none)
  local name="$1"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
    -keyout "$TLS_DIR/$name.key" -out "$TLS_DIR/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$3"
    if [[ -n "$4" ]]; then echo "subjectAltName=$4"; fi
  } > "$TLS_DIR/$name.ext"
  openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$CERT_DAYS" -sha256 -extfile "$TLS_DIR/$name.ext" \
    -out "$TLS_DIR/$name.crt" 2>/dev/null
  rm -f "$TLS_DIR/$name.csr" "$TLS_DIR/$name.ext"
}

_tls_names() { echo kafka redis serve; local u; for u in "${REDIS_USERS[@]}"; do echo "redis-client-$u"; done; }

_tls_valid() {  # the CA and every certificate present, verifying against the CA, good for at least one more day
  local name
  openssl x509 -checkend 86400 -noout -in "$TLS_DIR/ca.crt" >/dev/null 2>&1 || return 1
  for name in $(_tls_names); do
    [[ -s "$TLS_DIR/$name.key" ]] || return 1
    openssl x509 -checkend 86400 -noout -in "$TLS_DIR/$name.crt" >/dev/null 2>&1 || return 1
    openssl verify -CAfile "$TLS_DIR/ca.crt" "$TLS_DIR/$name.crt" >/dev/null 2>&1 || return 1
  done
}

secure_tls() {
  command -v openssl >/dev/null || die "the openssl command is needed for the secure stack's certificates: apt-get install -y openssl"
  mkdir -p "$TLS_DIR"; chmod 700 "$STACK_DIR/secure" "$TLS_DIR"
  _tls_valid && return 0
  say "making a private CA and certificates in $TLS_DIR (valid $CERT_DAYS days)"
  rm -f "$TLS_DIR"/*
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$CERT_DAYS" -sha256 \
      -subj "/CN=metricfold local CA $(date -u +%Y%m%dT%H%M%SZ)" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" 2>/dev/null
    _issue kafka broker serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
    _issue redis redis serverAuth "IP:127.0.0.1,DNS:localhost"
    _issue serve "metricfold serve" serverAuth "IP:127.0.0.1,DNS:localhost"
    for u in "${REDIS_USERS[@]}"; do _issue "redis-client-$u" "$u" clientAuth ""; done
    # Kafka reads a PEM key store: the (unencrypted PKCS#8) key and its certificate in one file
    cat "$TLS_DIR/kafka.key" "$TLS_DIR/kafka.crt" > "$TLS_DIR/kafka-keystore.pem"
  ) || die "openssl could not make the certificates"
  _tls_valid || die "the certificates made in $TLS_DIR do not verify against their CA"
}

# ---------------------------------------------------------------- secrets
secure_secrets() {  # the Kafka users' passwords and the serve token (each made once, mode 0600)
  [[ -x "$PYTHON" ]] || die "no Python at $PYTHON to make the Kafka passwords (run 'make venv' or set METRICFOLD_PYTHON)"
  "$PYTHON" "$here/secure.py" passwords --secrets "$SECRETS_DIR" || die "could not make the Kafka passwords"
  if [[ ! -s "$SECRETS_DIR/serve.token" ]]; then
    (umask 077; openssl rand -hex 32 > "$SECRETS_DIR/serve.token") || die "could not make the serve token"
  fi
}

# ---------------------------------------------------------------- Kafka
secure_write_kafka_config() {  # $1: the node number (1: the secure stack runs one node)
  local n="$1" dir broker_password
  dir="$(node_dir "$n")"
  mkdir -p "$dir/data" "$(node_log_dir "$n")"
  broker_password="$(<"$SECRETS_DIR/kafka-broker.password")"
  (
    umask 077  # it holds the broker's own password
    cat > "$dir/server.properties" <<EOF
# Written by deploy/local/stack.sh (METRICFOLD_SECURE=1): one KRaft node, locked down, loopback only. Mode 0600.
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$n@127.0.0.1:$(node_controller_port "$n")
listeners=SASL_SSL://127.0.0.1:$(node_port "$n"),CONTROLLER://127.0.0.1:$(node_controller_port "$n")
advertised.listeners=SASL_SSL://127.0.0.1:$(node_port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$broker_password";
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/kafka-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.crt
ssl.endpoint.identification.algorithm=https
ssl.enabled.protocols=TLSv1.3,TLSv1.2
listener.name.controller.ssl.client.auth=required
ssl.principal.mapping.rules=RULE:^CN=([a-zA-Z0-9._-]+)\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:broker
$(kafka_common_config "$dir" 1 1)
EOF
  )
}

secure_format_kafka() {  # $1 the node's directory, $2 its log directory, $3 the cluster id
  local dir="$1" logs="$2" cluster_id="$3" args user
  args="$SECRETS_DIR/.kafka-format.args"
  # java @file: the storage tool's arguments, the SCRAM passwords among them, from a file of mode 0600 (printf and
  # $(<file) are bash builtins: the passwords never appear in any process's command line)
  (
    umask 077
    {
      printf '"%s"\n' "-Xmx256m" "-Dlog4j2.configurationFile=$here/log4j2.properties" "-Dkafka.logs.dir=$logs" \
        "-cp" "$JARS/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties"
      for user in broker "${KAFKA_ROLES[@]}"; do
        printf '%s\n' "--add-scram" "SCRAM-SHA-512=[name=$user,password=$(<"$SECRETS_DIR/kafka-$user.password")]"
      done
    } > "$args"
  )
  say "formatting Kafka storage in $dir/data (cluster id $cluster_id) with the SCRAM users broker ${KAFKA_ROLES[*]}"
  if ! java "@$args" >"$logs/kafka-format.log" 2>&1; then
    rm -f "$args"
    tail -n 20 "$logs/kafka-format.log" >&2
    die "could not format Kafka storage"
  fi
  rm -f "$args"
  chmod 600 "$logs/kafka-format.log"
}

# The Kafka ACLs of the roles, for the topic and group clients will use (remembered for `env`)
secure_acls() {
  local topic="${METRICFOLD_TOPIC:-metricfold.events}" group="${METRICFOLD_GROUP:-metricfold-$NAMESPACE}"
  "$PYTHON" "$here/secure.py" acls --kafka "$(kafka_bootstrap)" --tls "$TLS_DIR" --secrets "$SECRETS_DIR" \
    --topic "$topic" --group "$group" || die "could not set the Kafka ACLs (see the error above)"
  printf 'topic=%s\ngroup=%s\n' "$topic" "$group" > "$ACL_SCOPE"
}

# ---------------------------------------------------------------- Redis
secure_write_redis_config() {
  cat > "$REDIS_DIR/redis.conf" <<EOF
# Written by deploy/local/stack.sh (METRICFOLD_SECURE=1): TLS only (no plaintext port), every client with a
# certificate of the stack's CA, loopback only, AOF with fsync every second, the ACL users of namespace $NAMESPACE
# (the default user has a password: $SECRETS_DIR/redis-default.password).
bind 127.0.0.1
port 0
tls-port $REDIS_PORT
tls-cert-file $TLS_DIR/redis.crt
tls-key-file $TLS_DIR/redis.key
tls-ca-cert-file $TLS_DIR/ca.crt
tls-auth-clients yes
tls-protocols "TLSv1.2 TLSv1.3"
$(redis_common_config)
EOF
}

# ---------------------------------------------------------------- readiness and the clients' settings
secure_wait_ready() {  # [--only kafka|redis]; sets the Kafka ACLs once Kafka answers
  local only="${2:-}"
  "$PYTHON" "$here/secure.py" ready --kafka "$(kafka_bootstrap)" --redis "rediss://127.0.0.1:$REDIS_PORT/0" \
    --tls "$TLS_DIR" --secrets "$SECRETS_DIR" --timeout 90 "$@" \
    || { echo "--- tail of $LOG_DIR/server.log" >&2; tail -n 30 "$LOG_DIR/server.log" >&2 2>/dev/null || true
         echo "--- tail of $LOG_DIR/kafka.out" >&2; tail -n 10 "$LOG_DIR/kafka.out" >&2 2>/dev/null || true
         echo "--- tail of $LOG_DIR/redis.log" >&2; tail -n 10 "$LOG_DIR/redis.log" >&2 2>/dev/null || true
         die "the stack did not come up"; }
  [[ "$only" == redis ]] || secure_acls
}

# `stack.sh env ROLE` of the secure stack: the role's Kafka user (none for reader) and Redis user, every secret named
# by a *_FILE variable (never in the environment itself)
secure_print_env() {
  local role="${1:-consumer}" kafka_user redis_user namespace topic group
  case "$role" in
    trainer) kafka_user=trainer; redis_user=metricfold-reader ;;   # the SDK sends; its Api() reads
    consumer) kafka_user=consumer; redis_user=metricfold-consumer ;;
    replay) kafka_user=replay; redis_user=metricfold-consumer ;;   # a replay writes a new generation
    admin) kafka_user=admin; redis_user=default ;;
    reader) kafka_user=""; redis_user=metricfold-reader ;;         # serve, summary, runs, Grafana: Redis only
    *) die "unknown role '$role' (try: trainer, consumer, replay, admin, reader)" ;;
  esac
  namespace="$(grep -o -m 1 '~[A-Za-z0-9_.-]*:\*' "$ACL_FILE" 2>/dev/null | sed 's/^~//; s/:\*$//')"
  topic="$(sed -n 's/^topic=//p' "$ACL_SCOPE" 2>/dev/null)"
  group="$(sed -n 's/^group=//p' "$ACL_SCOPE" 2>/dev/null)"
  echo "# the locked-down local stack as the $role role: Kafka user ${kafka_user:-(none)}, Redis user $redis_user"
  cat <<EOF
export METRICFOLD_KAFKA=$(kafka_bootstrap)
export METRICFOLD_KAFKA_SECURITY_PROTOCOL=SASL_SSL
export METRICFOLD_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
export METRICFOLD_KAFKA_SSL_CAFILE=$TLS_DIR/ca.crt
unset METRICFOLD_KAFKA_SASL_PASSWORD
EOF
  if [[ -n "$kafka_user" ]]; then
    cat <<EOF
export METRICFOLD_KAFKA_SASL_USERNAME=$kafka_user
export METRICFOLD_KAFKA_SASL_PASSWORD_FILE=$SECRETS_DIR/kafka-$kafka_user.password
EOF
  else
    echo "unset METRICFOLD_KAFKA_SASL_USERNAME METRICFOLD_KAFKA_SASL_PASSWORD_FILE"
  fi
  [[ -n "$topic" ]] && echo "export METRICFOLD_TOPIC=$topic"
  [[ -n "$group" ]] && echo "export METRICFOLD_GROUP=$group"
  [[ -n "$namespace" ]] && echo "export METRICFOLD_NAMESPACE=$namespace"
  cat <<EOF
export METRICFOLD_REDIS=rediss://127.0.0.1:$REDIS_PORT/0
export METRICFOLD_REDIS_USERNAME=$redis_user
export METRICFOLD_REDIS_PASSWORD_FILE=$SECRETS_DIR/redis-$redis_user.password
export METRICFOLD_REDIS_CA_CERT=$TLS_DIR/ca.crt
export METRICFOLD_REDIS_CLIENT_CERT=$TLS_DIR/redis-client-$redis_user.crt
export METRICFOLD_REDIS_CLIENT_KEY=$TLS_DIR/redis-client-$redis_user.key
unset METRICFOLD_REDIS_PASSWORD
EOF
  if [[ "$role" == reader ]]; then
    cat <<EOF
export METRICFOLD_SERVE_TLS_CERT=$TLS_DIR/serve.crt
export METRICFOLD_SERVE_TLS_KEY=$TLS_DIR/serve.key
export METRICFOLD_SERVE_TOKEN_FILE=$SECRETS_DIR/serve.token
unset METRICFOLD_SERVE_TOKEN
EOF
  fi
}
