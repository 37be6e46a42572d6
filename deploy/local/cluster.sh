#!/usr/bin/env bash
# A local production-shaped cluster on loopback (make cluster / make cluster-down):
# three nats-server processes forming a JetStream cluster (every stream and the
# consumer with 3 replicas), one redis-server, two worker orchestrators, one
# ingress orchestrator and the step simulator. Pid files and logs go to
# $CLUSTER_DIR (default .cluster/ in the repository, git-ignored).
#
#   deploy/local/cluster.sh up            build nothing; start whatever is not running
#   deploy/local/cluster.sh down          stop everything (SIGTERM, then SIGKILL after 15 s)
#   deploy/local/cluster.sh status        what runs, with pids
#   deploy/local/cluster.sh stop NAME     stop one: nats-n1..3, redis, stepsim, worker-1, worker-2, ingress
#   deploy/local/cluster.sh start NAME    start it again
#
# Binaries come from $BIN (default bin/: orchestrator, stepsim, nats-server; `make
# cluster` builds them). Every port can be moved with its variable below.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-$ROOT/bin}
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/.cluster}
NATS_PORTS=(${NATS_PORT_1:-4301} ${NATS_PORT_2:-4302} ${NATS_PORT_3:-4303})
NATS_ROUTES=(${NATS_ROUTE_PORT_1:-6301} ${NATS_ROUTE_PORT_2:-6302} ${NATS_ROUTE_PORT_3:-6303})
NATS_HTTPS=(${NATS_HTTP_PORT_1:-8301} ${NATS_HTTP_PORT_2:-8302} ${NATS_HTTP_PORT_3:-8303})
REDIS_PORT=${REDIS_PORT:-6390}
STEPSIM_PORT=${STEPSIM_PORT:-8391}
INGRESS_PORT=${INGRESS_PORT:-8300}
WORKER_PORTS=(${WORKER_PORT_1:-8311} ${WORKER_PORT_2:-8312})
STEP_LATENCY=${STEP_LATENCY:-200ms}
# The orchestrators call the step simulator; point them elsewhere with this.
STEPS_BASE_URL=${STEPS_BASE_URL:-http://127.0.0.1:$STEPSIM_PORT}
NAMES=(nats-n1 nats-n2 nats-n3 redis stepsim worker-1 worker-2 ingress)

nats_urls() {
	local out="" p
	for p in "${NATS_PORTS[@]}"; do out+="${out:+,}nats://127.0.0.1:$p"; done
	echo "$out"
}

pidfile() { echo "$CLUSTER_DIR/$1.pid"; }

running() {
	local f
	f=$(pidfile "$1")
	[[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

# launch NAME ENV... -- CMD ARGS...: start in the background, log and pid file in CLUSTER_DIR.
launch() {
	local name=$1
	shift
	local envs=()
	while [[ $1 != -- ]]; do envs+=("$1"); shift; done
	shift
	if running "$name"; then
		echo "$name: already running (pid $(cat "$(pidfile "$name")"))"
		return
	fi
	env "${envs[@]}" "$@" >>"$CLUSTER_DIR/$name.log" 2>&1 </dev/null &
	echo $! >"$(pidfile "$name")"
	echo "$name: started (pid $!, log $CLUSTER_DIR/$name.log)"
}

# wait_http URL SECONDS: until URL answers 200.
wait_http() {
	local url=$1 n=$(( $2 * 10 ))
	for ((i = 0; i < n; i++)); do
		if curl -fsS -o /dev/null "$url" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "not ready after $2 s: $url" >&2
	return 1
}

start_one() {
	local name=$1 i
	mkdir -p "$CLUSTER_DIR"
	case $name in
	nats-n[123])
		i=$(( ${name#nats-n} - 1 ))
		mkdir -p "$CLUSTER_DIR/$name"
		launch "$name" NATS_NODE="n$((i + 1))" NATS_PORT="${NATS_PORTS[$i]}" NATS_HTTP="127.0.0.1:${NATS_HTTPS[$i]}" \
			NATS_CLUSTER="${NATS_ROUTES[$i]}" NATS_STORE="$CLUSTER_DIR/$name/jetstream" \
			NATS_ROUTE_1="nats-route://127.0.0.1:${NATS_ROUTES[0]}" NATS_ROUTE_2="nats-route://127.0.0.1:${NATS_ROUTES[1]}" \
			NATS_ROUTE_3="nats-route://127.0.0.1:${NATS_ROUTES[2]}" \
			-- "$BIN/nats-server" -c "$ROOT/deploy/local/nats.conf" ;;
	redis)
		mkdir -p "$CLUSTER_DIR/redis"
		launch redis -- redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$CLUSTER_DIR/redis" \
			--appendonly yes --save "" --daemonize no ;;
	stepsim)
		launch stepsim -- "$BIN/stepsim" -addr "127.0.0.1:$STEPSIM_PORT" -latency "$STEP_LATENCY" ;;
	worker-[12] | ingress)
		local role=worker port
		if [[ $name == ingress ]]; then role=ingress port=$INGRESS_PORT; else port=${WORKER_PORTS[$(( ${name#worker-} - 1 ))]}; fi
		launch "$name" NATS_URL="$(nats_urls)" STREAM_REPLICAS=3 REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
			STEPS_BASE_URL="$STEPS_BASE_URL" HTTP_ADDR="127.0.0.1:$port" \
			-- "$BIN/orchestrator" serve --role "$role" ;;
	*)
		echo "unknown process $name (one of: ${NAMES[*]})" >&2
		return 2 ;;
	esac
}

stop_one() {
	local name=$1 f pid
	f=$(pidfile "$name")
	if ! running "$name"; then
		rm -f "$f"
		return 0
	fi
	pid=$(cat "$f")
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "$name: still running 15 s after SIGTERM: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
	echo "$name: stopped (pid $pid)"
}

up() {
	for n in nats-n1 nats-n2 nats-n3 redis stepsim; do start_one "$n"; done
	for i in 0 1 2; do wait_http "http://127.0.0.1:${NATS_HTTPS[$i]}/healthz?js-enabled-only=true" 30; done
	# The streams and the consumer first (3 replicas), once, as a deployment
	# would; each worker applies them again at start-up (no change), and the
	# ingress only checks that they exist.
	local i
	for ((i = 0; i < 100; i++)); do
		if "$BIN/orchestrator" streams apply --nats-url "$(nats_urls)" --stream-replicas 3 >"$CLUSTER_DIR/streams-apply.log" 2>&1; then break; fi
		sleep 0.3
	done
	cat "$CLUSTER_DIR/streams-apply.log"
	for n in worker-1 worker-2; do start_one "$n"; done
	start_one ingress
	wait_http "http://127.0.0.1:${WORKER_PORTS[0]}/readyz" 60
	wait_http "http://127.0.0.1:${WORKER_PORTS[1]}/readyz" 60
	wait_http "http://127.0.0.1:$INGRESS_PORT/readyz" 60
	echo "cluster up: ingress http://127.0.0.1:$INGRESS_PORT, NATS $(nats_urls), Redis 127.0.0.1:$REDIS_PORT"
}

down() {
	# The service first, then what it uses.
	for n in ingress worker-1 worker-2 stepsim nats-n1 nats-n2 nats-n3 redis; do stop_one "$n"; done
}

status() {
	for n in "${NAMES[@]}"; do
		if running "$n"; then echo "$n: running (pid $(cat "$(pidfile "$n")"))"; else echo "$n: stopped"; fi
	done
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
stop) stop_one "${2:?stop NAME}" ;;
start) start_one "${2:?start NAME}" ;;
*) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
