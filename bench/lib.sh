# shellcheck shell=bash
# Shared by bench/dhcp, bench/dns and bench/publish (sourced, not run): equal socket receive
# buffers for every server a bench compares, and reading back what the kernel gave each socket
# (rcvbuf_check, which uses the caller's $buf).
#
# net.core.rmem_default/rmem_max are NOT per network namespace on this kernel (inside
# `unshare -n` they are read-only copies of the host's; `sysctl -w` there fails with EINVAL and
# still exits 0), so they are set on the host before the namespace is entered and put back at
# exit: rmem_default=BUF for every socket that does not ask for a size (Kea, dnsmasq, Unbound,
# NSD, the load generators), rmem_max=BUF/2, which caps an SO_RCVBUF request (the kernel doubles
# what is asked, up to 2*rmem_max) to the same BUF. virtdns, privileged, asks with
# SO_RCVBUFFORCE for 4 MiB, which the kernel also doubles: BUF=8388608 makes them all equal.

# Sets the host's rmem_default=$1 and rmem_max=$1/2, remembering the old values for
# rcvbuf_restore (the caller traps EXIT with it). Needs root. One bench at a time: a second
# would take the first one's values for the host's own and put them back at its exit (and
# the two would measure each other's load), so it stops here while another holds the lock.
rcvbuf_set() {
  exec {rcvbuf_lock}>/run/virtdns-bench.lock
  if ! flock -n "$rcvbuf_lock"; then
    echo "another bench is running (it holds /run/virtdns-bench.lock); run one at a time" >&2
    return 1
  fi
  rcvbuf_old_def=$(cat /proc/sys/net/core/rmem_default)
  rcvbuf_old_max=$(cat /proc/sys/net/core/rmem_max)
  echo "$1" >/proc/sys/net/core/rmem_default
  echo $(($1 / 2)) >/proc/sys/net/core/rmem_max
  if [ "$(cat /proc/sys/net/core/rmem_default)" != "$1" ] || [ "$(cat /proc/sys/net/core/rmem_max)" != $(($1 / 2)) ]; then
    echo "could not set net.core.rmem_default=$1 / rmem_max=$(($1 / 2)) on the host" >&2
    return 1
  fi
  echo "host: net.core.rmem_default $rcvbuf_old_def -> $1, rmem_max $rcvbuf_old_max -> $(($1 / 2)) for the run (restored at exit)"
}

rcvbuf_restore() {
  [ -n "${rcvbuf_old_def:-}" ] || return 0
  echo "$rcvbuf_old_def" >/proc/sys/net/core/rmem_default || echo "could not restore net.core.rmem_default=$rcvbuf_old_def" >&2
  echo "$rcvbuf_old_max" >/proc/sys/net/core/rmem_max || echo "could not restore net.core.rmem_max=$rcvbuf_old_max" >&2
}

# The UDP sockets listening on port $1, one line each: address and the receive buffer the
# kernel gave it (ss's skmem rb), in bytes.
socket_rb() {
  ss -lumnH "sport = :$1" | awk '/^UNCONN/{a=$4} /skmem/{match($0, /rb[0-9]+/); print a, substr($0, RSTART + 2, RLENGTH - 2)}'
}

# Checks that every UDP socket on port $2 (only the one at address $3, when given) has the
# receive buffer $buf, and records the first one's address and size for $1 in the file
# $rcvbuf_table (default rb.txt; "who socket rb" lines, the bench's table). Says why and
# returns 1 if a socket differs, or if there is none.
# shellcheck disable=SC2154 # $buf is the caller's, the size every socket must have
rcvbuf_check() { # who port [address]
  local who=$1 port=$2 addr=${3:-} table=${rcvbuf_table:-rb.txt} sock rb seen=""
  while read -r sock rb; do
    [ -z "$addr" ] || [ "$sock" = "$addr:$port" ] || continue
    seen=1
    if [ "$rb" != "$buf" ]; then
      echo "$who's socket $sock has rb $rb, not $buf: receive buffers would differ" >&2
      return 1
    fi
    grep -q "^$who " "$table" 2>/dev/null || printf '%-9s %-22s %10s\n' "$who" "$sock" "$rb" >>"$table"
  done < <(socket_rb "$port")
  [ -n "$seen" ] || { echo "$who: no socket on port $port${addr:+ at $addr} to read the receive buffer of" >&2; return 1; }
}

# virtdns's metrics page (its [metrics] endpoint at $1, default 127.0.0.1:9153), on stdout.
# Returns 1, saying so, when it cannot be read.
metrics_scrape() { # [host:port]
  local at=${1:-127.0.0.1:9153} body
  if ! exec 3<>"/dev/tcp/${at%:*}/${at##*:}" 2>/dev/null; then
    echo "virtdns's metrics at $at cannot be read" >&2
    return 1
  fi
  printf 'GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n' >&3
  body=$(cat <&3)
  exec 3<&-
  printf '%s\n' "$body"
}
