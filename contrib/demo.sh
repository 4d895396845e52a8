#!/usr/bin/env bash
# contrib/demo.sh — see hoardcc work end to end on one machine, in about a minute.
#
#   bash contrib/demo.sh
#
# Builds hoardcc (cargo build --release), starts a throwaway private sshd on 127.0.0.1 with
# `Subsystem hoardcc` (contrib/sshd-fixture.sh; nothing outside a temp dir is changed, except
# that as root a login user `hoardtest` is created), then compiles the Lua sources twice:
# with plain gcc, and through hoardcc over SSH. It prints both wall times and how many jobs
# ran remotely, and compares every object file byte for byte. Exit status is non-zero if an
# object differs or a job did not run remotely.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=${DEMO_JOBS:-8}

step() { printf '\n==> %s\n' "$*"; }
fail() {
    echo "demo: $*" >&2
    exit 1
}

# --- prerequisites -------------------------------------------------------------------------
missing=()
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v gcc >/dev/null || missing+=(gcc)
command -v make >/dev/null || missing+=(make)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        step "installing ${missing[*]} (apt-get)"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq openssh-server gcc make >/dev/null; }; then
            fail "apt-get install failed"
        fi
    else
        fail "please install: ${missing[*]} (Debian/Ubuntu: sudo apt-get install openssh-server gcc make)"
    fi
fi
command -v cargo >/dev/null || fail "cargo not found: install Rust first (https://rustup.rs)"

if [[ -n ${HOARDCC_BIN:-} ]]; then
    HOARDCC=$HOARDCC_BIN # another build of hoardcc, e.g. target/debug/hoardcc
else
    step "building hoardcc (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) || fail "cargo build --release failed"
    HOARDCC=$ROOT/target/release/hoardcc
fi

# shellcheck source=sshd-fixture.sh
. "$ROOT/contrib/sshd-fixture.sh"

# --- the project: Lua's sources, fetched by cargo (needs the real HOME, so before hf_start) ---
SRC=$(mktemp -d "${TMPDIR:-/tmp}/hoardcc-demo-src.XXXXXX")
step "fetching a real C project: the Lua sources from the lua-src crate"
if what=$(hf_lua_sources "$SRC/p"); then
    what="$what from the lua-src crate"
else
    echo "could not fetch lua-src; generating 32 C files instead"
    rm -rf "$SRC/p"
    hf_gen_sources "$SRC/p" 32
    what="32 generated C files"
fi

step "starting a private sshd on 127.0.0.1 with Subsystem hoardcc"
hf_start "$HOARDCC"
hf_defer "rm -rf '$SRC'"
hf_defer "hf_run timeout 10 '$HF_SERVE_BIN' mux --stop"
echo "sshd: 127.0.0.1:$HF_PORT, login user $HF_USER, Subsystem hoardcc $HF_SERVE_BIN serve; client ~/.ssh/config has 'Host hoardtest'"
export PATH=$HF_DIR/bin:$PATH

# Both builds run in the same directory so the debug info (DW_AT_comp_dir) can match.
PROJ=$HF_DIR/project
mv "$SRC/p" "$PROJ"
n_src=$(ls "$PROJ"/src/*.c | wc -l)
now_ms() { echo $(($(date +%s%N) / 1000000)); }

step "local build: make -j$JOBS CC=gcc   ($what, $n_src files, -O2 -g)"
t0=$(now_ms)
make -s -C "$PROJ" -j"$JOBS" CC=gcc || fail "local build failed"
t_local=$(($(now_ms) - t0))
mv "$PROJ/obj" "$HF_DIR/obj-local"

JOBLOG=$HF_DIR/joblog
step "distributed build: HOARDCC_HOSTS='@hoardtest/$JOBS' make -j$JOBS CC='hoardcc gcc'"
t0=$(now_ms)
hf_run env HOARDCC_HOSTS="@hoardtest/$JOBS" HOARDCC_FALLBACK=0 HOARDCC_JOBLOG="$JOBLOG" \
    make -s -C "$PROJ" -j"$JOBS" CC='hoardcc gcc' || fail "hoardcc build failed"
t_hoard=$(($(now_ms) - t0))

# --- results -------------------------------------------------------------------------------
remote=$(awk -F'\t' '$1 == "remote"' "$JOBLOG" 2>/dev/null | wc -l)
jobs=$(wc -l <"$JOBLOG" 2>/dev/null || echo 0)
same=0 differ=()
for o in "$HF_DIR"/obj-local/*.o; do
    name=$(basename "$o")
    if cmp -s "$o" "$PROJ/obj/$name"; then
        same=$((same + 1))
    else
        differ+=("$name")
    fi
done
n_obj=$(ls "$HF_DIR"/obj-local/*.o | wc -l)

step "results"
printf 'local gcc:        %6.2f s\n' "$(awk -v m=$t_local 'BEGIN { print m / 1000 }')"
printf 'hoardcc over ssh: %6.2f s  (server is this same machine: this shows the overhead, not a speed-up)\n' \
    "$(awk -v m=$t_hoard 'BEGIN { print m / 1000 }')"
echo "jobs run remotely: $remote/$n_src"
if ((remote != jobs)); then
    echo "jobs run locally:"
    awk -F'\t' '$1 == "local" { print "  " $3 ": " $2 }' "$JOBLOG"
fi
echo "$same/$n_obj objects byte-identical"
for name in "${differ[@]}"; do
    echo "  differs: $name (compare: readelf --debug-dump=line)"
done

if ((same != n_obj || remote != n_src)); then
    fail "FAILED: every object should be remote and byte-identical"
fi
echo
echo "OK. To use hoardcc with your own servers, see README.md (Subsystem hoardcc in sshd_config)."
