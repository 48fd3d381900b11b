#!/usr/bin/env bash
# Apply (or revert) the kernel settings for a ringcast LOAD TEST on a test machine.
#
#   sudo tuning/apply-loadtest.sh             apply; saves the old values first
#   tuning/apply-loadtest.sh --dry-run        show what would change (no root needed)
#   sudo tuning/apply-loadtest.sh --revert    restore the saved values, delete the save file
#   options: --state-file PATH (default /var/tmp/ringcast-loadtest-sysctl.saved)
#
# Touches only these sysctls, and only ever RAISES them (never lowers a value that is
# already higher, so it is safe on tuned machines); nothing is persisted (a reboot also
# reverts):
#   net.core.somaxconn            listen() backlog cap: ringcast asks for 65535 per shard
#   net.ipv4.tcp_max_syn_backlog  half-open connections queued during a connect storm
#   net.core.netdev_max_backlog   per-CPU input queue; loopback traffic goes through it too
#   net.ipv4.ip_local_port_range  ephemeral ports for the load client, per source address
#   net.ipv4.tcp_tw_reuse         reuse TIME_WAIT ports for new outgoing connections
#   fs.file-max, fs.nr_open       system-wide / per-process fd ceilings (if writable)
# It does not change ulimits, conntrack, memory settings, services or anything else; it
# only prints the open-file limit and conntrack use for information.
set -euo pipefail

STATE_FILE=/var/tmp/ringcast-loadtest-sysctl.saved
MODE=apply
DRY_RUN=0

usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --revert) MODE=revert ;;
    --state-file) [ $# -ge 2 ] || { echo "--state-file needs a path" >&2; exit 64; }
                  STATE_FILE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
  shift
done

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "run as root (or use --dry-run)" >&2
  exit 1
fi

# key | wanted value | why
SETTINGS=(
  "net.core.somaxconn|65535|listen() backlog cap; ringcast asks for 65535 per shard"
  "net.ipv4.tcp_max_syn_backlog|65535|SYN queue for connect storms (storm scenario)"
  "net.core.netdev_max_backlog|16384|per-CPU input queue; loopback bursts drop beyond it"
  "net.ipv4.ip_local_port_range|10240 65535|55k ephemeral ports per source address (8080 stays outside)"
  "net.ipv4.tcp_tw_reuse|1|reuse TIME_WAIT ports for new outgoing connections"
  "fs.file-max|2097152|system-wide open files: server + client sockets (2 fds per loopback conn)"
  "fs.nr_open|1048576|per-process fd ceiling (RLIMIT_NOFILE cannot exceed it)"
)

path_of() { echo "/proc/sys/${1//.//}"; }
read_key() {
  local p; p=$(path_of "$1")
  [ -r "$p" ] || { echo "(missing)"; return; }
  # normalise tabs/multiple spaces ("32768	60999" -> "32768 60999")
  tr -s '\t ' '  ' <"$p" | sed 's/ *$//'
}
writable() {
  local p; p=$(path_of "$1")
  [ -e "$p" ] && [ -w "$p" ]
}
write_key() {
  local p; p=$(path_of "$1")
  printf '%s\n' "$2" >"$p"
}

# The value to set: never lower anything. Ranges widen (min of lows, max of highs);
# tcp_tw_reuse is a mode (0 off, 1 on, 2 loopback only): set 1 unless it already is 1.
target_for() {
  local key=$1 want=$2 cur=$3
  case "$key" in
    net.ipv4.ip_local_port_range)
      local clo chi wlo whi
      read -r clo chi <<<"$cur"; read -r wlo whi <<<"$want"
      [ "$clo" -lt "$wlo" ] && wlo=$clo
      [ "$chi" -gt "$whi" ] && whi=$chi
      echo "$wlo $whi" ;;
    net.ipv4.tcp_tw_reuse) echo "$want" ;;
    *) if [ "$cur" -ge "$want" ]; then echo "$cur"; else echo "$want"; fi ;;
  esac
}

info() {
  echo
  echo "For information (not changed by this script):"
  echo "  open files of this shell: soft $(ulimit -Sn), hard $(ulimit -Hn)" \
       "(each loadtest worker and the server need one fd per connection; see tuning/README.md)"
  if [ -r /proc/sys/net/netfilter/nf_conntrack_max ]; then
    echo "  conntrack: $(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo '?')" \
         "entries in use of nf_conntrack_max $(cat /proc/sys/net/netfilter/nf_conntrack_max)" \
         "(1 per connection when tracked)"
  else
    echo "  conntrack: not loaded"
  fi
  echo "  loopback source addresses for the client: 127.0.0.0/8 is all local on Linux;" \
       "use loadtest --src-ips 127.0.0.2-127.0.0.9"
}

status=0
tag=""; [ "$DRY_RUN" = 1 ] && tag=" (dry run: nothing written)"

if [ "$MODE" = apply ]; then
  echo "ringcast load-test sysctls: apply$tag"
  printf '%-30s %-15s %-15s %s\n' KEY BEFORE AFTER NOTE
  saved=()
  for entry in "${SETTINGS[@]}"; do
    IFS='|' read -r key want why <<<"$entry"
    cur=$(read_key "$key")
    if [ "$cur" = "(missing)" ]; then
      printf '%-30s %-15s %-15s %s\n' "$key" "-" "-" "not on this kernel: skipped"
      continue
    fi
    target=$(target_for "$key" "$want" "$cur")
    if [ "$target" = "$cur" ]; then
      printf '%-30s %-15s %-15s %s\n' "$key" "$cur" "$cur" "already enough: unchanged"
      continue
    fi
    if [ "$DRY_RUN" = 1 ] && [ "$(id -u)" != 0 ]; then
      printf '%-30s %-15s %-15s %s\n' "$key" "$cur" "$target" "would set (as root): $why"
      continue
    fi
    if ! writable "$key"; then
      printf '%-30s %-15s %-15s %s\n' "$key" "$cur" "$cur" "not writable here: skipped (wanted $target)"
      continue
    fi
    if [ "$DRY_RUN" = 1 ]; then
      printf '%-30s %-15s %-15s %s\n' "$key" "$cur" "$target" "would set: $why"
      continue
    fi
    if write_key "$key" "$target" 2>/dev/null; then
      saved+=("$key=$cur")
      after=$(read_key "$key")
      note="set: $why"
      [ "$after" = "$target" ] || { note="kernel kept $after (asked $target)"; status=1; }
      printf '%-30s %-15s %-15s %s\n' "$key" "$cur" "$after" "$note"
    else
      printf '%-30s %-15s %-15s %s\n' "$key" "$cur" "$cur" "write failed: skipped"
      status=1
    fi
  done
  if [ "$DRY_RUN" = 0 ] && [ "${#saved[@]}" -gt 0 ]; then
    # Keep the ORIGINAL values if the script runs twice: only add keys not saved yet.
    touch "$STATE_FILE"
    chmod 0644 "$STATE_FILE"
    for kv in "${saved[@]}"; do
      grep -q "^${kv%%=*}=" "$STATE_FILE" || printf '%s\n' "$kv" >>"$STATE_FILE"
    done
    echo
    echo "old values saved to $STATE_FILE; undo with: $0 --revert"
  elif [ "$DRY_RUN" = 0 ]; then
    echo
    echo "nothing changed"
  fi
  info
else
  echo "ringcast load-test sysctls: revert$tag"
  if [ ! -s "$STATE_FILE" ]; then
    echo "no saved values in $STATE_FILE: nothing to revert"
    exit 0
  fi
  printf '%-30s %-15s %-15s %s\n' KEY BEFORE AFTER NOTE
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    key=${line%%=*}; old=${line#*=}
    # only the keys this script manages
    known=0
    for entry in "${SETTINGS[@]}"; do [ "${entry%%|*}" = "$key" ] && known=1; done
    if [ "$known" = 0 ]; then
      printf '%-30s %-15s %-15s %s\n' "$key" "-" "-" "not managed by this script: ignored"
      continue
    fi
    cur=$(read_key "$key")
    if [ "$DRY_RUN" = 1 ]; then
      printf '%-30s %-15s %-15s %s\n' "$key" "$cur" "$old" "would restore"
      continue
    fi
    if write_key "$key" "$old" 2>/dev/null && [ "$(read_key "$key")" = "$old" ]; then
      printf '%-30s %-15s %-15s %s\n' "$key" "$cur" "$old" "restored"
    else
      printf '%-30s %-15s %-15s %s\n' "$key" "$cur" "$(read_key "$key")" "restore FAILED (wanted $old)"
      status=1
    fi
  done <"$STATE_FILE"
  if [ "$DRY_RUN" = 0 ]; then
    if [ "$status" = 0 ]; then
      rm -f "$STATE_FILE"
      echo
      echo "all restored; removed $STATE_FILE"
    else
      echo
      echo "some values were not restored; kept $STATE_FILE"
    fi
  fi
fi
exit "$status"
