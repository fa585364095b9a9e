# Sourced by demo.sh and bench.sh: a throwaway single-member etcd on free loopback ports.
# Needs from the caller: $tmp (a private temp dir), die, say, alive.
# `start_etcd NAME` sets etcd_pid and ETCD_ENDPOINT (127.0.0.1:PORT), or dies.
# `start_etcd NAME --tls DIR`: the same with mutual TLS on the client URL (DIR holds ca.crt,
# server.crt, server.key, and client.crt, client.key for the health check; etcd checks client
# certificates against ca.crt); ETCD_ENDPOINT is then https://127.0.0.1:PORT, and the data dir
# and log are etcd-tls.data and etcd-tls.log, so that it can run beside a plain one.

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local p i
  for ((i = 0; i < 50; i++)); do
    p=$((20000 + RANDOM % 40000))
    port_in_use "$p" || { echo "$p"; return 0; }
  done
  return 1
}

start_etcd() {
  local name=$1 attempt cport pport i scheme=http data=etcd.data log=etcd.log
  local tls_flags=() ctl_flags=()
  if [[ ${2:-} == --tls ]]; then
    local d=${3:?start_etcd: --tls needs a directory}
    scheme=https data=etcd-tls.data log=etcd-tls.log
    tls_flags=(--cert-file "$d/server.crt" --key-file "$d/server.key"
      --client-cert-auth --trusted-ca-file "$d/ca.crt")
    ctl_flags=(--cacert "$d/ca.crt" --cert "$d/client.crt" --key "$d/client.key")
  fi
  for ((attempt = 1; attempt <= 4; attempt++)); do
    cport=$(free_port) && pport=$(free_port) || die "no free loopback port"
    [[ $cport != "$pport" ]] || continue
    rm -rf "${tmp:?}/$data"
    # Its own session: a Ctrl-C reaches the candidates (they stop their children and resign)
    # but not etcd, which the caller's cleanup stops last.
    setsid etcd --name "$name" --data-dir "$tmp/$data" \
      --listen-client-urls "$scheme://127.0.0.1:$cport" --advertise-client-urls "$scheme://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "$name=http://127.0.0.1:$pport" --logger zap --log-outputs stderr \
      ${tls_flags[@]+"${tls_flags[@]}"} >"$tmp/$log" 2>&1 &
    etcd_pid=$!
    ETCD_ENDPOINT="127.0.0.1:$cport"
    [[ $scheme == http ]] || ETCD_ENDPOINT="$scheme://127.0.0.1:$cport"
    for ((i = 0; i < 100; i++)); do
      alive "$etcd_pid" || break
      if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINT" ${ctl_flags[@]+"${ctl_flags[@]}"} --command-timeout=1s endpoint health >/dev/null 2>&1; then
        return 0
      fi
      sleep 0.1
    done
    kill -KILL "$etcd_pid" 2>/dev/null || true
    { wait "$etcd_pid"; } 2>/dev/null || true
    etcd_pid=""
    say "etcd did not come up on ports $cport/$pport (attempt $attempt), retrying"
  done
  tail -n 20 "$tmp/$log" >&2 || true
  die "could not start etcd"
}
