#!/usr/bin/env bash
# bench/wan.sh — hoardcc against stock distcc over a WAN-like link, side by side (issue 10
# item 6). `bash bench/run.sh wan` runs it too. See bench/README.md, "WAN mode".
#
# One private sshd and one TCP distccd on 127.0.0.1 (contrib/sshd-fixture.sh); every mode
# reaches them through one userspace link (examples/wanproxy.rs, the test suite's proxy):
# WAN_DELAY_MS (25) each way, WAN_MBIT (20) Mbit/s each way shared by all connections, and
# one round trip charged per new TCP connection. The link counts the bytes it carries both
# ways. Modes: distcc over TCP with lzo, stock distcc over `ssh -W` to the TCP distccd through
# one ControlMaster with lzo, hoardcc cold (server store emptied, new mux) and hoardcc warm
# (the next build on the same mux and store, every source edited by one line). Workloads:
# the 200 generated C files, an STL-heavy C++ set, Lua. Then a trivial job on a warm lane,
# sequentially, through the link and on loopback: the network part in round trips.
#
# Environment: BENCH_RUNS (1), BENCH_JOBS (8), BENCH_FILES (200), BENCH_CXX_FILES (24),
# BENCH_SEQ (10), BENCH_WORKLOADS ("gen cxx lua"), BENCH_MODES ("distcc-tcp-lzo
# distcc-ssh-w-lzo hoardcc-cold hoardcc-warm"; warm needs cold before it; on request also
# hoardcc-cold-conn: a cold store, the new mux connected before the build),
# WAN_DELAY_MS (25), WAN_MBIT (20), HOARDCC_BIN (default: cargo build --release), WANPROXY_BIN (default:
# cargo build --release --example wanproxy).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-1}
JOBS=${BENCH_JOBS:-8}
FILES=${BENCH_FILES:-200}
CXX_FILES=${BENCH_CXX_FILES:-24}
SEQ=${BENCH_SEQ:-10}
WORKLOADS=${BENCH_WORKLOADS:-gen cxx lua}
MODES=${BENCH_MODES:-distcc-tcp-lzo distcc-ssh-w-lzo hoardcc-cold hoardcc-warm}
DELAY_MS=${WAN_DELAY_MS:-25}
MBIT=${WAN_MBIT:-20}
RTT_MS=$((2 * DELAY_MS))
CFLAGS_BENCH='-O2 -g'

# shellcheck source=../contrib/sshd-fixture.sh
. "$ROOT/contrib/sshd-fixture.sh"

say() { echo "bench-wan: $*" >&2; }

for tool in gcc g++ make distcc /usr/bin/distccd "$HF_SSHD" ssh ssh-keygen; do
    command -v "$tool" >/dev/null ||
        { say "missing $tool (Debian: apt-get install gcc g++ make distcc openssh-server openssh-client)"; exit 1; }
done

# --- binaries -------------------------------------------------------------------------------
HOARDCC=${HOARDCC_BIN:-}
WANPROXY=${WANPROXY_BIN:-}
if [[ -z $HOARDCC || -z $WANPROXY ]]; then
    say "cargo build --release (hoardcc, examples/wanproxy)"
    (cd "$ROOT" && cargo build --release --quiet --bin hoardcc --example wanproxy) ||
        { say "release build failed"; exit 1; }
    HOARDCC=${HOARDCC:-$ROOT/target/release/hoardcc}
    WANPROXY=${WANPROXY:-$ROOT/target/release/examples/wanproxy}
fi
[[ -x $HOARDCC && -x $WANPROXY ]] || { say "not executable: $HOARDCC or $WANPROXY"; exit 1; }

# --- workloads (fetched before the fixture: cargo needs the real HOME) ---------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hoardcc-wan.XXXXXX")

# The C++ set: each file pulls in most of the STL and does a little with it.
gen_cxx() {
    local dir=$1 n=$2 i
    mkdir -p "$dir/src"
    for ((i = 0; i < n; i++)); do
        cat >"$dir/src/cxx$i.cpp" <<CXX
#include <algorithm>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace cxx$i {
struct Item {
    std::string name;
    long weight;
};

std::map<std::string, long> tally(const std::vector<Item> &items)
{
    std::map<std::string, long> out;
    for (const auto &it : items)
        out[it.name] += it.weight * $((i + 1));
    return out;
}

std::string report(const std::vector<Item> &items)
{
    std::unordered_map<std::string, std::unique_ptr<Item>> index;
    for (const auto &it : items)
        index.emplace(it.name, std::make_unique<Item>(it));
    std::vector<long> w;
    std::transform(items.begin(), items.end(), std::back_inserter(w),
                   [](const Item &x) { return x.weight; });
    std::sort(w.begin(), w.end(), std::greater<long>());
    std::set<long> uniq(w.begin(), w.end());
    std::ostringstream os;
    os << "cxx$i: " << index.size() << " items, " << uniq.size() << " weights, sum "
       << std::accumulate(w.begin(), w.end(), 0L);
    for (const auto &[k, v] : tally(items))
        os << ' ' << k << '=' << v;
    return os.str();
}

void print(const std::vector<Item> &items) { std::cout << report(items) << '\n'; }
} // namespace cxx$i
CXX
    done
    hf_write_makefile "$dir" cpp
}

declare -A WL_DESC
for wl in $WORKLOADS; do
    case $wl in
    gen)
        hf_gen_sources "$WORK/gen" "$FILES"
        WL_DESC[gen]="$FILES small C files"
        ;;
    cxx)
        gen_cxx "$WORK/cxx" "$CXX_FILES"
        WL_DESC[cxx]="$CXX_FILES STL-heavy C++ files"
        ;;
    lua)
        if ver=$(hf_lua_sources "$WORK/lua"); then
            WL_DESC[lua]="$ver ($(ls "$WORK/lua/src"/*.c | wc -l) files)"
        else
            say "could not fetch the lua-src crate: the lua workload is skipped"
            WORKLOADS=${WORKLOADS/lua/}
        fi
        ;;
    *) say "unknown workload $wl"; exit 2 ;;
    esac
done
for wl in $WORKLOADS; do
    cp -a "$WORK/$wl/src" "$WORK/$wl/src.pristine"
done
printf 'int trivial(int x) { return x + 1; }\n' >"$WORK/t.c"

HF_SERVER_JOBS=$JOBS hf_start "$HOARDCC"
hf_defer "rm -rf '$WORK'"
export PATH=$HF_DIR/bin:$PATH

# --- the stock distccd (TCP daemon mode: its reply is not held up by --inetd's 1 s wait) ----
DISTCCD_PORT=
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

# --- the link ---------------------------------------------------------------------------------
coproc WAN { exec "$WANPROXY" --delay-ms "$DELAY_MS" --mbit "$MBIT" --connect-rtt \
    "127.0.0.1:$HF_PORT" "127.0.0.1:$DISTCCD_PORT"; }
hf_track_pid "$WAN_PID"
read -r -t 10 -u "${WAN[0]}" WAN_SSH_PORT WAN_DISTCC_PORT ||
    { say "wanproxy did not start"; exit 1; }
# WAN_BYTES: "UP DOWN CONNECTIONS" carried by the link so far.
wan_stats() {
    echo stats >&"${WAN[1]}"
    read -r -t 10 -u "${WAN[0]}" WAN_UP WAN_DOWN WAN_CONNS
}

# ssh aliases: hoardwan through the link; hoardwan-cm the same with a ControlMaster (for
# `ssh -W`), hoardlo-cm on loopback (the per-job baseline).
hf_add_alias hoardwan "$WAN_SSH_PORT"
hf_add_alias hoardwan-cm "$WAN_SSH_PORT"
printf '    ControlMaster auto\n    ControlPath %s/cm-wan-%%C\n    ControlPersist 600\n' "$HF_DIR" >>"$HF_SSH_CONFIG"
hf_add_alias hoardlo-cm "$HF_PORT"
printf '    ControlMaster auto\n    ControlPath %s/cm-lo-%%C\n    ControlPersist 600\n' "$HF_DIR" >>"$HF_SSH_CONFIG"
for a in hoardwan-cm hoardlo-cm; do
    hf_run ssh -F "$HF_SSH_CONFIG" -fMN "$a" </dev/null || { say "ControlMaster $a failed"; exit 1; }
    hf_defer "hf_run ssh -F '$HF_SSH_CONFIG' -O exit $a"
done
# distcc runs "$DISTCC_SSH [-l USER] HOST distccd --inetd"; this one ignores all that and
# forwards stdio to the TCP distccd through the master of $1's alias.
for a in hoardwan-cm hoardlo-cm; do
    printf '#!/bin/sh\nexec ssh -F %s -W 127.0.0.1:%s %s\n' "$HF_SSH_CONFIG" "$DISTCCD_PORT" "$a" >"$WORK/ssh-w-$a"
    chmod 755 "$WORK/ssh-w-$a"
done

stop_mux() {
    hf_run timeout 10 hoardcc mux --stop >/dev/null 2>&1
    hf_wait_for '[[ -z $(hf_client_pids "hoardcc mux") ]]' 10 || say "the hoardcc mux did not exit after --stop"
    return 0
}
hf_defer stop_mux

# fresh_store TAG — no mux, and an empty server store. The old store is moved aside, not
# deleted: deleting thousands of files just before the build makes every file the server
# then creates slower on an ext4 without a journal (the kernel skips recently deleted
# inodes one by one), a cost a server whose store is new does not pay. $WORK goes at exit.
fresh_store() {
    stop_mux
    [[ -e $HF_SERVER_CACHE ]] && mv "$HF_SERVER_CACHE" "$WORK/old-store.$1"
    return 0
}

# mode_env MODE LOG [lo] — the env assignments (one per line) for a mode; `lo` = loopback.
mode_env() {
    local mode=$1 log=$2 where=${3:-wan}
    local tcp_port=$WAN_DISTCC_PORT cm=hoardwan-cm host=hoardwan
    if [[ $where == lo ]]; then tcp_port=$DISTCCD_PORT cm=hoardlo-cm host=hoardtest; fi
    case $mode in
    distcc-tcp-lzo)
        printf '%s\n' "CC=distcc gcc" "DISTCC_HOSTS=127.0.0.1:$tcp_port/$JOBS,lzo" \
            "DISTCC_FALLBACK=0" "DISTCC_BACKOFF_PERIOD=0" "DISTCC_LOG=$log"
        ;;
    distcc-ssh-w-lzo)
        printf '%s\n' "CC=distcc gcc" "DISTCC_HOSTS=@$cm/$JOBS,lzo" "DISTCC_SSH=$WORK/ssh-w-$cm" \
            "DISTCC_FALLBACK=0" "DISTCC_BACKOFF_PERIOD=0" "DISTCC_LOG=$log"
        ;;
    hoardcc*)
        printf '%s\n' "CC=hoardcc gcc" "HOARDCC_HOSTS=@$host/$JOBS" "HOARDCC_FALLBACK=0" \
            "HOARDCC_JOBLOG=$log"
        ;;
    esac
}

# count_jobs MODE LOG — "REMOTE CACHED TOTAL" (cache hits are not compiles).
count_jobs() {
    local mode=$1 log=$2
    [[ -f $log ]] || { echo "0 0 0"; return; }
    case $mode in
    distcc-*)
        grep -E '^distcc\[[0-9]+\] compile .* on .* completed ok' "$log" |
            awk '{ t++; if ($0 !~ / on localhost completed ok/) r++ } END { print r + 0, 0, t + 0 }'
        ;;
    hoardcc*)
        awk -F'\t' '{ t++; if ($1 == "remote") r++; else if ($1 == "remote-cached") c++ }
            END { print r + 0, c + 0, t + 0 }' "$log"
        ;;
    esac
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# busy_ms — CPU time the whole machine has spent busy since boot, in ms (every core: user,
# nice, system, irq, softirq, steal; not idle or iowait). The client, the link, sshd, the
# servers and every compiler run here, so the difference over a build is all the CPU it cost.
CLK_TCK=$(getconf CLK_TCK)
busy_ms() {
    awk -v hz="$CLK_TCK" '$1 == "cpu" { printf "%d", ($2 + $3 + $4 + $7 + $8 + $9) * 1000 / hz; exit }' /proc/stat
}

# edit_sources DIR ROUND — every source gets one more line (headers unchanged).
edit_sources() {
    local f id
    for f in "$1"/src/*.c "$1"/src/*.cpp; do
        [[ -f $f ]] || continue
        id=$(basename "$f" | tr -c 'A-Za-z0-9_\n' '_')
        printf 'int hoardcc_bench_edit_%s = %d;\n' "$id" "$2" >>"$f"
    done
}

restore_sources() {
    rm -rf "$1/src" && cp -a "$1/src.pristine" "$1/src"
}

# run_build MODE WL LOG — one clean build through the link; sets MS, CPU, UP, DOWN, CONNS.
run_build() {
    local mode=$1 dir=$WORK/$2 log=$3 t0 c0 envs=()
    mapfile -t envs < <(mode_env "$mode" "$log")
    make -s -C "$dir" clean >/dev/null 2>&1
    wan_stats
    local up0=$WAN_UP down0=$WAN_DOWN conns0=$WAN_CONNS
    local perf=()
    [[ -n ${BENCH_PERF_DIR:-} ]] &&
        perf=(perf record -a -q -e cpu-clock -F 499 -g -o "$BENCH_PERF_DIR/$mode.$2.$(date +%s).data" --)
    t0=$(now_ms) c0=$(busy_ms)
    if ! hf_run "${perf[@]}" env "${envs[@]}" make -s -C "$dir" -j"$JOBS" CFLAGS="$CFLAGS_BENCH" \
        >"$WORK/make.out" 2>&1; then
        say "$mode: make failed in $dir:"
        tail -n 15 "$WORK/make.out" >&2
        return 1
    fi
    MS=$(($(now_ms) - t0)) CPU=$(($(busy_ms) - c0))
    wan_stats
    UP=$((WAN_UP - up0)) DOWN=$((WAN_DOWN - down0)) CONNS=$((WAN_CONNS - conns0))
}

declare -A WALL BCPU BUP BDOWN NCONN JOBSTAT
say "sshd 127.0.0.1:$HF_PORT, distccd :$DISTCCD_PORT, link ${DELAY_MS} ms each way, $MBIT Mbit/s," \
    "ports $WAN_SSH_PORT/$WAN_DISTCC_PORT; modes: $MODES; workloads: $WORKLOADS; make -j$JOBS; $RUNS run(s)"
for ((r = 1; r <= RUNS; r++)); do
    for wl in $WORKLOADS; do
        for mode in $MODES; do
            case $mode in
            hoardcc-cold)
                fresh_store "$mode.$wl.$r"
                ;;
            hoardcc-cold-conn)
                # As hoardcc-cold, but the new mux connects before the timed build (as the
                # ControlMaster of distcc-ssh-w-lzo is opened before its build): one compile
                # of t.c (no #include: a few small chunks of its own) opens the connection.
                fresh_store "$mode.$wl.$r"
                (
                    mapfile -t envs < <(mode_env "$mode" "$WORK/log.conn-warmup")
                    cd "$WORK" && hf_run env "${envs[@]}" hoardcc gcc -c t.c -o t.o
                ) || { say "$mode: the warm-up compile failed"; continue; }
                ;;
            hoardcc-warm)
                [[ " $MODES " == *" hoardcc-cold "* ]] || { say "hoardcc-warm needs hoardcc-cold"; continue; }
                edit_sources "$WORK/$wl" "$r"
                ;;
            esac
            log=$WORK/log.$mode.$wl.$r
            rm -f "$log"
            if run_build "$mode" "$wl" "$log"; then
                read -r rr cc tt < <(count_jobs "$mode" "$log")
                WALL[$mode,$wl]+="$MS "
                BCPU[$mode,$wl]+="$CPU "
                BUP[$mode,$wl]+="$UP "
                BDOWN[$mode,$wl]+="$DOWN "
                NCONN[$mode,$wl]=$CONNS
                JOBSTAT[$mode,$wl]="$rr/$tt$( ((cc)) && echo " + $cc cached")"
                say "run $r $wl $mode: $MS ms, CPU $CPU ms, up $UP B, down $DOWN B, $CONNS new connections, remote $rr/$tt, cached $cc"
            else
                WALL[$mode,$wl]=failed
            fi
            if [[ $mode == hoardcc-warm ]]; then
                restore_sources "$WORK/$wl"
                stop_mux
            fi
        done
        stop_mux
    done
done

# --- a trivial job on a warm lane, sequentially -------------------------------------------
# run_seq MODE WHERE — ms per compile of t.c over SEQ compiles, after one warm-up compile.
run_seq() {
    local mode=$1 where=$2 t0 i envs=() cc
    mapfile -t envs < <(mode_env "$mode" "$WORK/log.seq.$mode.$where" "$where")
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
        awk -v ms=$(($(now_ms) - t0)) -v n="$SEQ" 'BEGIN { printf "%.1f", ms / n }'
    )
}
declare -A SEQ_MS
SEQ_MODES="distcc-tcp-lzo distcc-ssh-w-lzo hoardcc"
for mode in $SEQ_MODES; do
    for where in lo wan; do
        SEQ_MS[$mode,$where]=$(run_seq "$mode" "$where") || SEQ_MS[$mode,$where]=failed
        say "sequential $mode $where: ${SEQ_MS[$mode,$where]} ms/job"
    done
    [[ $mode == hoardcc ]] && stop_mux
done

# --- report -----------------------------------------------------------------------------------
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
label() {
    case $1 in
    distcc-tcp-lzo) echo "distcc TCP + lzo" ;;
    distcc-ssh-w-lzo) echo "distcc over \`ssh -W\` + ControlMaster + lzo" ;;
    hoardcc-cold) echo "hoardcc cold (empty server store, new mux)" ;;
    hoardcc-cold-conn) echo "hoardcc cold, connected (empty server store, new mux connected before the build)" ;;
    hoardcc-warm) echo "hoardcc warm (every source edited)" ;;
    hoardcc) echo "hoardcc (warm lane)" ;;
    esac
}
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "—" }'; }

echo
echo "## hoardcc WAN benchmark"
echo
echo "$(nproc) CPUs, $(gcc --version | head -1), $(distcc --version | head -1 | cut -d' ' -f1-2)," \
    "$(ssh -V 2>&1 | cut -d, -f1); server = private sshd and distccd on 127.0.0.1 (same machine)."
echo "Link: ${DELAY_MS} ms each way (RTT $RTT_MS ms), $MBIT Mbit/s each way shared by all connections," \
    "one RTT charged per new TCP connection. \`make -j$JOBS\`, CFLAGS \`$CFLAGS_BENCH\`;" \
    "median of $RUNS run(s); bytes = what the link carried (both ways, median)."
echo
printf '| workload | mode | wall (s) | wall ×lzo | CPU (s) | CPU ×lzo | up (MiB) | up ×lzo | down (MiB) | down ×lzo | new TCP conns | ran remotely |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for wl in $WORKLOADS; do
    bw=${WALL[distcc-tcp-lzo,$wl]:-failed} bc= bu= bd=
    if [[ $bw != failed ]]; then
        bw=$(echo "$bw" | median) bc=$(echo "${BCPU[distcc-tcp-lzo,$wl]}" | median)
        bu=$(echo "${BUP[distcc-tcp-lzo,$wl]}" | median)
        bd=$(echo "${BDOWN[distcc-tcp-lzo,$wl]}" | median)
    fi
    for mode in $MODES; do
        w=${WALL[$mode,$wl]:-failed}
        if [[ $w == failed ]]; then
            printf '| %s | %s | failed | | | | | | | | | |\n' "${WL_DESC[$wl]}" "$(label "$mode")"
            continue
        fi
        w=$(echo "$w" | median) u=$(echo "${BUP[$mode,$wl]}" | median) d=$(echo "${BDOWN[$mode,$wl]}" | median)
        c=$(echo "${BCPU[$mode,$wl]}" | median)
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${WL_DESC[$wl]}" "$(label "$mode")" \
            "$(awk -v m="$w" 'BEGIN { printf "%.2f", m / 1000 }')" "$([[ $bw != failed ]] && ratio "$w" "$bw")" \
            "$(awk -v m="$c" 'BEGIN { printf "%.2f", m / 1000 }')" "$([[ -n $bc ]] && ratio "$c" "$bc")" \
            "$(mib "$u")" "$([[ -n $bu ]] && ratio "$u" "$bu")" "$(mib "$d")" "$([[ -n $bd ]] && ratio "$d" "$bd")" \
            "${NCONN[$mode,$wl]}" "${JOBSTAT[$mode,$wl]}"
    done
done
echo
echo "A trivial job (\`-c\` of a one-line file) on a warm lane: $SEQ sequential compiles after one warm-up," \
    "ms per job; network part = (WAN − loopback) / RTT."
echo
printf '| mode | loopback (ms/job) | WAN (ms/job) | WAN − loopback (ms) | network part (RTTs) |\n|---|---:|---:|---:|---:|\n'
for mode in $SEQ_MODES; do
    lo=${SEQ_MS[$mode,lo]} wan=${SEQ_MS[$mode,wan]}
    if [[ $lo == failed || $wan == failed ]]; then
        printf '| %s | %s | %s | | |\n' "$(label "$mode")" "$lo" "$wan"
        continue
    fi
    printf '| %s | %s | %s | %s | %s |\n' "$(label "$mode")" "$lo" "$wan" \
        "$(awk -v a="$wan" -v b="$lo" 'BEGIN { printf "%+.1f", a - b }')" \
        "$(awk -v a="$wan" -v b="$lo" -v r="$RTT_MS" 'BEGIN { printf "%.2f", (a - b) / r }')"
done
