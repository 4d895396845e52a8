#!/usr/bin/env bash
# bench/rss.sh — the hoardcc mux's memory with many hosts and lanes open (issue 3 target:
# the mux's RSS stays at or below 30 MB with 8 hosts × 8 lanes).
#
# Next to bench/run.sh (the speed comparison; `bash bench/run.sh rss` runs this script).
# Starts the private sshd of contrib/sshd-fixture.sh plus a second one on RSS_HOSTS more
# ports (hf_add_hosts), so the client's ssh config has aliases host1..hostN that the mux
# treats as N distinct hosts; the server's hoardcc serve gets max_jobs = hosts × lanes and
# a private slot dir. With HOARDCC_HOSTS="@host1/L … @hostN/L", one compile first (its
# reservation warms every host), then RSS_ROUNDS clean `make -jJOBS` builds of the
# generated workload through the mux, sampling `hoardcc status --json` during each; after
# the compile and after each build it reads the lanes and connections from
# `hoardcc status --json` and the mux's VmRSS/VmHWM from /proc/PID/status. Prints a
# summary on stdout; exits 1 if the lanes never reached hosts × lanes or the peak RSS
# (VmHWM) is over the limit.
#
# Environment: RSS_HOSTS (8), RSS_LANES (8), RSS_JOBS (hosts × lanes), RSS_FILES (200),
# RSS_ROUNDS (2), RSS_LIMIT_MB (30), HOARDCC_LOG (info; the mux's log level), HF_KEEP=1
# (keep the fixture dir, with the mux log, after the run), HOARDCC_BIN (default:
# `cargo build --release`, target/release/hoardcc).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NHOSTS=${RSS_HOSTS:-8}
LANES=${RSS_LANES:-8}
TARGET=$((NHOSTS * LANES))
JOBS=${RSS_JOBS:-$TARGET}
FILES=${RSS_FILES:-200}
ROUNDS=${RSS_ROUNDS:-2}
LIMIT_MB=${RSS_LIMIT_MB:-30}
CFLAGS_BENCH='-O2 -g'

# shellcheck source=../contrib/sshd-fixture.sh
. "$ROOT/contrib/sshd-fixture.sh"

say() { echo "rss: $*" >&2; }

for tool in gcc make "$HF_SSHD" ssh ssh-keygen; do
    command -v "$tool" >/dev/null ||
        { say "missing $tool (Debian: apt-get install gcc make openssh-server openssh-client)"; exit 1; }
done
if command -v jq >/dev/null; then
    JSON=jq
elif command -v python3 >/dev/null; then
    JSON=python3
else
    say "needs jq or python3 to read \`hoardcc status --json\`"
    exit 1
fi

HOARDCC=${HOARDCC_BIN:-}
if [[ -z $HOARDCC ]]; then
    say "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || { say "release build failed"; exit 1; }
    HOARDCC=$ROOT/target/release/hoardcc
fi
[[ -x $HOARDCC ]] || { say "not an executable: $HOARDCC"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hoardcc-rss.XXXXXX")
hf_gen_sources "$WORK/gen" "$FILES"

HF_SERVER_JOBS=$TARGET hf_start "$HOARDCC"
hf_defer "rm -rf '$WORK'"
hf_add_hosts "$NHOSTS"
export PATH=$HF_DIR/bin:$PATH
export HOARDCC_LOG=${HOARDCC_LOG:-info}
MUX_LOG=$HF_HOME/.local/state/hoardcc/mux.log

HOSTS_LIST=
for ((i = 1; i <= NHOSTS; i++)); do
    HOSTS_LIST+="${HOSTS_LIST:+ }@host$i/$LANES"
done

stop_mux() {
    hf_run timeout 10 hoardcc mux --stop >/dev/null 2>&1
    hf_wait_for '[[ -z $(hf_client_pids "hoardcc mux") ]]' 10 || say "the hoardcc mux did not exit after --stop"
    return 0
}
hf_defer stop_mux

# status_json — the running mux's `hoardcc status --json` (empty if none answers).
status_json() {
    hf_run timeout 10 hoardcc status --json 2>/dev/null
}

# summary — "PID LANES CONNECTIONS WRAPPERS HOSTS_WITH_FULL_LANES" from status JSON on stdin.
summary() {
    if [[ $JSON == jq ]]; then
        jq -r --argjson l "$LANES" '(.hosts // []) as $h | [.pid, ([$h[].lanes] | add // 0),
            ([$h[].connections] | add // 0), .wrappers,
            ([$h[] | select(.lanes >= $l)] | length)] | @tsv' 2>/dev/null
    else
        python3 -c '
import json, sys
s = json.load(sys.stdin); h = s.get("hosts") or []; l = int(sys.argv[1])
print(s["pid"], sum(x["lanes"] for x in h), sum(x["connections"] for x in h), s["wrappers"],
      sum(1 for x in h if x["lanes"] >= l), sep="\t")' "$LANES"
    fi
}

# per_host — one line per host from status JSON on stdin.
per_host() {
    if [[ $JSON == jq ]]; then
        jq -r '(.hosts // [])[] | "  \(.host): connections=\(.connections) lanes=\(.lanes) idle=\(.idle_lanes) ok=\(.jobs_ok) failed=\(.jobs_failed) busy=\(.jobs_busy) last_error=\(.last_error // "-")"'
    else
        python3 -c '
import json, sys
for x in json.load(sys.stdin).get("hosts") or []:
    print("  %s: connections=%d lanes=%d idle=%d ok=%d failed=%d busy=%d last_error=%s" % (x["host"],
          x["connections"], x["lanes"], x["idle_lanes"], x["jobs_ok"], x["jobs_failed"],
          x["jobs_busy"], x["last_error"] or "-"))'
    fi
}

# sampler FILE — append "LANES CONNECTIONS WRAPPERS VmRSS_kB" every 0.5 s until killed.
sampler() {
    local out=$1 js pid lanes conns wrappers full rss
    while :; do
        if js=$(status_json) && [[ -n $js ]]; then
            read -r pid lanes conns wrappers full < <(summary <<<"$js")
            rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)
            echo "$lanes $conns $wrappers ${rss:-0}" >>"$out"
        fi
        sleep 0.5
    done
}

kb_mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# measure WHEN — wait (20 s at most) for the lanes to reach hosts × lanes, then record the
# mux's lanes, connections, VmRSS and VmHWM as one result line.
measure() {
    local when=$1 js pid lanes conns full rss hwm threads verdict line
    # The lanes stay open after a build (the mux's idle timeout is 10 minutes); the
    # openers may still be finishing the last ones.
    hf_wait_for '[[ $(status_json | summary | cut -f2) -ge $TARGET ]]' 20
    js=$(status_json)
    pid=
    [[ -n $js ]] && read -r pid lanes conns _ full < <(summary <<<"$js")
    if [[ -z $pid || ! -r /proc/$pid/status ]]; then
        say "$when: no mux answers \`hoardcc status --json\`: $js"
        STATUS=1
        return
    fi
    per_host <<<"$js" >&2
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
    verdict="within $LIMIT_MB MB"
    if ((hwm > LIMIT_MB * 1024)); then
        verdict="OVER $LIMIT_MB MB"
        STATUS=1
    fi
    if ((lanes < TARGET)); then
        verdict+="; lanes short of $TARGET ($full of $NHOSTS hosts have $LANES)"
        STATUS=1
    fi
    line="mux RSS with $NHOSTS hosts x $LANES lanes: VmRSS=$(kb_mb "$rss") MB VmHWM=$(kb_mb "$hwm") MB ($rss kB / $hwm kB; lanes=$lanes, connections=$conns, threads=$threads, $when) — $verdict"
    say "$line"
    RESULTS+=("$line")
}

say "sshd ports: ${HF_HOST_PORTS// /, } (aliases host1..host$NHOSTS); HOARDCC_HOSTS=\"$HOSTS_LIST\"; make -j$JOBS over $FILES files; $ROUNDS rounds"
stop_mux
RESULTS=()
STATUS=0

# One compile first: its reservation warms every host of the list, so this is the cost of
# the open lanes alone, before any concurrent job.
printf 'int trivial(int x) { return x + 1; }\n' >"$WORK/t.c"
# shellcheck disable=SC2086 # CFLAGS_BENCH is split on purpose
if (cd "$WORK" && hf_run env HOARDCC_HOSTS="$HOSTS_LIST" HOARDCC_FALLBACK=0 \
    hoardcc gcc $CFLAGS_BENCH -c t.c -o t.o) >"$WORK/one.out" 2>&1; then
    measure "after one compile"
else
    say "the first compile failed: $(cat "$WORK/one.out")"
    STATUS=1
fi

for ((r = 1; r <= ROUNDS; r++)); do
    log=$WORK/joblog.$r
    samples=$WORK/samples.$r
    rm -f "$log" "$samples"
    make -s -C "$WORK/gen" clean >/dev/null 2>&1
    sampler "$samples" &
    sampler_pid=$!
    t0=$(date +%s%N)
    if ! hf_run env CC="hoardcc gcc" HOARDCC_HOSTS="$HOSTS_LIST" HOARDCC_FALLBACK=0 \
        HOARDCC_JOBLOG="$log" make -s -C "$WORK/gen" -j"$JOBS" CFLAGS="$CFLAGS_BENCH" \
        >"$WORK/make.out" 2>&1; then
        say "round $r: make failed:"
        tail -n 15 "$WORK/make.out" >&2
        STATUS=1
    fi
    t1=$(date +%s%N)
    kill "$sampler_pid" 2>/dev/null
    wait "$sampler_pid" 2>/dev/null
    read -r remote total < <(awk -F'\t' '{ t++; if ($1 == "remote") r++ } END { print r + 0, t + 0 }' "$log" 2>/dev/null || echo "0 0")
    read -r peak_lanes peak_wrappers peak_rss < <(awk '
        { if ($1 > l) l = $1; if ($3 > w) w = $3; if ($4 > m) m = $4 }
        END { print l + 0, w + 0, m + 0 }' "$samples" 2>/dev/null || echo "0 0 0")
    say "round $r: $(((t1 - t0) / 1000000)) ms, remote $remote/$total; during the build: up to $peak_lanes lanes, $peak_wrappers wrappers, sampled VmRSS up to $peak_rss kB"
    measure "after make -j$JOBS build $r, remote $remote/$total"
done

if ((STATUS)) && [[ -f $MUX_LOG ]]; then
    say "mux log ($MUX_LOG), warnings and errors:"
    grep -E 'WARN|ERROR|MaxSessions|refus' "$MUX_LOG" | tail -n 30 >&2
fi

echo
echo "## hoardcc mux memory, $NHOSTS hosts × $LANES lanes"
echo
echo "$(nproc) CPUs, $(ssh -V 2>&1 | cut -d, -f1); $NHOSTS aliases of one private sshd on 127.0.0.1" \
    "(distinct ports), server max_jobs = $TARGET; \`make -j$JOBS\` over $FILES generated files," \
    "HOARDCC_HOSTS=\"$HOSTS_LIST\"; 1 MB = 1024 kB."
echo
printf -- '- %s\n' "${RESULTS[@]}"
exit "$STATUS"
