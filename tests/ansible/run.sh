#!/usr/bin/env bash
# Tests the Ansible deployment of huiyan for real, as IT would use it:
#
#   1. ansible-lint (production profile) and --syntax-check of every playbook; a broken inventory
#      must fail the run.
#   2. A Debian bookworm target built with debootstrap (cached), booted with systemd-nspawn in a
#      network namespace of its own, reached over SSH like any real node.
#   3. site.yml applied twice (the second run must change nothing); the unit starts, reaches READY
#      through sd-notify, answers /readyz through the firewall, pings the watchdog, passes
#      `systemd-analyze verify` and `security` (exposure <= 2.0), and stops cleanly; the firewall
#      lets only the node's ports (and SSH) in.
#   4. upgrade.yml replaces the binary and restarts the node; with an unchanged binary it does
#      nothing.
#   5. backup.yml on the running node, restore.yml into a fresh target: same store, same key.
#
# Usage (as root):  HUIYAN_BIN=target/debug/huiyan tests/ansible/run.sh
# Env: HUIYAN_BIN        the huiyan binary to deploy (default target/debug/huiyan)
#      HUIYAN_TEST_CACHE where the debootstrap root and the Python venv are cached
#                        (default /var/cache/huiyan-test)
#      KEEP=1            keep the work dir (logs, inventory, backups) after the run
# Prints "N passed, N failed" at the end; exits non-zero on any failure. Nothing is skipped: if a
# step cannot run (no root, nspawn cannot boot), the test fails and says why.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HUIYAN_BIN=$(realpath -m "${HUIYAN_BIN:-$REPO/target/debug/huiyan}")
CACHE=${HUIYAN_TEST_CACHE:-/var/cache/huiyan-test}
ANSIBLE_CORE_VERSION=2.19.14
ANSIBLE_LINT_VERSION=26.10.1
# Packages of the target root. python3 for Ansible's modules, openssh-server to reach it, sudo for
# `become`, nftables for the role's firewall (the target has no route to a Debian mirror).
TARGET_PACKAGES=systemd,systemd-sysv,dbus,python3,openssh-server,sudo,nftables,iproute2
TARGET_SUITE=bookworm
MIRROR=${HUIYAN_TEST_MIRROR:-http://deb.debian.org/debian}
# Addresses of the test targets: a /30 per target on a veth pair into its own network namespace.
NET_PREFIX=10.213
# The site the targets play; any site config in site-configs/ would do.
SITE=scenic-1
WATCHDOG_SEC=4

passed=0
failed=0
T0=$SECONDS

log() { printf '[ansible-test %4ss] %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
pass() { passed=$((passed + 1)); log "ok: $*"; }
fail() { failed=$((failed + 1)); log "FAILED: $*"; }
check() { # check "what a user would see" command...
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
check_log() { # check_log LOG "what" command...: like check, and shows the end of LOG on failure
    local log_file=$1 what=$2
    shift 2
    if "$@" >"$log_file" 2>&1; then
        pass "$what"
    else
        fail "$what (log: $log_file)"
        tail -n 40 "$log_file" >&2
    fi
}

[[ $(id -u) == 0 ]] || die "must run as root (debootstrap, systemd-nspawn, network namespaces)"
[[ -x $HUIYAN_BIN ]] || die "no huiyan binary at $HUIYAN_BIN: build it or set HUIYAN_BIN"

# --- Tools on the controller -------------------------------------------------------------------
need_pkgs=()
for pair in debootstrap:debootstrap systemd-nspawn:systemd-container nft:nftables \
    openssl:openssl ssh:openssh-client ssh-keygen:openssh-client curl:curl ip:iproute2 \
    objcopy:binutils; do
    command -v "${pair%%:*}" >/dev/null || need_pkgs+=("${pair#*:}")
done
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

VENV=$CACHE/venv-core$ANSIBLE_CORE_VERSION-lint$ANSIBLE_LINT_VERSION
if [[ ! -e $VENV/.complete ]]; then
    log "installing ansible-core $ANSIBLE_CORE_VERSION and ansible-lint $ANSIBLE_LINT_VERSION"
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    timeout 300 "$VENV/bin/pip" install -q "ansible-core==$ANSIBLE_CORE_VERSION" \
        "ansible-lint==$ANSIBLE_LINT_VERSION" || die "pip install of Ansible failed"
    touch "$VENV/.complete"
fi
export PATH=$VENV/bin:$PATH
export ANSIBLE_CONFIG=$REPO/ansible/ansible.cfg
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 ANSIBLE_DEPRECATION_WARNINGS=0

# --- Work dir and teardown -----------------------------------------------------------------------
WORK=$(mktemp -d /var/tmp/huiyan-ansible-test.XXXXXX)
export ANSIBLE_LOG_PATH=$WORK/ansible.log # every task with a time stamp, for diagnosis
# The production ansible.cfg keeps SSH compression (-C), which pays off on mountain links; here,
# on a veth pair, it only burns CPU compressing the binary.
export ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=120s"
# The binary deployed: HUIYAN_BIN without its debug sections (the same program; a debug build is
# 4 to 5 times smaller without them, and every deploy copies and checksums it).
objcopy --strip-debug "$HUIYAN_BIN" "$WORK/huiyan" || die "cannot copy $HUIYAN_BIN"
"$WORK/huiyan" --version >/dev/null || die "$HUIYAN_BIN does not run"
declare -A NSPAWN_PID=() # target name -> pid of its systemd-nspawn
TARGETS=()

summary_printed=0
teardown() {
    local rc=$?
    set +e
    if ((summary_printed == 0)); then
        log "aborted (exit $rc) after the step above"
        printf '%s passed, %s failed\n' "$passed" "$((failed + 1))"
    fi
    for name in "${TARGETS[@]}"; do
        if ((failed > 0 || rc != 0)) && [[ -n ${NSPAWN_PID[$name]:-} ]]; then
            log "journal of huiyan.service on $name:"
            on "$name" journalctl -u huiyan.service -n 40 --no-pager >&2
        fi
        stop_target "$name"
    done
    if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then
        log "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap teardown EXIT
trap 'exit 130' INT TERM

# --- Static checks ---------------------------------------------------------------------------
cd "$REPO/ansible"
check_log "$WORK/lint.log" "ansible-lint --profile production is clean" \
    timeout 300 ansible-lint --profile production --offline .
for pb in site.yml upgrade.yml backup.yml restore.yml; do
    check_log "$WORK/syntax-$pb.log" "$pb passes --syntax-check" \
        timeout 120 ansible-playbook --syntax-check "$pb"
done
printf 'all:\n  hosts: [broken\n' >"$WORK/broken-inventory.yml"
broken_inventory_fails() { # exits non-zero, and says the inventory is why
    ! timeout 120 ansible-playbook -i "$WORK/broken-inventory.yml" site.yml \
        && grep -q 'parse inventory' "$WORK/broken-inventory.log"
}
check_log "$WORK/broken-inventory.log" \
    "a broken inventory fails the run instead of deploying nothing" broken_inventory_fails

# --- The target root (cached) --------------------------------------------------------------------
ROOT_KEY=$(printf '%s minbase %s' "$TARGET_SUITE" "$TARGET_PACKAGES" | sha256sum | cut -c1-12)
ROOT=$CACHE/root-$TARGET_SUITE-$ROOT_KEY
if [[ ! -e $ROOT.complete ]]; then
    log "building the $TARGET_SUITE target root with debootstrap into $ROOT (once; cached)"
    rm -rf "$ROOT"
    mkdir -p "$CACHE"
    timeout 900 debootstrap --variant=minbase --include="$TARGET_PACKAGES" "$TARGET_SUITE" \
        "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    touch "$ROOT.complete"
fi

# --- Targets: a booted copy of the root each, in a network namespace of its own ------------------
ssh-keygen -q -t ed25519 -N '' -C huiyan-ansible-test -f "$WORK/id_ed25519"
SSH_OPTS=(-i "$WORK/id_ed25519" -o BatchMode=yes -o StrictHostKeyChecking=no
    -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=3)
declare -A TARGET_IDX=()

addr_of() { echo "$NET_PREFIX.${TARGET_IDX[$1]}.2"; }
on() { # on TARGET command...: runs a shell command on the target over SSH
    local name=$1
    shift
    timeout 60 ssh "${SSH_OPTS[@]}" "root@$(addr_of "$name")" "$@"
}

boot_target() { # boot_target NAME INDEX
    local name=$1 idx=$2 dir=$WORK/$1
    local ns=huiyan-$name-$$ hostif=hy$idx-$$
    TARGET_IDX[$name]=$idx
    TARGETS+=("$name")
    mkdir -p "$dir"/{upper,work,root}
    # A copy-on-write view of the cached root: the cache stays clean, a fresh target costs nothing.
    mount -t overlay overlay -o "lowerdir=$ROOT,upperdir=$dir/upper,workdir=$dir/work" \
        "$dir/root" || die "cannot mount an overlay on $dir/root"
    install -d -m 0700 "$dir/root/root/.ssh"
    install -m 0600 "$WORK/id_ed25519.pub" "$dir/root/root/.ssh/authorized_keys"
    echo "$name" >"$dir/root/etc/hostname"

    # The target's own network: a veth pair, 10.213.<idx>.1 here and .2 in the target. Its
    # default route leads to this end, which routes nowhere: nothing leaves the machine.
    ip netns add "$ns"
    ip link add "$hostif" type veth peer name host0 netns "$ns"
    ip addr add "$NET_PREFIX.$idx.1/30" dev "$hostif"
    ip link set "$hostif" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$NET_PREFIX.$idx.2/30" dev host0
    ip -n "$ns" link set host0 up
    ip -n "$ns" route add default dev host0

    log "booting target $name ($NET_PREFIX.$idx.2) with systemd-nspawn"
    systemd-nspawn --quiet --directory="$dir/root" --machine="$name" --boot --register=no \
        --keep-unit --console=passive --network-namespace-path="/run/netns/$ns" \
        --capability=CAP_NET_ADMIN \
        >"$dir/console.log" 2>&1 &
    NSPAWN_PID[$name]=$!

    local state="" deadline=$((SECONDS + 90))
    while ((SECONDS < deadline)); do
        kill -0 "${NSPAWN_PID[$name]}" 2>/dev/null \
            || { cat "$dir/console.log" >&2; die "systemd-nspawn exited while booting $name"; }
        state=$(on "$name" systemctl is-system-running --wait 2>/dev/null) && break
        [[ $state == degraded ]] && break
        sleep 1
    done
    [[ $state == running || $state == degraded ]] \
        || { cat "$dir/console.log" >&2; die "target $name did not boot in 90 s (state '$state')"; }
    [[ $state == running ]] || on "$name" systemctl --failed --no-pager >&2 || true
    log "target $name is up ($state)"
}

stop_target() { # stop_target NAME: orderly shutdown, then force; removes mount and namespace
    local name=$1 pid=${NSPAWN_PID[$1]:-}
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" # nspawn asks the container's systemd to power off
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    unset "NSPAWN_PID[$name]"
    if mountpoint -q "$WORK/$name/root"; then
        umount "$WORK/$name/root" 2>/dev/null || umount -l "$WORK/$name/root"
    fi
    ip netns del "huiyan-$name-$$" 2>/dev/null
    ip link del "hy${TARGET_IDX[$name]}-$$" 2>/dev/null
    return 0
}

# --- The test inventory ------------------------------------------------------------------------
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$SITE.huiyan.example" \
    -addext "subjectAltName=DNS:$SITE.huiyan.example,IP:127.0.0.1,IP:$NET_PREFIX.1.2" \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
cat >"$WORK/inventory.yml" <<YAML
# Two machines for the same site: target-a is deployed, upgraded and backed up; target-b is the
# fresh machine the backup is restored into.
all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: $WORK/id_ed25519
    ansible_ssh_common_args: >-
      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
    huiyan_node_site_config: $REPO/site-configs/$SITE.toml
    huiyan_node_build: false
    huiyan_node_binary_src: $WORK/huiyan
    huiyan_node_peer_ids_dir: $WORK/peer-ids
    huiyan_node_tls_cert_src: $WORK/tls/cert.pem
    huiyan_node_tls_key_src: $WORK/tls/key.pem
    huiyan_node_backup_dir: $WORK/backups
    huiyan_node_watchdog_sec: $WATCHDOG_SEC
  children:
    scenic:
      hosts:
        target-a: {ansible_host: $NET_PREFIX.1.2}
        target-b: {ansible_host: $NET_PREFIX.2.2}
YAML

playbook() { # playbook LOG PLAYBOOK [args...]
    local log_file=$1
    shift
    timeout 600 ansible-playbook -i "$WORK/inventory.yml" "$@" >"$log_file" 2>&1
}
recap() { # recap LOG HOST FIELD: a number from the PLAY RECAP line of HOST
    sed -n "s/^$2 *:.* $3=\([0-9]*\).*/\1/p" "$1" | tail -n 1
}
unit() { # unit TARGET PROPERTY: one property of huiyan.service on the target
    on "$1" systemctl show huiyan.service --value -p "$2"
}
http_status() { # http_status URL: the HTTP status, fetched from this machine
    curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "$1" || true
}

# --- Deploy twice --------------------------------------------------------------------------------
boot_target target-a 1
A=$(addr_of target-a)
check_log "$WORK/site-1.log" "site.yml deploys the node on a fresh target" \
    playbook "$WORK/site-1.log" site.yml -l target-a
((failed == 0)) || die "the first deploy failed; the checks after it would only repeat that"
log "first run: changed=$(recap "$WORK/site-1.log" target-a changed)"
pid_before=$(unit target-a MainPID)
check "the node runs after the first deploy (MainPID $pid_before)" test "$pid_before" -gt 0
check_log "$WORK/site-2.log" "site.yml runs again without error" \
    playbook "$WORK/site-2.log" site.yml -l target-a
changed=$(recap "$WORK/site-2.log" target-a changed)
log "second run: changed=$changed"
check "the second site.yml run changes nothing (changed=$changed)" test "$changed" = 0
check "the second run did not restart the node" test "$(unit target-a MainPID)" = "$pid_before"

# --- The unit under systemd ----------------------------------------------------------------------
check "the unit is active and running" \
    test "$(unit target-a ActiveState)/$(unit target-a SubState)" = active/running
# A Type=notify unit becomes active only once the service sent READY=1.
check "the unit is Type=notify, so active means READY=1 arrived" \
    test "$(unit target-a Type)" = notify
status_text=$(unit target-a StatusText)
log "STATUS= of the node: '$status_text'"
check "the node reports a STATUS= line" test -n "$status_text"
check "/readyz answers 200 over HTTPS from outside, through the firewall" \
    test "$(http_status "https://$A:8443/readyz")" = 200

# Watchdog: the unit's WatchdogTimestamp moves with every WATCHDOG=1; after twice WatchdogSec the
# node must still be the same process, never restarted.
wd1=$(unit target-a WatchdogTimestampMonotonic)
sleep $((2 * WATCHDOG_SEC + 1))
wd2=$(unit target-a WatchdogTimestampMonotonic)
log "watchdog: WatchdogUSec=$(unit target-a WatchdogUSec), last ping moved $wd1 -> $wd2"
check "the node pings the watchdog (WatchdogTimestamp moves)" test "$wd2" -gt "$wd1"
check "the node survives 2 x WatchdogSec without a restart" \
    test "$(unit target-a MainPID)/$(unit target-a NRestarts)" = "$pid_before/0"

# The unit file as systemd sees it on the target.
on target-a systemd-analyze verify /etc/systemd/system/huiyan.service >"$WORK/verify.log" 2>&1 \
    || true
check "systemd-analyze verify prints nothing" test ! -s "$WORK/verify.log"
cat "$WORK/verify.log" >&2
on target-a systemd-analyze security --offline=true /etc/systemd/system/huiyan.service \
    >"$WORK/security.log" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for huiyan.service: \([0-9.]*\).*/\1/p' \
    "$WORK/security.log")
log "systemd-analyze security --offline=true: exposure $exposure"
check "exposure ${exposure:-?} <= 2.0" \
    awk -v e="${exposure:-99}" 'BEGIN { exit !(e <= 2.0) }'

# The firewall: something else listening on the target must not be reachable from outside.
on target-a systemd-run --quiet --unit=decoy --working-directory=/tmp \
    /usr/bin/python3 -m http.server 9999 --bind 0.0.0.0
decoy_reachable_only_inside() {
    local probe="import urllib.request as u; u.urlopen('http://127.0.0.1:9999/', timeout=3)"
    local ok=0
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        if on target-a python3 -c "\"$probe\"" 2>/dev/null; then ok=1; break; fi
        sleep 0.5
    done
    ((ok)) || { log "the decoy server does not answer on the target itself"; return 1; }
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$A:9999/" || true) == 000 ]]
}
check "a port the role did not open answers on the target, but not from outside" \
    decoy_reachable_only_inside
on target-a systemctl stop decoy

# A firewall change reloads the firewall, not the node.
pid_before=$(unit target-a MainPID)
check_log "$WORK/site-fw.log" "site.yml with one more UDP port open" \
    playbook "$WORK/site-fw.log" site.yml -l target-a \
    -e '{"huiyan_node_firewall_extra_udp_ports": [5353]}'
nft_opens() { on target-a nft list table inet huiyan | grep -q "udp dport { .*\\b$1\\b"; }
check "the new port is open in nftables" nft_opens 5353
check "a firewall-only change does not restart the node" \
    test "$(unit target-a MainPID)" = "$pid_before"

# Clean stop: SIGTERM, the node exits 0 by itself.
t_stop=$SECONDS
on target-a systemctl stop huiyan
log "systemctl stop took $((SECONDS - t_stop)) s"
check "the node stops cleanly (Result=success, exit status 0)" test \
    "$(unit target-a Result)/$(unit target-a ExecMainCode)/$(unit target-a ExecMainStatus)" \
    = "success/1/0"
on target-a systemctl start huiyan
check "the node starts again" test "$(unit target-a ActiveState)" = active

# --- Upgrade -----------------------------------------------------------------------------------
pid_before=$(unit target-a MainPID)
check_log "$WORK/upgrade-same.log" "upgrade.yml with the installed binary succeeds" \
    playbook "$WORK/upgrade-same.log" upgrade.yml -l target-a
check "upgrade.yml with the installed binary changes nothing" \
    test "$(recap "$WORK/upgrade-same.log" target-a changed)" = 0
check "... and does not restart the node" test "$(unit target-a MainPID)" = "$pid_before"
# A new build: the same program with different bytes (data after the ELF image is ignored).
cp "$WORK/huiyan" "$WORK/huiyan-v2"
printf 'huiyan ansible test %s\n' "$(date +%s%N)" >>"$WORK/huiyan-v2"
check_log "$WORK/upgrade.log" "upgrade.yml rolls a new binary out" \
    playbook "$WORK/upgrade.log" upgrade.yml -l target-a -e "huiyan_node_binary_src=$WORK/huiyan-v2"
check "the node runs the new binary (sha256 matches the controller's)" test \
    "$(on target-a sha256sum /usr/local/bin/huiyan | cut -d' ' -f1)" \
    = "$(sha256sum "$WORK/huiyan-v2" | cut -d' ' -f1)"
check "the upgrade restarted the node" test "$(unit target-a MainPID)" != "$pid_before"
check "the upgraded node is ready" test "$(http_status "https://$A:8443/readyz")" = 200
# The target's roster has no PeerId for the hub (the shipped roster enrols no site), so the
# upgrade reads /api/v1/sync and says that it cannot wait for a hub it cannot sync with.
check "the sync step read /api/v1/sync and said why it did not wait for the hub" \
    grep -q 'sync with the hub not waited for: the hub hub has no PeerId' "$WORK/upgrade.log"

# --- The first admin, as docs/operations.md says: stop the node, add the account, start it ------
ADMIN_PASSWORD=ansible-test-admin
make_admin() {
    on target-a systemctl stop huiyan.service &&
        printf '%s\n' "$ADMIN_PASSWORD" | on target-a runuser -u huiyan -- /usr/local/bin/huiyan \
            user add --config /etc/huiyan/site.toml --username it-admin --name IT \
            --grant "admin@$SITE" --password-stdin &&
        on target-a systemctl start huiyan.service
}
check "huiyan user add creates the first admin on a stopped node" make_admin
sign_in() { # sign_in HOST: a session token of the admin
    curl -sk --max-time 10 -H 'content-type: application/json' \
        -d "{\"username\":\"it-admin\",\"password\":\"$ADMIN_PASSWORD\"}" \
        "https://$1:8443/api/v1/session" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
wait_ready() { # wait_ready HOST: /readyz answers 200 within 30 s
    local i
    for i in $(seq 60); do
        [[ $(http_status "https://$1:8443/readyz") == 200 ]] && return 0
        sleep 0.5
    done
    return 1
}
check "the node is ready again" wait_ready "$A"
TOKEN_A=$(sign_in "$A" || true)
check "the admin signs in at the node" test -n "$TOKEN_A"

# --- Backup from the running node, restore into a fresh machine ----------------------------------
post_records() { # three mediation records on target-a, each acknowledged (201) once durable
    local i code
    for i in 1 2 3; do
        code=$(curl -sk --max-time 10 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
            -H "authorization: Bearer $TOKEN_A" \
            -d "{\"scope\":\"mediation\",\"kind\":\"case\",\"payload\":{\"n\":$i}}" \
            "https://$A:8443/api/v1/records")
        [[ $code == 201 ]] || { echo "record $i: HTTP $code" >&2; return 1; }
    done
}
check "the node acknowledges three records before the backup" post_records
check_log "$WORK/backup.log" "backup.yml backs up the running node" \
    playbook "$WORK/backup.log" backup.yml -l target-a
archive=$(ls "$WORK/backups/$SITE/$SITE"-*.tar.gz 2>/dev/null | tail -n 1)
check "the backup is on the controller" test -s "$archive"
check "the node is active and ready after the backup" \
    test "$(unit target-a ActiveState)/$(http_status "https://$A:8443/readyz")" = active/200
manifest_matches_archive() { # the manifest is honest: it matches the archive's own files
    local x=$WORK/backup-extracted
    mkdir -p "$x" && tar -xzf "$archive" -C "$x" && (cd "$x" && sha256sum --check --quiet --strict \
        "${archive%.tar.gz}.sha256")
}
check "the backup's manifest matches the files in the archive" manifest_matches_archive
check "the backup holds the node key and a store" \
    bash -c "test -s '$WORK/backup-extracted/node.key' && \
             test \$(find '$WORK/backup-extracted' -type f | wc -l) -gt 2"
site_a=$(curl -sk --max-time 5 "https://$A:8443/api/v1/site")
records_a=$(curl -sk --max-time 5 -H "authorization: Bearer $TOKEN_A" \
    "https://$A:8443/api/v1/records?origin=$SITE")
check "the original lists its records" \
    python3 -c 'import json, sys; sys.exit(len(json.loads(sys.argv[1])["records"]) < 3)' "$records_a"

boot_target target-b 2
B=$(addr_of target-b)
check_log "$WORK/restore.log" "restore.yml restores the backup into a fresh machine" \
    playbook "$WORK/restore.log" restore.yml -l target-b -e "huiyan_node_restore_archive=$archive"
check "the restored node is ready" test "$(http_status "https://$B:8443/readyz")" = 200
site_b=$(curl -sk --max-time 5 "https://$B:8443/api/v1/site")
same_site() { # same answer from both nodes, but for their uptime
    python3 -c 'import json, sys
a, b = (json.loads(x) for x in sys.argv[1:])
for d in (a, b): d.pop("uptime_seconds", None)
print("site:", a.get("site"), "peer_id:", a.get("peer_id"), file=sys.stderr)
sys.exit(0 if a == b and a.get("peer_id") else 1)' "$site_a" "$site_b"
}
check "the restored node answers /api/v1/site like the original (same site, PeerId, roster)" \
    same_site
check "the restored node kept the original's key (same PeerId file)" test \
    "$(on target-b cat /var/lib/huiyan/node.key.peer_id)" \
    = "$(on target-a cat /var/lib/huiyan/node.key.peer_id)"
check "the restored node did not make a new key" \
    test "$(on target-b sha256sum /var/lib/huiyan/node.key)" \
    = "$(on target-a sha256sum /var/lib/huiyan/node.key)"
check "restore checked every restored file against the manifest" \
    grep -q 'Check every restored file against the manifest' "$WORK/restore.log"
# Signing in writes an audit record on B: compare the records the original held at the backup.
TOKEN_B=$(sign_in "$B" || true)
records_b=$(curl -sk --max-time 5 -H "authorization: Bearer $TOKEN_B" \
    "https://$B:8443/api/v1/records?origin=$SITE")
same_records() {
    python3 -c 'import json, sys
a, b = (json.loads(x)["records"] for x in sys.argv[1:])
sys.exit(0 if a and b[:len(a)] == a else 1)' "$records_a" "$records_b"
}
check "the restored node holds the same records as the original" same_records

# --- A failed upgrade stops the roll -----------------------------------------------------------
# Both targets now run the node. A binary that cannot start fails the first node (target-a, first
# in inventory order); the roll must stop there and leave target-b alone.
printf '#!/bin/sh\necho "broken build" >&2\nexit 1\n' >"$WORK/huiyan-broken"
chmod +x "$WORK/huiyan-broken"
pid_b=$(unit target-b MainPID)
sum_b=$(on target-b sha256sum /usr/local/bin/huiyan)
playbook "$WORK/upgrade-broken.log" upgrade.yml -e "huiyan_node_binary_src=$WORK/huiyan-broken" \
    && rc_broken=0 || rc_broken=$?
check "upgrade.yml with a binary that cannot start fails (exit $rc_broken)" test "$rc_broken" != 0
check "the roll stopped at the failed node: target-b kept its binary and process" test \
    "$(on target-b sha256sum /usr/local/bin/huiyan)/$(unit target-b MainPID)" = "$sum_b/$pid_b"
not_visited() { local ok; ok=$(recap "$1" "$2" ok); [[ -z $ok || $ok == 0 ]]; }
check "the roll stopped at the failed node: target-b was not visited" \
    not_visited "$WORK/upgrade-broken.log" target-b
check_log "$WORK/upgrade-back.log" "upgrade.yml brings the failed node back with a good binary" \
    playbook "$WORK/upgrade-back.log" upgrade.yml -l target-a \
    -e "huiyan_node_binary_src=$WORK/huiyan-v2"

log "took $((SECONDS - T0)) s"
printf '%s passed, %s failed\n' "$passed" "$failed"
summary_printed=1
((failed == 0))
