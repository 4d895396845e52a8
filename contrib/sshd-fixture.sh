# shellcheck shell=bash
# contrib/sshd-fixture.sh — a throwaway private OpenSSH server for hoardcc demos and benchmarks.
#
# Sourced (not run) by contrib/demo.sh, bench/run.sh and bench/rss.sh. It starts a private
# sshd on 127.0.0.1 on a random free port, in a temp dir that holds everything: host key,
# sshd_config, authorized_keys, a copy of the hoardcc binary for `Subsystem hoardcc`, and
# a client HOME whose ~/.ssh has a key, known_hosts and a config with `Host hoardtest`.
# Nothing outside the temp dir is touched, except (as root) creating the login user
# `hoardtest` and /run/sshd. A trap on EXIT stops sshd and everything registered with
# hf_track_pid / hf_defer, then removes the dir.
#
# Usage:
#   . contrib/sshd-fixture.sh
#   HF_SERVER_JOBS=8               # (optional) `max_jobs` of the server's hoardcc serve
#   hf_start [PATH/TO/hoardcc]     # exports HF_DIR HF_PORT HF_USER HF_HOME HF_SSH_CONFIG HF_SERVE_BIN
#                                  #   HF_SERVER_CACHE (the server's $XDG_CACHE_HOME/hoardcc)
#   hf_run CMD...                  # run CMD as the client: HOME=$HF_HOME, private XDG dirs, no agent
#   hf_ssh CMD...                  # ssh -F $HF_SSH_CONFIG hoardtest CMD...
#   hf_add_hosts N                 # a second sshd on N more ports; ssh aliases host1..hostN
#   hf_add_alias ALIAS PORT [KEY]  # another ssh alias (and known_hosts line) for 127.0.0.1:PORT
#
# Besides the Subsystem key, the client has a compile-only key ($HF_HOME/.ssh/id_forced,
# alias hoardtest-forced), installed as `restrict,command="... hoardcc serve"` the way
# contrib/authorized_keys.example installs a build key: whatever it asks for, sshd runs serve.
#   hf_track_pid PID               # kill PID's process group (or PID) at cleanup
#   hf_defer 'shell command'       # run at cleanup (before sshd is stopped)
#
# Requires: /usr/sbin/sshd, ssh, ssh-keygen (Debian: openssh-server, openssh-client).

HF_SSHD=${HF_SSHD:-/usr/sbin/sshd}
HF_DEFERRED=()
HF_PIDS=()

hf_die() {
    echo "sshd-fixture: $*" >&2
    exit 1
}

# Wait until $1 (a shell condition) is true, polling every 0.1 s, for at most $2 seconds.
hf_wait_for() {
    local cond=$1 secs=${2:-10} i
    for ((i = 0; i < secs * 10; i++)); do
        eval "$cond" && return 0
        sleep 0.1
    done
    return 1
}

hf_port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

hf_track_pid() {
    HF_PIDS+=("$1")
}

hf_defer() {
    HF_DEFERRED+=("$1")
}

hf_cleanup() {
    local rc=$? cmd pid
    trap - EXIT INT TERM
    # Best effort from here on, even in a `set -e` script: a process already gone is fine.
    set +e
    for cmd in "${HF_DEFERRED[@]}"; do
        eval "$cmd" >/dev/null 2>&1 || true
    done
    if [[ -n ${HF_SSH_CONFIG:-} ]] && compgen -G "$HF_DIR/cm-*" >/dev/null; then
        ssh -F "$HF_SSH_CONFIG" -O exit hoardtest >/dev/null 2>&1 || true
    fi
    # A hoardcc mux that --stop did not end (it carries this fixture's XDG_RUNTIME_DIR): give
    # it a few seconds to close its connections, then end it.
    hf_wait_for '[[ -z $(hf_client_pids hoardcc) ]]' 5
    for pid in $(hf_client_pids hoardcc); do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${HF_PIDS[@]}"; do
        # Started with setsid: the pid is a process-group leader; fall back to the pid alone.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    if [[ -n ${HF_DIR:-} && -f $HF_DIR/sshd.pid ]]; then
        pid=$(cat "$HF_DIR/sshd.pid" 2>/dev/null)
        [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null
    fi
    if [[ -n ${HF_SSHD_PID:-} ]]; then
        kill -TERM "$HF_SSHD_PID" 2>/dev/null
        hf_wait_for '! kill -0 $HF_SSHD_PID 2>/dev/null' 5 || kill -KILL "$HF_SSHD_PID" 2>/dev/null
    fi
    for pid in "${HF_PIDS[@]}"; do
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ -n ${HF_DIR:-} && -d $HF_DIR && ${HF_KEEP:-0} != 1 ]]; then
        rm -rf "$HF_DIR"
    fi
    exit "$rc"
}

# hf_client_pids PATTERN — pids of processes matching PATTERN (pgrep -f) that were started
# through hf_run of this fixture (their environment names its private runtime dir).
hf_client_pids() {
    local pid
    [[ -n ${HF_DIR:-} ]] || return 0
    for pid in $(pgrep -f "$1" 2>/dev/null); do
        if tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "XDG_RUNTIME_DIR=$HF_DIR/run"; then
            echo "$pid"
        fi
    done
}

# Run a command as the fixture's client: its HOME (so ~/.ssh/config and known_hosts are the
# fixture's), private XDG runtime/config/state dirs (so a hoardcc mux is private too), and no
# ssh agent.
hf_run() {
    env -u SSH_AUTH_SOCK \
        HOME="$HF_HOME" \
        XDG_RUNTIME_DIR="$HF_DIR/run" \
        XDG_CONFIG_HOME="$HF_HOME/.config" \
        XDG_STATE_HOME="$HF_HOME/.local/state" \
        "$@"
}

hf_ssh() {
    hf_run ssh -F "$HF_SSH_CONFIG" hoardtest "$@"
}

# Make sure a login user exists; sets HF_USER.
hf_login_user() {
    if [[ $(id -u) == 0 ]]; then
        HF_USER=hoardtest
        if ! id "$HF_USER" >/dev/null 2>&1; then
            useradd --create-home --shell /bin/sh "$HF_USER" || hf_die "useradd $HF_USER failed"
        fi
        # Without PAM, sshd refuses accounts whose password field is locked ("!"); "*" means
        # "no password" without locking the account (keys still work).
        if [[ $(getent shadow "$HF_USER" | cut -d: -f2) == '!'* ]]; then
            usermod -p '*' "$HF_USER" || hf_die "usermod -p '*' $HF_USER failed"
        fi
        mkdir -p /run/sshd && chmod 755 /run/sshd
    else
        HF_USER=$(id -un)
    fi
}

# hf_start [HOARDCC_BINARY] — start sshd; export the HF_* variables; install the cleanup trap.
# hf_add_alias ALIAS PORT [KEY] — a client `Host ALIAS` block reaching the fixture's login
# user on 127.0.0.1:PORT with KEY (default the Subsystem key), and a known_hosts line
# trusting the fixture's host key there.
hf_add_alias() {
    local alias=$1 port=$2 key=${3:-$HF_HOME/.ssh/id_ed25519} pubkey
    pubkey=$(cut -d' ' -f1,2 "$HF_DIR/host_ed25519.pub")
    echo "[127.0.0.1]:$port $pubkey" >>"$HF_HOME/.ssh/known_hosts"
    cat >>"$HF_SSH_CONFIG" <<EOF
Host $alias
    HostName 127.0.0.1
    Port $port
    User $HF_USER
    IdentityFile $key
    IdentitiesOnly yes
    UserKnownHostsFile $HF_HOME/.ssh/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
EOF
}

hf_start() {
    local bin=${1:-} port
    [[ -x $HF_SSHD ]] || hf_die "$HF_SSHD not found (Debian: apt-get install openssh-server)"
    command -v ssh-keygen >/dev/null || hf_die "ssh-keygen not found (Debian: apt-get install openssh-client)"
    hf_login_user

    HF_DIR=$(mktemp -d "${TMPDIR:-/tmp}/hoardcc-fixture.XXXXXX") || hf_die "mktemp failed"
    trap hf_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # The login user must reach bin/ and authorized_keys; the client's files stay private.
    chmod 755 "$HF_DIR"
    mkdir -p "$HF_DIR/bin" "$HF_DIR/run" "$HF_DIR/home/.ssh"
    chmod 700 "$HF_DIR/run" "$HF_DIR/home" "$HF_DIR/home/.ssh"
    HF_HOME=$HF_DIR/home
    HF_SSH_CONFIG=$HF_HOME/.ssh/config
    HF_SERVE_BIN=$HF_DIR/bin/hoardcc
    if [[ -n $bin ]]; then
        [[ -x $bin ]] || hf_die "not an executable: $bin"
        cp "$bin" "$HF_SERVE_BIN" && chmod 755 "$HF_SERVE_BIN"
    fi

    ssh-keygen -q -t ed25519 -N '' -C hoardcc-fixture-host -f "$HF_DIR/host_ed25519" </dev/null ||
        hf_die "ssh-keygen (host key) failed"
    ssh-keygen -q -t ed25519 -N '' -C hoardcc-fixture-client -f "$HF_HOME/.ssh/id_ed25519" </dev/null ||
        hf_die "ssh-keygen (client key) failed"
    cp "$HF_HOME/.ssh/id_ed25519.pub" "$HF_DIR/authorized_keys"
    ssh-keygen -q -t ed25519 -N '' -C hoardcc-fixture-forced -f "$HF_HOME/.ssh/id_forced" </dev/null ||
        hf_die "ssh-keygen (compile-only key) failed"
    printf 'restrict,command="/usr/bin/env HOARDCC_SERVER_CONFIG=%s HOARDCC_SLOT_DIR=%s XDG_CACHE_HOME=%s %s serve" %s\n' \
        "$HF_DIR/server.toml" "$HF_DIR/slots" "$HF_DIR/server-cache" "$HF_SERVE_BIN" "$(cat "$HF_HOME/.ssh/id_forced.pub")" \
        >>"$HF_DIR/authorized_keys"
    # The server's compile slots: like `distccd --jobs N`, sized for the clients' -jN rather
    # than this machine's CPU count (hoardcc serve's default), so a job is not refused as busy;
    # and a private slot directory (HOARDCC_SLOT_DIR), so other hoardcc servers on this
    # machine do not share the count.
    printf '[server]\nmax_jobs = %d\n' "${HF_SERVER_JOBS:-8}" >"$HF_DIR/server.toml"
    chmod 644 "$HF_DIR/server.toml"
    mkdir -p "$HF_DIR/slots" && chmod 1777 "$HF_DIR/slots"
    # The server's own cache (chunk store, result cache: $XDG_CACHE_HOME/hoardcc) lives in
    # the fixture too, so a benchmark can empty it ($HF_SERVER_CACHE) without touching the
    # login user's real ~/.cache.
    mkdir -p "$HF_DIR/server-cache" && chmod 1777 "$HF_DIR/server-cache"
    HF_SERVER_CACHE=$HF_DIR/server-cache/hoardcc
    chmod 644 "$HF_DIR/authorized_keys"

    for _ in 1 2 3 4 5 6 7 8; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        hf_port_busy "$port" && continue
        cat >"$HF_DIR/sshd_config" <<EOF
ListenAddress 127.0.0.1:$port
HostKey $HF_DIR/host_ed25519
PidFile $HF_DIR/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile $HF_DIR/authorized_keys
AllowUsers $HF_USER
UseDNS no
PrintMotd no
MaxStartups 200
MaxSessions 64
LogLevel ERROR
Subsystem hoardcc /usr/bin/env HOARDCC_SERVER_CONFIG=$HF_DIR/server.toml HOARDCC_SLOT_DIR=$HF_DIR/slots XDG_CACHE_HOME=$HF_DIR/server-cache $HF_SERVE_BIN serve
EOF
        "$HF_SSHD" -t -f "$HF_DIR/sshd_config" 2>"$HF_DIR/sshd.log" ||
            hf_die "sshd rejected its config: $(cat "$HF_DIR/sshd.log")"
        "$HF_SSHD" -D -e -f "$HF_DIR/sshd_config" 2>>"$HF_DIR/sshd.log" &
        HF_SSHD_PID=$!
        if hf_wait_for 'hf_port_busy $port || ! kill -0 $HF_SSHD_PID 2>/dev/null' 10 &&
            kill -0 "$HF_SSHD_PID" 2>/dev/null; then
            break
        fi
        kill "$HF_SSHD_PID" 2>/dev/null
        wait "$HF_SSHD_PID" 2>/dev/null
        HF_SSHD_PID=
    done
    [[ -n ${HF_SSHD_PID:-} ]] || hf_die "could not start sshd: $(cat "$HF_DIR/sshd.log")"
    HF_PORT=$port

    : >"$HF_HOME/.ssh/known_hosts"
    : >"$HF_SSH_CONFIG"
    hf_add_alias hoardtest "$HF_PORT"
    hf_add_alias hoardtest-forced "$HF_PORT" "$HF_HOME/.ssh/id_forced"
    chmod 600 "$HF_SSH_CONFIG" "$HF_HOME/.ssh/known_hosts"
    export HF_DIR HF_PORT HF_USER HF_HOME HF_SSH_CONFIG HF_SERVE_BIN HF_SERVER_CACHE

    hf_ssh true </dev/null 2>"$HF_DIR/ssh-check.log" ||
        hf_die "ssh login to the fixture failed: $(cat "$HF_DIR/ssh-check.log" "$HF_DIR/sshd.log")"
}

# hf_ports_busy PORT... — true when every PORT accepts connections.
hf_ports_busy() {
    local p
    for p in "$@"; do
        hf_port_busy "$p" || return 1
    done
}

# hf_add_hosts N — make the one server look like N distinct hosts: a second sshd (same
# host key, login user and Subsystem line as the first) listening on N more random ports,
# and client ssh config aliases host1..hostN (HostName 127.0.0.1, each its own Port) with
# a `[127.0.0.1]:PORT` known_hosts entry each. Exports HF_HOST_PORTS (the N ports, in
# alias order). Call after hf_start.
hf_add_hosts() {
    local n=$1 i port ports=() listen pid=
    for _ in 1 2 3 4 5; do
        ports=()
        listen=
        while ((${#ports[@]} < n)); do
            port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
            [[ $port == "$HF_PORT" || " ${ports[*]} " == *" $port "* ]] && continue
            hf_port_busy "$port" && continue
            ports+=("$port")
            listen+="ListenAddress 127.0.0.1:$port"$'\n'
        done
        # The first sshd's config with its ListenAddress and PidFile replaced.
        {
            printf '%s' "$listen"
            grep -v -e '^ListenAddress ' -e '^PidFile ' "$HF_DIR/sshd_config"
            echo "PidFile $HF_DIR/sshd-hosts.pid"
        } >"$HF_DIR/sshd_config.hosts"
        "$HF_SSHD" -t -f "$HF_DIR/sshd_config.hosts" 2>>"$HF_DIR/sshd-hosts.log" ||
            hf_die "sshd rejected its config: $(cat "$HF_DIR/sshd-hosts.log")"
        : >"$HF_DIR/sshd-hosts.log"
        "$HF_SSHD" -D -e -f "$HF_DIR/sshd_config.hosts" 2>>"$HF_DIR/sshd-hosts.log" &
        pid=$!
        # sshd carries on when only some of its ports could be bound: wait for all of them.
        if hf_wait_for 'hf_ports_busy "${ports[@]}" || ! kill -0 $pid 2>/dev/null' 10 &&
            kill -0 "$pid" 2>/dev/null && hf_ports_busy "${ports[@]}"; then
            hf_track_pid "$pid"
            break
        fi
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        pid=
    done
    [[ -n $pid ]] || hf_die "could not start the second sshd: $(cat "$HF_DIR/sshd-hosts.log")"

    for ((i = 1; i <= n; i++)); do
        hf_add_alias "host$i" "${ports[i - 1]}"
    done
    HF_HOST_PORTS="${ports[*]}"
    export HF_HOST_PORTS
    for ((i = 1; i <= n; i++)); do
        hf_run ssh -F "$HF_SSH_CONFIG" "host$i" true </dev/null 2>"$HF_DIR/ssh-check.log" ||
            hf_die "ssh login to host$i failed: $(cat "$HF_DIR/ssh-check.log" "$HF_DIR/sshd-hosts.log")"
    done
}

# Append ControlMaster settings to the fixture's ssh config and open the master now.
hf_start_controlmaster() {
    cat >>"$HF_SSH_CONFIG" <<EOF
    ControlMaster auto
    ControlPath $HF_DIR/cm-%C
    ControlPersist 60
EOF
    hf_run ssh -F "$HF_SSH_CONFIG" -fMN hoardtest </dev/null ||
        hf_die "could not open the ssh ControlMaster"
    hf_wait_for 'hf_run ssh -F "$HF_SSH_CONFIG" -O check hoardtest 2>/dev/null' 30 ||
        hf_die "ControlMaster did not come up"
}

# Close the ControlMaster and drop its settings from the ssh config.
hf_stop_controlmaster() {
    hf_run ssh -F "$HF_SSH_CONFIG" -O exit hoardtest >/dev/null 2>&1 || true
    sed -i '/Control\(Master\|Path\|Persist\)/d' "$HF_SSH_CONFIG"
}

# ---------------------------------------------------------------------------------------
# Workloads shared by the demo and the benchmark. Each project dir gets src/*.c(+.h) and a
# Makefile that compiles src/X.c to obj/X.o with `$(CC) $(CFLAGS) -c` (no link step).

# hf_write_makefile DIR [EXT] — the generic object-only Makefile for src/*.EXT (default c).
hf_write_makefile() {
    local ext=${2:-c}
    sed "s/@EXT@/$ext/g" >"$1/Makefile" <<'MK'
CC ?= gcc
CFLAGS ?= -O2 -g
SRCS := $(sort $(wildcard src/*.@EXT@))
OBJS := $(SRCS:src/%.@EXT@=obj/%.o)
all: $(OBJS)
obj/%.o: src/%.@EXT@ | obj
	$(CC) $(CFLAGS) -c $< -o $@
obj:
	mkdir -p obj
clean:
	rm -rf obj
.PHONY: all clean
MK
}

# hf_gen_sources DIR COUNT — COUNT small generated C files (libc headers, a shared header,
# a few functions each) plus the Makefile.
hf_gen_sources() {
    local dir=$1 n=$2 i
    mkdir -p "$dir/src"
    cat >"$dir/src/gen.h" <<'H'
#ifndef GEN_H
#define GEN_H
#include <stddef.h>
#define GEN_SQUARE(x) ((x) * (x))
#define GEN_MIN(a, b) ((a) < (b) ? (a) : (b))
struct gen_pair { long key; double value; };
long gen_mix(long a, long b);
#endif
H
    for ((i = 0; i < n; i++)); do
        cat >"$dir/src/gen$i.c" <<C
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gen.h"

static int cmp_$i(const void *a, const void *b)
{
    const struct gen_pair *x = a, *y = b;
    return (x->key > y->key) - (x->key < y->key);
}

long gen_sum_$i(const long *v, size_t n)
{
    long s = $i;
    for (size_t k = 0; k < n; k++)
        s += GEN_SQUARE(v[k]) ^ (long)k;
    return s;
}

double gen_sort_$i(struct gen_pair *p, size_t n)
{
    double acc = 0;
    qsort(p, n, sizeof *p, cmp_$i);
    for (size_t k = 0; k < GEN_MIN(n, (size_t)$((i % 7 + 3))); k++)
        acc += p[k].value * $((i + 1)).5;
    return acc;
}

int gen_format_$i(char *buf, size_t len, const char *name)
{
    char tmp[64];
    strncpy(tmp, name, sizeof tmp - 1);
    tmp[sizeof tmp - 1] = '\0';
    return snprintf(buf, len, "%s-%d-%zu", tmp, $i, strlen(tmp));
}
C
    done
    hf_write_makefile "$dir"
}

# hf_lua_sources DIR — copy the Lua 5.4 sources shipped in the lua-src crate into DIR/src
# (fetched with cargo into the normal cargo registry) and write the Makefile. Returns 1 if
# the crate cannot be fetched; prints the Lua version on success.
hf_lua_sources() {
    local dir=$1 proj luadir cargo_home=${CARGO_HOME:-$HOME/.cargo}
    proj=$(mktemp -d "${TMPDIR:-/tmp}/hoardcc-luafetch.XXXXXX") || return 1
    (
        cd "$proj" &&
            cargo init -q --vcs none --name hoardcc-luafetch >/dev/null 2>&1 &&
            printf 'lua-src = "*"\n' >>Cargo.toml &&
            cargo fetch -q >/dev/null 2>&1
    )
    rm -rf "$proj"
    # Newest lua-src crate, newest Lua 5.4 inside it (sources either in lua-5.4.x/ or .../src).
    luadir=$(ls -d "$cargo_home"/registry/src/*/lua-src-*/lua-5.4* 2>/dev/null | sort -V | tail -1)
    [[ -n $luadir ]] || return 1
    [[ -f $luadir/src/lapi.c ]] && luadir=$luadir/src
    [[ -f $luadir/lapi.c ]] || return 1
    mkdir -p "$dir/src"
    cp "$luadir"/*.c "$luadir"/*.h "$dir/src/" || return 1
    # lua.c / luac.c are the programs (with main); the library is the workload.
    rm -f "$dir/src/lua.c" "$dir/src/luac.c"
    hf_write_makefile "$dir"
    basename "${luadir%/src}"
}
