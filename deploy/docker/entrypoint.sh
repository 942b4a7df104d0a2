#!/bin/sh
# hsm-gateway container entrypoint.
#
#   serve [--config FILE]   run the gateway (default). Without a config (HSMGW_CONFIG empty) it
#                           runs the embedded default SoftHSM token in HSMGW_STATE_DIR: that
#                           needs the dev image, which bundles SoftHSM2.
#   healthcheck             exit 0 if /readyz answers 200 (the image's HEALTHCHECK)
#   demo                    the demo HTTPS proxy (`npm run demo`, dev image)
#   anything else           passed to the hsm-gateway CLI (sign, keys, --help ...)
#
# Before starting it checks what the gateway would otherwise fail on later with a less direct
# message: the config file, the PKCS#11 module, the PIN file, the state directory. Problems are
# one line each on stderr and exit code 2 (the gateway's own code for a configuration error).
# `exec` makes node PID 1, so SIGTERM (graceful stop) and SIGHUP (TLS reload) reach it.
set -eu

APP_DIR="${HSMGW_APP_DIR:-/app/node_modules/hsm-gateway}"
NODE="${HSMGW_NODE:-node}"
CLI="$APP_DIR/bin/hsm-gateway.js"

fail() {
  echo "entrypoint: $*" >&2
  exit 2
}

check_readable_file() { # $1 = what, $2 = path
  [ -e "$2" ] || fail "$1 $2 does not exist"
  [ -f "$2" ] || fail "$1 $2 is not a regular file"
  [ -r "$2" ] || fail "$1 $2 is not readable by uid $(id -u)"
}

# The port and a loopback host to reach the HTTP (metrics/health) listener from inside.
health_url() {
  listen="${HSMGW_METRICS_LISTEN:-127.0.0.1:9464}"
  port="${listen##*:}"
  host="${listen%:*}"
  case "$host" in
    0.0.0.0 | "") host=127.0.0.1 ;;
    "[::]") host="[::1]" ;;
  esac
  echo "http://$host:$port/readyz"
}

preflight_serve() {
  config="${HSMGW_CONFIG:-}"
  prev=""
  for arg in "$@"; do
    [ "$prev" = "--config" ] && config="$arg"
    case "$arg" in --config=*) config="${arg#--config=}" ;; esac
    prev="$arg"
  done
  [ -f "$CLI" ] || fail "the gateway is not installed at $APP_DIR (missing $CLI)"
  if [ -n "$config" ]; then
    check_readable_file "config file" "$config"
  else
    state="${HSMGW_STATE_DIR:-.hsm-gateway}"
    mkdir -p "$state" 2>/dev/null || fail "no config (HSMGW_CONFIG) and the state directory $state for the embedded default cannot be created; mount a writable volume there"
    [ -w "$state" ] || fail "no config (HSMGW_CONFIG) and the state directory $state for the embedded default is not writable by uid $(id -u); mount a writable volume there"
    [ -e /usr/lib/softhsm/libsofthsm2.so ] \
      || fail "no config (HSMGW_CONFIG) and SoftHSM2 is not in this image: use the dev image, or mount a config and set HSMGW_CONFIG"
  fi
  if [ -n "${HSMGW_PKCS11_MODULE:-}" ]; then
    check_readable_file "PKCS#11 module (HSMGW_PKCS11_MODULE)" "$HSMGW_PKCS11_MODULE"
  fi
  if [ -n "${HSMGW_PIN_FILE:-}" ]; then
    check_readable_file "PIN file (HSMGW_PIN_FILE)" "$HSMGW_PIN_FILE"
    [ -s "$HSMGW_PIN_FILE" ] || fail "PIN file (HSMGW_PIN_FILE) $HSMGW_PIN_FILE is empty"
  fi
}

cmd="${1:-serve}"
[ "$#" -gt 0 ] && shift

case "$cmd" in
  serve)
    preflight_serve "$@"
    exec "$NODE" "$CLI" serve "$@"
    ;;
  healthcheck)
    url="$(health_url)"
    exec "$NODE" -e '
      fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
        .then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1));
    ' "$url"
    ;;
  demo)
    cd "$APP_DIR"
    export npm_config_cache="${TMPDIR:-/tmp}/npm-cache" npm_config_update_notifier=false
    exec npm run --silent demo -- "$@"
    ;;
  *)
    exec "$NODE" "$CLI" "$cmd" "$@"
    ;;
esac
