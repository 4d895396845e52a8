#!/usr/bin/env bash
# bench/run.sh — hoardcc against local gcc and stock distcc, side by side, on this machine.
#
# Starts one private sshd on 127.0.0.1 (contrib/sshd-fixture.sh) and, for each workload,
# times `make -jN` in every mode (median of BENCH_RUNS clean builds), counts how many
# compiles ran remotely, and measures the per-job overhead of each mode (sequential
# compiles of a trivial file, minus local gcc). Prints Markdown tables. See bench/README.md.
#
# Environment: BENCH_RUNS (3), BENCH_JOBS (8), BENCH_FILES (200), BENCH_SEQ (20), BENCH_SEQ_ROUNDS (5),
# BENCH_MODES ("local distcc-tcp distcc-ssh distcc-ssh-cm hoardcc-direct hoardcc"), BENCH_WORKLOADS
# ("gen lua"), HOARDCC_BIN (default: `cargo build --release`, target/release/hoardcc).
#
# `bash bench/run.sh rss` runs only the mux memory measurement (bench/rss.sh) instead, and
# `bash bench/run.sh wan` the WAN benchmark through a delay and bandwidth link (bench/wan.sh).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${1:-} == rss ]]; then
    exec bash "$ROOT/bench/rss.sh"
fi
if [[ ${1:-} == wan ]]; then
    exec bash "$ROOT/bench/wan.sh"
fi
RUNS=${BENCH_RUNS:-3}
SEQ_ROUNDS=${BENCH_SEQ_ROUNDS:-5}
JOBS=${BENCH_JOBS:-8}
FILES=${BENCH_FILES:-200}
SEQ=${BENCH_SEQ:-20}
MODES=${BENCH_MODES:-local distcc-tcp distcc-ssh distcc-ssh-cm hoardcc-direct hoardcc}
WORKLOADS=${BENCH_WORKLOADS:-gen lua}
CFLAGS_BENCH='-O2 -g'

# shellcheck source=../contrib/sshd-fixture.sh
. "$ROOT/contrib/sshd-fixture.sh"

say() { echo "bench: $*" >&2; }

for tool in gcc make distcc /usr/bin/distccd "$HF_SSHD" ssh ssh-keygen; do
    command -v "$tool" >/dev/null ||
        { say "missing $tool (Debian: apt-get install gcc make distcc openssh-server openssh-client)"; exit 1; }
done

# --- the hoardcc binary ------------------------------------------------------------------
HOARDCC=${HOARDCC_BIN:-}
if [[ -z $HOARDCC ]]; then
    say "cargo build --release"
    if (cd "$ROOT" && cargo build --release --quiet); then
        HOARDCC=$ROOT/target/release/hoardcc
    else
        say "release build failed: hoardcc modes are skipped"
    fi
fi
if [[ -z $HOARDCC || ! -x $HOARDCC ]]; then
    MODES=$(tr ' ' '\n' <<<"$MODES" | grep -v '^hoardcc' | tr '\n' ' ')
    HOARDCC=
fi

# --- workloads (fetched before the fixture: cargo needs the real HOME) ---------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hoardcc-bench.XXXXXX")
declare -A WL_DESC
for wl in $WORKLOADS; do
    case $wl in
    gen)
        hf_gen_sources "$WORK/gen" "$FILES"
        WL_DESC[gen]="$FILES generated C files"
        ;;
    lua)
        if ver=$(hf_lua_sources "$WORK/lua"); then
            WL_DESC[lua]="$ver ($(ls "$WORK/lua/src"/*.c | wc -l) files, lua-src crate)"
        else
            say "could not fetch the lua-src crate: the lua workload is skipped"
            WORKLOADS=${WORKLOADS/lua/}
        fi
        ;;
    *) say "unknown workload $wl"; exit 2 ;;
    esac
done
printf 'int trivial(int x) { return x + 1; }\n' >"$WORK/t.c"

HF_SERVER_JOBS=$JOBS hf_start "$HOARDCC"
hf_defer "rm -rf '$WORK'"
# The wrapper is found on PATH as `hoardcc`, as a user would have it.
export PATH=$HF_DIR/bin:$PATH

# distcc over TCP: a private daemon (as root it drops to the distccd user itself).
DISTCCD_PORT=
if [[ " $MODES " == *" distcc-tcp "* ]]; then
    for try in 1 2 3 4 5; do
        DISTCCD_PORT=$((HF_PORT + try))
        hf_port_busy "$DISTCCD_PORT" && continue
        setsid /usr/bin/distccd --daemon --no-detach --listen 127.0.0.1 --port "$DISTCCD_PORT" \
            --allow 127.0.0.1 --jobs "$JOBS" --log-level error --log-stderr 2>>"$HF_DIR/distccd.log" &
        hf_track_pid $!
        hf_wait_for 'hf_port_busy $DISTCCD_PORT' 10 && break
        DISTCCD_PORT=
    done
    [[ -n $DISTCCD_PORT ]] || { say "distccd did not start: $(cat "$HF_DIR/distccd.log")"; exit 1; }
fi

# Stop this fixture's mux and wait (10 s at most) until it has exited, so the next mode
# starts without it.
stop_mux() {
    [[ -n $HOARDCC ]] || return 0
    hf_run timeout 10 hoardcc mux --stop >/dev/null 2>&1
    hf_wait_for '[[ -z $(hf_client_pids "hoardcc mux") ]]' 10 || say "the hoardcc mux did not exit after --stop"
    return 0
}
hf_defer stop_mux

# The mux daemon of this fixture (its environment names the fixture's runtime dir).
mux_pid() {
    local pids
    pids=$(hf_client_pids 'hoardcc mux' | head -1)
    [[ -n $pids ]] && echo "$pids"
}

# mode_env MODE LOG — print the env assignments (one per line) for a mode.
mode_env() {
    local mode=$1 log=$2
    case $mode in
    local) echo "CC=gcc" ;;
    distcc-tcp)
        printf '%s\n' "CC=distcc gcc" "DISTCC_HOSTS=127.0.0.1:$DISTCCD_PORT/$JOBS" \
            "DISTCC_FALLBACK=0" "DISTCC_LOG=$log"
        ;;
    distcc-ssh | distcc-ssh-cm)
        printf '%s\n' "CC=distcc gcc" "DISTCC_HOSTS=@hoardtest/$JOBS" \
            "DISTCC_SSH=ssh -F $HF_SSH_CONFIG" "DISTCC_FALLBACK=0" "DISTCC_LOG=$log"
        ;;
    # HOARDCC_CACHE=0: every run builds the same sources and the sequential rounds compile
    # one file again and again, so the server's result cache would answer instead of
    # compiling; this benchmark measures compiles, never cache hits.
    hoardcc)
        printf '%s\n' "CC=hoardcc gcc" "HOARDCC_HOSTS=@hoardtest/$JOBS" "HOARDCC_FALLBACK=0" \
            "HOARDCC_JOBLOG=$log" "HOARDCC_CACHE=0"
        ;;
    hoardcc-direct)
        printf '%s\n' "CC=hoardcc gcc" "HOARDCC_HOSTS=@hoardtest/$JOBS" "HOARDCC_FALLBACK=0" \
            "HOARDCC_JOBLOG=$log" "HOARDCC_MUX=0" "HOARDCC_CACHE=0"
        ;;
    esac
}

mode_setup() {
    case $1 in
    distcc-ssh-cm) hf_start_controlmaster ;;
    hoardcc*) stop_mux ;;
    esac
}

mode_teardown() {
    case $1 in
    distcc-ssh-cm) hf_stop_controlmaster ;;
    hoardcc*)
        local pid
        if pid=$(mux_pid); then
            MUX_RSS+=("$(awk '/VmHWM/ {print $2 " " $3}' "/proc/$pid/status") ($2)")
            [[ $1 == hoardcc ]] && HOARDCC_MUX_SEEN=1
        fi
        stop_mux
        ;;
    esac
}

# count_jobs MODE LOG — print "REMOTE TOTAL" from a distcc log or a hoardcc job log.
count_jobs() {
    local mode=$1 log=$2
    [[ -f $log ]] || { echo "0 0"; return; }
    case $mode in
    local) echo "0 0" ;;
    distcc-*)
        grep -E '^distcc\[[0-9]+\] compile .* on .* completed ok' "$log" |
            awk '{ t++; if ($0 !~ / on localhost completed ok/) r++ } END { print r + 0, t + 0 }'
        ;;
    hoardcc*) awk -F'\t' '{ t++; if ($1 == "remote") r++ } END { print r + 0, t + 0 }' "$log" ;;
    esac
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# run_build MODE DIR LOG — one clean build; prints wall ms, or fails.
run_build() {
    local mode=$1 dir=$2 log=$3 t0 t1 envs=()
    mapfile -t envs < <(mode_env "$mode" "$log")
    make -s -C "$dir" clean >/dev/null 2>&1
    t0=$(now_ms)
    if ! hf_run env "${envs[@]}" make -s -C "$dir" -j"$JOBS" CFLAGS="$CFLAGS_BENCH" \
        >"$WORK/make.out" 2>&1; then
        say "$mode: make failed in $dir:"
        tail -n 15 "$WORK/make.out" >&2
        return 1
    fi
    t1=$(now_ms)
    echo $((t1 - t0))
}

# run_seq MODE LOG — ms per sequential compile of a trivial file (after one warm-up).
run_seq() {
    local mode=$1 log=$2 t0 t1 i envs=() cc
    mapfile -t envs < <(mode_env "$mode" "$log")
    cc=$(printf '%s\n' "${envs[@]}" | sed -n 's/^CC=//p')
    (
        cd "$WORK" || exit 1
        # shellcheck disable=SC2086 # CC is "wrapper compiler", split on purpose
        hf_run env "${envs[@]}" $cc $CFLAGS_BENCH -c t.c -o t.o || exit 1
        t0=$(now_ms)
        for ((i = 0; i < SEQ; i++)); do
            # shellcheck disable=SC2086
            hf_run env "${envs[@]}" $cc $CFLAGS_BENCH -c t.c -o t.o || exit 1
        done
        t1=$(now_ms)
        awk -v ms=$((t1 - t0)) -v n="$SEQ" 'BEGIN { printf "%.1f", ms / n }'
    )
}

declare -A WALL REMOTE SEQ_MS
MUX_RSS=()
HOARDCC_MUX_SEEN=0
say "sshd on 127.0.0.1:$HF_PORT; modes: $MODES; workloads: $WORKLOADS; make -j$JOBS; $RUNS runs each"

# Runs are interleaved (run 1 of every mode, then run 2 …) so that load from anything else on
# the machine spreads over all modes instead of skewing one.
declare -A TIMES RSUM TSUM FAILED
for ((r = 1; r <= RUNS; r++)); do
    for mode in $MODES; do
        mode_setup "$mode" || { say "$mode: setup failed"; FAILED[$mode]=1; continue; }
        for wl in $WORKLOADS; do
            [[ -n ${FAILED[$mode,$wl]:-} ]] && continue
            log=$WORK/log.$mode.$wl.$r
            rm -f "$log"
            if ms=$(run_build "$mode" "$WORK/$wl" "$log"); then
                TIMES[$mode,$wl]+="$ms "
                read -r rr tt < <(count_jobs "$mode" "$log")
                RSUM[$mode,$wl]=$((${RSUM[$mode,$wl]:-0} + rr))
                TSUM[$mode,$wl]=$((${TSUM[$mode,$wl]:-0} + tt))
                say "run $r/$RUNS $mode $wl: $ms ms (remote $rr/$tt)"
            else
                FAILED[$mode,$wl]=1
            fi
        done
        mode_teardown "$mode" "after run $r"
    done
done
for mode in $MODES; do
    for wl in $WORKLOADS; do
        if [[ -n ${FAILED[$mode,$wl]:-} || -z ${TIMES[$mode,$wl]:-} ]]; then
            WALL[$mode,$wl]=failed
        else
            WALL[$mode,$wl]=$(echo "${TIMES[$mode,$wl]}" | median)
            REMOTE[$mode,$wl]="${RSUM[$mode,$wl]}/${TSUM[$mode,$wl]}"
        fi
    done
done

# Sequential compiles: interleaved rounds as well (round 1 of every mode, then round 2 …),
# the median of the rounds' means per mode.
declare -A SEQ_RUNS
for ((r = 1; r <= SEQ_ROUNDS; r++)); do
    for mode in $MODES; do
        if mode_setup "$mode"; then
            if s=$(run_seq "$mode" "$WORK/log.$mode.seq"); then
                SEQ_RUNS[$mode]+="$s "
                say "round $r/$SEQ_ROUNDS $mode sequential: $s ms/compile"
            fi
            mode_teardown "$mode" "after the sequential compiles"
        fi
    done
done
for mode in $MODES; do
    SEQ_MS[$mode]=failed
    if [[ -n ${SEQ_RUNS[$mode]:-} ]]; then
        SEQ_MS[$mode]=$(echo "${SEQ_RUNS[$mode]}" | median)
    fi
    say "$mode sequential: ${SEQ_MS[$mode]} ms/compile (median of: ${SEQ_RUNS[$mode]:-none})"
done

# --- report ----------------------------------------------------------------------------
mode_label() {
    case $1 in
    local) echo "local gcc" ;;
    distcc-tcp) echo "distcc, TCP (distccd --daemon)" ;;
    distcc-ssh) echo "distcc, @host (ssh per job)" ;;
    distcc-ssh-cm) echo "distcc, @host + ssh ControlMaster" ;;
    hoardcc)
        if ((HOARDCC_MUX_SEEN)); then echo "hoardcc via mux"; else echo "hoardcc (no mux seen)"; fi
        ;;
    hoardcc-direct) echo "hoardcc, connection per job (HOARDCC_MUX=0)" ;;
    esac
}

echo
echo "## hoardcc benchmark"
echo
echo "$(nproc) CPUs, $(gcc --version | head -1), $(distcc --version | head -1 | cut -d' ' -f1-2)," \
    "$(ssh -V 2>&1 | cut -d, -f1); server = private sshd on 127.0.0.1 (same machine)."
echo "\`make -j$JOBS\`, CFLAGS \`$CFLAGS_BENCH\`, wall time = median of $RUNS clean builds."
echo
printf '| workload | mode | wall (s) | vs local | ran remotely |\n|---|---|---:|---:|---:|\n'
for wl in $WORKLOADS; do
    base=${WALL[local,$wl]:-}
    for mode in $MODES; do
        w=${WALL[$mode,$wl]:-}
        if [[ -z $w || $w == failed ]]; then
            printf '| %s | %s | failed | | |\n' "${WL_DESC[$wl]}" "$(mode_label "$mode")"
            continue
        fi
        ratio=
        [[ -n $base && $base != failed ]] && ratio=$(awk -v a="$w" -v b="$base" 'BEGIN { printf "%.2f×", a / b }')
        share=${REMOTE[$mode,$wl]}
        if [[ $mode == local ]]; then
            share=—
        else
            share=$(awk -v s="$share" 'BEGIN { split(s, p, "/"); if (p[2] > 0) printf "%d%% (%s)", 100 * p[1] / p[2], s; else print "?" }')
        fi
        printf '| %s | %s | %s | %s | %s |\n' "${WL_DESC[$wl]}" "$(mode_label "$mode")" \
            "$(awk -v m="$w" 'BEGIN { printf "%.2f", m / 1000 }')" "$ratio" "$share"
    done
done
echo
echo "Per-job overhead: $SEQ sequential \`-c\` compiles of a one-line file, ms per compile; median of $SEQ_ROUNDS interleaved rounds."
echo
printf '| mode | ms/compile | overhead vs local |\n|---|---:|---:|\n'
for mode in $MODES; do
    s=${SEQ_MS[$mode]:-failed}
    over=
    if [[ $s != failed && ${SEQ_MS[local]:-failed} != failed ]]; then
        over=$(awk -v a="$s" -v b="${SEQ_MS[local]}" 'BEGIN { printf "%+.1f ms", a - b }')
    fi
    printf '| %s | %s | %s |\n' "$(mode_label "$mode")" "$s" "$over"
done
if ((${#MUX_RSS[@]})); then
    echo
    echo "hoardcc mux daemon, peak RSS (VmHWM) before each stop:"
    printf -- '- %s\n' "${MUX_RSS[@]}"
fi
