#!/usr/bin/env bash
# A real, single-node Apache Kafka (KRaft: combined broker + controller) on 127.0.0.1 for
# development, tests and CI. No Docker: the broker's jars come from Maven Central through the
# pom beside this script (cached in the local Maven repository) and run with `java`.
#
#   deploy/kafka/local.sh up     # start (idempotent; keeps the data of an earlier `stop`);
#                                # prints the bootstrap address once it answers
#   deploy/kafka/local.sh stop   # stop, keeping its data (an outage, for tests)
#   deploy/kafka/local.sh down   # stop and delete its data
#   deploy/kafka/local.sh status # exit 0 when it answers a metadata request
#
# KAFKA_PORT (default 19092) is the PLAINTEXT client port; the controller listens on
# KAFKA_PORT + 1. Two more client listeners, for the clients' TLS and SASL:
#   KAFKA_PORT + 2  SASL_PLAINTEXT, SASL/PLAIN and SCRAM-SHA-256, user `switchyard`, password
#                   `switchyard-secret`
#   KAFKA_PORT + 3  SSL, its certificate (for 127.0.0.1 and localhost) signed by a CA generated
#                   with it: $KAFKA_DIR/tls/ca.pem. A client may present a certificate signed
#                   by the same CA ($KAFKA_DIR/tls/client.pem, client.key); none is required.
# KAFKA_DIR (default /tmp/switchyard-kafka-$KAFKA_PORT) holds its data, pid, log and tls/.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/../lib.sh"

here="$(cd "$(dirname "$0")" && pwd)"
port="${KAFKA_PORT:-19092}"
controller_port="$((port + 1))"
sasl_port="$((port + 2))"
ssl_port="$((port + 3))"
dir="${KAFKA_DIR:-/tmp/switchyard-kafka-$port}"
libs="$here/target/libs"
pidfile="$dir/kafka.pid"
tls="$dir/tls"
sasl_user="switchyard"
sasl_password="switchyard-secret"
# The broker's PEM keystore needs an encrypted key; this is its password, nothing else's.
key_password="switchyard-local-key"
# Bumped whenever the data directory needs formatting again (listeners or SCRAM users added): a
# directory of an earlier layout is formatted afresh by `up`.
layout="2-sasl-tls"

log() { printf '%s\n' "$*" >&2; }

install_tools() {
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

fetch_jars() {
    if [[ -f "$libs/.complete" && "$libs/.complete" -nt "$here/pom.xml" ]]; then
        return
    fi
    log "fetching the Kafka broker from Maven Central"
    rm -rf "$libs"
    # Maven writes to standard output even with -q (terminal escape codes): keep standard
    # output for the bootstrap address alone, which callers capture.
    (cd "$here" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies) >&2
    touch "$libs/.complete"
}

answers() {
    python3 "$here/metadata_probe.py" "127.0.0.1:$port"
}

running() {
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

current_layout() {
    [[ -f "$dir/data/meta.properties" && "$(cat "$dir/layout" 2>/dev/null)" == "$layout" ]]
}

up() {
    if running && ! current_layout; then
        log "the running broker has no SASL and TLS listeners: restarting it with fresh data"
        stop
    fi
    if running && answers; then
        echo "127.0.0.1:$port"
        return
    fi
    install_tools
    fetch_jars
    if running; then
        log "a broker is starting (pid $(cat "$pidfile")); waiting for it"
    elif current_layout; then
        launch
    else
        format
        launch
    fi
    for _ in $(seq 1 120); do
        if answers; then
            log "SASL_PLAINTEXT on 127.0.0.1:$sasl_port, SSL on 127.0.0.1:$ssl_port (CA: $tls/ca.pem)"
            echo "127.0.0.1:$port"
            return
        fi
        if ! running; then
            log "kafka exited; its log ($dir/kafka.log) ends with:"
            tail -n 30 "$dir/kafka.log" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    log "kafka did not answer within 60 s; see $dir/kafka.log"
    exit 1
}

java_opts=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$here/log4j2.properties")

# A CA, the broker's certificate and a client's, all signed by it, valid for ten years.
make_certificates() {
    mkdir -p "$tls"
    (
        cd "$tls"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.pem \
            -subj "/CN=switchyard local kafka CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        sign server "/CN=127.0.0.1" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
        sign client "/CN=switchyard" "extendedKeyUsage=clientAuth"
        # Kafka's PEM keystore: the encrypted PKCS#8 key (PBE-SHA1-3DES, which Java reads)
        # followed by the certificate.
        openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -in server.key -passout "pass:$key_password" -out server.key.enc
        cat server.key.enc server.pem >keystore.pem
    ) >"$dir/tls.log" 2>&1 || { cat "$dir/tls.log" >&2; exit 1; }
}

# sign NAME SUBJECT EXTENSIONS: NAME.key and NAME.pem, signed by the CA in the current directory.
sign() {
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -out "$1.pem" \
        -extfile <(printf 'basicConstraints=CA:FALSE\n%s\n' "$3")
    rm -f "$1.csr"
}

format() {
    rm -rf "$dir"
    mkdir -p "$dir/data"
    make_certificates
    cat >"$dir/server.properties" <<PROPERTIES
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.session.timeout.ms=6000
group.consumer.min.session.timeout.ms=6000
PROPERTIES
    # The listeners the TLS and SASL tests use, which a deployment's Kafka (deploy/compose) does
    # without: appended, and a later key replaces an earlier one.
    cat >>"$dir/server.properties" <<TEST_LISTENERS
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port,SASL_PLAINTEXT://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user="$sasl_password";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$tls/keystore.pem
listener.name.ssl.ssl.key.password=$key_password
listener.name.ssl.ssl.truststore.type=PEM
listener.name.ssl.ssl.truststore.location=$tls/ca.pem
listener.name.ssl.ssl.client.auth=requested
TEST_LISTENERS
    local cluster_id
    cluster_id="$(java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
    java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$dir/server.properties" \
        --add-scram "SCRAM-SHA-256=[name=$sasl_user,password=$sasl_password]" >"$dir/format.log" 2>&1 \
        || { cat "$dir/format.log" >&2; exit 1; }
    echo "$layout" >"$dir/layout"
}

launch() {
    log "starting kafka on 127.0.0.1:$port (data in $dir)"
    nohup java "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$dir/server.properties" \
        >>"$dir/kafka.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

stop() {
    if running; then
        local pid
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        wait_or_kill "$pid" 20
    fi
    rm -f "$pidfile"
}

down() {
    stop
    rm -rf "$dir"
}

case "${1:-}" in
    up) up ;;
    stop) stop ;;
    down) down ;;
    status) answers ;;
    *)
        echo "usage: $0 up|stop|down|status" >&2
        exit 2
        ;;
esac
