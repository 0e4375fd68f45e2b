#!/usr/bin/env bash
# Dovecot comparison of the example mail server (examples/mailserver): the same load generator
# (benches/dovecot/loadgen.rs, the `mailbench` example) against Dovecot 2.3 and against the example, both on
# loopback, both in full durability (Dovecot: mail_fsync = always; mailstore: Durability::Full).
#
#   1. LMTP deliveries per second: 16 concurrent connections, 10 KB messages, one recipient per transaction
#      (16 users, one per connection), every delivery acknowledged only once durable.
#   2. IMAP FETCH of the newest 50 envelopes (`FETCH n-49:n (ENVELOPE)`) in a 10,000-message INBOX: p50 / p99.
#
# Needs root (it installs dovecot-imapd and dovecot-lmtpd from the Debian packages when missing, and runs
# Dovecot's mail processes as a throw-away `vmail` user). Dovecot runs from a throw-away configuration that
# listens on 127.0.0.1 only; nothing of the system's Dovecot configuration is used or changed.
#
#   benches/dovecot/compare.sh                 # defaults below
#   MESSAGES=8000 FILL=10000 benches/dovecot/compare.sh
#
# The working directory is under ./target, on the same disk as the repository (not /tmp, which may be tmpfs, where
# fsync is free).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=never
target=${CARGO_TARGET_DIR:-target}

CONNECTIONS=${CONNECTIONS:-16}
MESSAGES=${MESSAGES:-6000}
SIZE=${SIZE:-10240}
FILL=${FILL:-10000}
ITERATIONS=${ITERATIONS:-500}
WINDOW=${WINDOW:-50}
# Dovecot's mailbox format: maildir (the classic default), or sdbox / mdbox (Dovecot's own formats).
MAIL_FORMAT=${MAIL_FORMAT:-maildir}
D_IMAP=${D_IMAP:-127.0.0.1:31143}
D_LMTP=${D_LMTP:-127.0.0.1:32424}
M_IMAP=${M_IMAP:-127.0.0.1:41143}
M_LMTP=${M_LMTP:-127.0.0.1:42424}

if ! command -v dovecot > /dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dovecot-imapd dovecot-lmtpd
fi
id vmail > /dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin vmail

cargo build --release --example mailserver --example mailbench
bench="$target/release/examples/mailbench"
server="$target/release/examples/mailserver"

mkdir -p target
work=$(mktemp -d "$PWD/target/bench-dovecot.XXXXXX")
chmod 755 "$work" # Dovecot's auth and mail processes run as other users
dpid=""
mpid=""
cleanup() {
    [ -n "$dpid" ] && kill "$dpid" 2> /dev/null && wait "$dpid" 2> /dev/null || true
    [ -n "$mpid" ] && kill "$mpid" 2> /dev/null && wait "$mpid" 2> /dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

users=""
for i in $(seq 1 "$CONNECTIONS"); do users="$users${users:+,}user$i@example.com"; done
FETCH_USER=reader@example.com

wait_port() { # host:port
    for _ in $(seq 1 200); do
        if (exec 3<> "/dev/tcp/${1%:*}/${1##*:}") 2> /dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1"
    return 1
}

run_load() { # name imap lmtp
    local name=$1 imap=$2 lmtp=$3
    echo "== $name: LMTP, $CONNECTIONS connections, $MESSAGES messages of $SIZE bytes"
    "$bench" lmtp --addr "$lmtp" --connections "$CONNECTIONS" --messages "$MESSAGES" --size "$SIZE" --rcpt "$users" \
        | tee "$work/$name.lmtp"
    echo "== $name: filling $FETCH_USER with $FILL messages"
    "$bench" lmtp --addr "$lmtp" --connections "$CONNECTIONS" --messages "$FILL" --size 4096 --rcpt "$FETCH_USER" \
        | tee "$work/$name.fill"
    echo "== $name: IMAP FETCH of the newest $WINDOW envelopes, $ITERATIONS times"
    "$bench" imap-fetch --addr "$imap" --user "$FETCH_USER" --password secret --iterations "$ITERATIONS" \
        --window "$WINDOW" | tee "$work/$name.fetch"
}

# ---- Dovecot ----
mkdir -p "$work/dovecot/mail" "$work/dovecot/run"
chmod 755 "$work/dovecot"
chown vmail:vmail "$work/dovecot/mail"
: > "$work/dovecot/passwd"
for u in ${users//,/ } "$FETCH_USER"; do echo "$u:{PLAIN}secret::::::" >> "$work/dovecot/passwd"; done
vmail_uid=$(id -u vmail)
cat > "$work/dovecot/dovecot.conf" << CONF
# Throw-away configuration for the comparison: loopback only, plaintext auth, fsync always.
instance_name = mailstore-bench
base_dir = $work/dovecot/run
state_dir = $work/dovecot/state
protocols = imap lmtp
listen = 127.0.0.1
log_path = $work/dovecot/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = $vmail_uid
mail_uid = vmail
mail_gid = vmail
mail_location = $MAIL_FORMAT:$work/dovecot/mail/%u
mail_fsync = always
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $work/dovecot/passwd
}
userdb {
  driver = static
  args = uid=vmail gid=vmail home=$work/dovecot/mail/%u
}
service imap-login {
  inet_listener imap {
    address = ${D_IMAP%:*}
    port = ${D_IMAP##*:}
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = ${D_LMTP%:*}
    port = ${D_LMTP##*:}
  }
}
protocol lmtp {
  postmaster_address = postmaster@example.com
}
CONF
dovecot --version | tee "$work/dovecot.version"
dovecot -F -c "$work/dovecot/dovecot.conf" &
dpid=$!
wait_port "$D_LMTP"
wait_port "$D_IMAP"
run_load dovecot "$D_IMAP" "$D_LMTP"
kill "$dpid"
wait "$dpid" 2> /dev/null || true
dpid=""

# ---- mailstore example ----
mkdir -p "$work/mailstore"
: > "$work/mailstore/users"
for u in ${users//,/ } "$FETCH_USER"; do echo "$u:{PLAIN}secret:db1" >> "$work/mailstore/users"; done
"$server" --store "$work/mailstore/store" --users "$work/mailstore/users" --imap "$M_IMAP" --lmtp "$M_LMTP" \
    2> "$work/mailstore/server.log" &
mpid=$!
wait_port "$M_LMTP"
wait_port "$M_IMAP"
run_load mailstore "$M_IMAP" "$M_LMTP"
kill "$mpid"
wait "$mpid" || { cat "$work/mailstore/server.log"; exit 1; }
mpid=""

# ---- summary ----
rate() { sed -n 's/.*: \([0-9]*\) deliveries\/s.*/\1/p' "$1"; }
p() { sed -n "s/.* $2 \([0-9.]*\) ms.*/\1/p" "$1"; }
dr=$(rate "$work/dovecot.lmtp")
mr=$(rate "$work/mailstore.lmtp")
echo
echo "| | Dovecot $(cut -d' ' -f1 "$work/dovecot.version") ($MAIL_FORMAT, mail_fsync=always) | mailstore example (Durability::Full) | ratio |"
echo "|---|---:|---:|---:|"
echo "| LMTP deliveries/s ($CONNECTIONS conns, $SIZE B) | $dr | $mr | $(awk -v a="$mr" -v b="$dr" 'BEGIN { printf "%.2fx", a / b }') |"
echo "| FETCH newest $WINDOW ENVELOPE p50 (ms) | $(p "$work/dovecot.fetch" p50) | $(p "$work/mailstore.fetch" p50) | |"
echo "| FETCH newest $WINDOW ENVELOPE p99 (ms) | $(p "$work/dovecot.fetch" p99) | $(p "$work/mailstore.fetch" p99) | |"
echo "| (machine) | $(nproc) cores, $(uname -r) | | |"
