#!/usr/bin/env bash
# Flywheel vs the Node.js peer, closed loop, one sitting, interleaved; prints
# Markdown tables with ratios. `make bench` runs it (not part of `make test`).
#
#   loadtest/bench.sh                       # everything: both servers, MODELS, c = 1 8 64, REPEAT runs
#   TARGETS=node DURATION=3 REPEAT=1 loadtest/bench.sh   # smoke: the Node peer alone
#
# What it does:
#   1. writes the bench models (go run ./loadtest/benchmodels) into a temp model
#      repository <tmp>/models/<name>/1/model.onnx (+ config.yaml enabling dynamic
#      batching, see BATCHING); adds models/ridership (latest version) when present;
#   2. starts `bin/flywheel serve` on it (127.0.0.1:FLYWHEEL_PORT) and the Node peer
#      (the bench harness's node-ort: fastify + onnxruntime-node, copied from NODE_DIR into
#      the temp folder where `npm ci` installs it; nothing is kept in the repository) as a
#      2-worker cluster twice: ORT default threads (NODE_PORT) and INTRA_OP_THREADS=1
#      (NODE_PORT+1, the fair configuration used for mlp_wide);
#   3. for each repeat, model and concurrency runs wrk (loadtest/oip.lua, one thread,
#      DURATION s) against each server back to back, recording req/s, latency
#      percentiles, errors and CPU (server processes, and the whole host);
#   4. prints every run, then the median per (model, concurrency) with ratios.
#
# Environment:
#   TARGETS="flywheel nolog node ceiling"   servers to run (flywheel is skipped with a note if it cannot start);
#              nolog = the same flywheel serve with the prediction log off (--predlog-db=, on
#              FLYWHEEL_NOLOG_PORT=FLYWHEEL_PORT+4): the log's cost as flywheel ÷ nolog in one sitting;
#              ceiling = loadtest/ceiling, a fasthttp server answering a fixed body without parsing or
#              running anything: what any server can reach here with wrk on the same cores (CEILING_PORT=18083)
#   MODELS="mlp_small mlp_wide ridership"   (ridership only if models/ridership/<v>/ exists)
#   CONCURRENCY="1 8 64"  DURATION=10 (s, 1..120)  REPEAT=2  WARMUP=2 (s per server and model)
#   BATCH=1 (rows per request)  BATCHING=1 (0: no config.yaml, the server's default)
#   FLYWHEEL_BIN=bin/flywheel  FLYWHEEL_PORT=18080  FLYWHEEL_ARGS= (extra serve flags)
#   NODE_DIR=../shared/bench/node-ort (or --node-dir DIR; the peer's package.json, lock and server.js)
#   NODE_PORT=18081  NODE_WORKERS=2  NODE_WIDE_INTRA=1 (intra-op threads of the peer for mlp_wide)
#   OUT=file   also write the tables there
#   OPEN=auto  open-loop runs (constant arrival rate, no coordinated omission) after the closed-loop
#              ones, with loadtest/openloop and, when found (PATH or bin/tools/k6), k6: auto = k6 when
#              found, 1 = k6 required, 0 = no open-loop runs
#   OPEN_RATE=auto  requests/s: auto = half of the lower of the two servers' best closed-loop
#              median req/s for the model (the same rate for both servers); OPEN_DURATION=20s
#   K6=path to the k6 binary
#   BINARY=1   send inputs as binary tensor data (loadtest/oip.lua); the Node peer does not
#              speak the extension, so use it with TARGETS=flywheel
#   ORTLOOP=1  also run loadtest/ortloop (ONNX Runtime's Run in a loop on preallocated tensors, one
#              session and one intra-op thread per goroutine) once per repeat and model, at
#              ORTLOOP_BATCH=64 rows on ORTLOOP_GOROUTINES=2 for ORTLOOP_DURATION=5s: the model's
#              ceiling on these cores; 0 = skip
# Caveats: wrk shares the 2 cores with the servers (~20-25 % of one core); c=1 mostly
# measures the VM's wake-up latency; compare rows whose host CPU % agree.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
HERE=$ROOT/loadtest
NODE_DIR=${NODE_DIR:-}
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while (($#)); do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --node-dir) NODE_DIR=$2; shift 2 ;;
    --node-dir=*) NODE_DIR=${1#*=}; shift ;;
    *) echo "unknown argument $1 (settings are environment variables, see the header)" >&2; exit 2 ;;
  esac
done
if [[ -z $NODE_DIR ]]; then
  for d in "$ROOT/../shared/bench/node-ort" "$ROOT/../../shared/bench/node-ort"; do
    [[ -f $d/server.js ]] && { NODE_DIR=$(cd "$d" && pwd); break; }
  done
fi
TARGETS=${TARGETS:-"flywheel nolog node ceiling"}
FLYWHEEL_NOLOG_PORT=${FLYWHEEL_NOLOG_PORT:-$((${FLYWHEEL_PORT:-18080} + 4))}
CEILING_PORT=${CEILING_PORT:-18083}
MODELS=${MODELS:-"mlp_small mlp_wide ridership"}
CONCURRENCY=${CONCURRENCY:-"1 8 64"}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-2}
WARMUP=${WARMUP:-2}
BATCH=${BATCH:-1}
BATCHING=${BATCHING:-1}
FLYWHEEL_BIN=${FLYWHEEL_BIN:-$ROOT/bin/flywheel}
FLYWHEEL_PORT=${FLYWHEEL_PORT:-18080}
FLYWHEEL_ARGS=${FLYWHEEL_ARGS:-}
NODE_PORT=${NODE_PORT:-18081}
NODE_WORKERS=${NODE_WORKERS:-2}
NODE_WIDE_INTRA=${NODE_WIDE_INTRA:-1}
OUT=${OUT:-}
OPEN=${OPEN:-auto}
OPEN_RATE=${OPEN_RATE:-auto}
OPEN_DURATION=${OPEN_DURATION:-20s}
K6=${K6:-$(command -v k6 || echo "$ROOT/bin/tools/k6")}
ORTLOOP=${ORTLOOP:-1}
ORTLOOP_BATCH=${ORTLOOP_BATCH:-64}
ORTLOOP_GOROUTINES=${ORTLOOP_GOROUTINES:-2}
ORTLOOP_DURATION=${ORTLOOP_DURATION:-5s}

command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk (make sysdeps)" >&2; exit 1; }
((DURATION >= 1 && DURATION <= 120)) || { echo "DURATION must be 1..120 s" >&2; exit 2; }

TMP=$(mktemp -d /tmp/flywheel-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- models -------------------------------------------------------------
mkdir -p "$TMP/onnx" "$TMP/models"
(cd "$ROOT" && go run ./loadtest/benchmodels -out "$TMP/onnx" -cards >/dev/null)
declare -A INPUT FEATURES
for m in mlp_small mlp_wide; do
  mkdir -p "$TMP/models/$m/1"
  cp "$TMP/onnx/$m.onnx" "$TMP/models/$m/1/model.onnx"
  mv "$TMP/onnx/$m.json" "$TMP/models/$m/1/model.json" # card with a drift reference
  INPUT[$m]=input
done
FEATURES[mlp_small]=16
FEATURES[mlp_wide]=256
models=()
for m in $MODELS; do
  if [[ $m == ridership ]]; then
    v=$(ls "$ROOT/models/ridership" 2>/dev/null | grep -E '^[0-9]+$' | sort -n | tail -1 || true)
    if [[ -z $v || ! -f $ROOT/models/ridership/$v/model.onnx ]]; then
      echo "note: models/ridership/<version>/model.onnx not found; skipping ridership" >&2
      continue
    fi
    command -v jq >/dev/null || { echo "note: jq not found (apt-get install jq); skipping ridership" >&2; continue; }
    mkdir -p "$TMP/models/ridership"
    cp -r "$ROOT/models/ridership/$v" "$TMP/models/ridership/1"
    cp "$ROOT/models/ridership/$v/model.onnx" "$TMP/onnx/ridership.onnx"
    card=$ROOT/models/ridership/$v/model.json
    INPUT[ridership]=$(jq -r '.inputs[0].name' "$card")
    FEATURES[ridership]=$(jq -r '.inputs[0].shape[1]' "$card")
  fi
  models+=("$m")
done
if [[ $BATCHING == 1 ]]; then
  # dynamic batching per model (server/batch.Config keys)
  for m in "${models[@]}"; do
    cat >"$TMP/models/$m/config.yaml" <<YAML
dynamic_batching:
  max_batch_size: 64
  max_queue_delay_microseconds: 0
  queue_capacity: 1024
YAML
  done
fi

# ---- servers ------------------------------------------------------------
wait_ready() { # url pid log
  local i
  for i in $(seq 150); do
    curl -fs -m1 "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { echo "server exited:" >&2; tail -20 "$3" >&2; return 1; }
    sleep 0.2
  done
  echo "not ready after 30 s: $1" >&2
  tail -20 "$3" >&2
  return 1
}
pids_of() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ' || true)"; }

declare -A URL SPIDS
run_targets=()
for t in $TARGETS; do
  case $t in
    flywheel | nolog)
      # a stale bin/flywheel would measure old code: rebuild (cheap when up to date)
      if [[ $FLYWHEEL_BIN == "$ROOT/bin/flywheel" && -z ${built:-} ]]; then
        (cd "$ROOT" && make -s build) || true
        built=1
      fi
      port=$FLYWHEEL_PORT db=$TMP/predlog.db
      [[ $t == nolog ]] && port=$FLYWHEEL_NOLOG_PORT db=
      log=$TMP/$t.log
      # shellcheck disable=SC2086
      "$FLYWHEEL_BIN" serve --models "$TMP/models" --listen "127.0.0.1:$port" \
        --predlog-db="$db" $FLYWHEEL_ARGS >"$log" 2>&1 &
      pid=$!
      PIDS+=("$pid")
      if wait_ready "http://127.0.0.1:$port/v2/health/ready" "$pid" "$log"; then
        for m in "${models[@]}"; do URL[$t,$m]=http://127.0.0.1:$port; SPIDS[$t,$m]=$(pids_of "$pid"); done
        run_targets+=("$t")
      else
        echo "note: flywheel serve ($t) did not start; running without it" >&2
      fi
      ;;
    node)
      if [[ -z $NODE_DIR || ! -f $NODE_DIR/server.js || ! -f $NODE_DIR/package-lock.json ]]; then
        echo "note: the Node peer was not found (set NODE_DIR or --node-dir to the bench harness's node-ort); running without it" >&2
        continue
      fi
      # A private copy: the peer's lock file stays outside this repository.
      mkdir -p "$TMP/node-ort"
      cp "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json" "$NODE_DIR/server.js" "$TMP/node-ort/"
      [[ -f $NODE_DIR/.npmrc ]] && cp "$NODE_DIR/.npmrc" "$TMP/node-ort/"
      chmod -R u+w "$TMP/node-ort"
      if ! (cd "$TMP/node-ort" && npm ci --prefer-offline --no-audit --no-fund >"$TMP/npm.log" 2>&1); then
        echo "note: npm ci failed for the Node peer; running without it:" >&2
        tail -5 "$TMP/npm.log" >&2
        continue
      fi
      for variant in default intra1; do
        port=$NODE_PORT
        env=(WORKERS="$NODE_WORKERS" HOST=127.0.0.1 MODEL_DIR="$TMP/onnx")
        if [[ $variant == intra1 ]]; then
          port=$((NODE_PORT + 1))
          env+=(INTRA_OP_THREADS="$NODE_WIDE_INTRA")
        fi
        log=$TMP/node-$variant.log
        env "${env[@]}" PORT="$port" node "$TMP/node-ort/server.js" >"$log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        wait_ready "http://127.0.0.1:$port/v2/health/ready" "$pid" "$log"
        sleep 0.5 # let every cluster worker come up
        SPIDS[node-$variant]=$(pids_of "$pid")
      done
      for m in "${models[@]}"; do
        if [[ $m == mlp_wide ]]; then
          URL[node,$m]=http://127.0.0.1:$((NODE_PORT + 1))
          SPIDS[node,$m]=${SPIDS[node-intra1]}
        else
          URL[node,$m]=http://127.0.0.1:$NODE_PORT
          SPIDS[node,$m]=${SPIDS[node-default]}
        fi
      done
      run_targets+=(node)
      ;;
    ceiling)
      log=$TMP/ceiling.log
      if ! (cd "$ROOT" && go build -o "$TMP/ceiling" ./loadtest/ceiling); then
        echo "note: loadtest/ceiling did not build; running without it" >&2
        continue
      fi
      "$TMP/ceiling" -listen "127.0.0.1:$CEILING_PORT" >"$log" 2>&1 &
      pid=$!
      PIDS+=("$pid")
      wait_ready "http://127.0.0.1:$CEILING_PORT/v2/health/ready" "$pid" "$log" || continue
      for m in "${models[@]}"; do URL[ceiling,$m]=http://127.0.0.1:$CEILING_PORT; SPIDS[ceiling,$m]=$pid; done
      run_targets+=(ceiling)
      ;;
    *) echo "unknown target $t (flywheel, nolog, node, ceiling)" >&2; exit 2 ;;
  esac
done
((${#run_targets[@]} > 0)) || { echo "no server to benchmark" >&2; exit 1; }
if [[ $ORTLOOP == 1 ]] && ! (cd "$ROOT" && go build -o "$TMP/ortloop" ./loadtest/ortloop); then
  echo "note: loadtest/ortloop did not build; no ONNX Runtime ceiling in the table" >&2
  ORTLOOP=0
fi

# ---- load ---------------------------------------------------------------
cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local t=0 p
  for p in $1; do
    [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{sub(/^.*\) /,""); print $12 + $13}' "/proc/$p/stat")))
  done
  echo $t
}
host_ticks() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)

run_wrk() { # target model concurrency seconds -> RESULT line
  local t=$1 m=$2
  MODEL=$m INPUT=${INPUT[$m]} FEATURES=${FEATURES[$m]} BATCH=$BATCH \
    timeout $(($4 + 30)) wrk -t1 -c"$3" -d"$4"s --timeout 30s -s "$HERE/oip.lua" "${URL[$t,$m]}/v2/models/$m/infer" | grep '^RESULT'
}

for m in "${models[@]}"; do
  n=${FEATURES[$m]}
  data=$(awk -v n="$n" -v b="$BATCH" 'BEGIN{for(r=0;r<b;r++) for(i=0;i<n;i++) printf "%s%.7g", (r||i?",":""), (i%7)/7-0.5}')
  body="{\"inputs\":[{\"name\":\"${INPUT[$m]}\",\"shape\":[$BATCH,$n],\"datatype\":\"FP32\",\"data\":[$data]}]}"
  for t in "${run_targets[@]}"; do
    printf 'check %-8s %-10s -> ' "$t" "$m"
    curl -fsS -m 5 -H 'Content-Type: application/json' -d "$body" "${URL[$t,$m]}/v2/models/$m/infer" | head -c 300
    echo
    ((WARMUP > 0)) && run_wrk "$t" "$m" 8 "$WARMUP" >/dev/null
  done
done

# Server overhead from Flywheel's own histograms: per request, request duration
# minus ORT run time (flywheel_inference_overhead_seconds, buckets 20 % wide), as
# the median interpolated within its bucket; the mean from the request and
# compute histograms' _sum/_count deltas is exact.
scrape() { # model -> "name le value" lines for the request, compute and overhead histograms of model
  curl -fs -m 5 "http://127.0.0.1:$FLYWHEEL_PORT/metrics" 2>/dev/null |
    awk -v m="model=\"$1\"" 'index($0, m) && /^flywheel_inference_(request_duration|compute_duration|overhead)_seconds_(bucket|sum|count)/ {
      name = $1; sub(/\{.*/, "", name); le = "-"
      if (match($1, /le="[^"]*"/)) le = substr($1, RSTART + 4, RLENGTH - 5)
      print name, le, $2 }'
}
overhead() { # before-file after-file -> "mean_us p50_us"
  awk '
    FNR == NR { before[$1 " " $2] = $3; next }
    { d = $3 - before[$1 " " $2]; kind = ($1 ~ /request/) ? "r" : ($1 ~ /compute/) ? "c" : "o"
      if ($1 ~ /_sum$/) sum[kind] = d
      else if ($1 ~ /_count$/) cnt[kind] = d
      else { n[kind]++; le[kind, n[kind]] = $2; cum[kind, n[kind]] = d } }
    function p50(k,    i, half, lo, prev, hi) {
      half = cnt[k] / 2; prev = 0; lo = 0
      for (i = 1; i <= n[k]; i++) {
        hi = le[k, i]
        if (cum[k, i] >= half) {
          if (hi == "+Inf") return lo
          return lo + (hi - lo) * (cum[k, i] > prev ? (half - prev) / (cum[k, i] - prev) : 0)
        }
        prev = cum[k, i]; lo = hi
      }
      return lo
    }
    END {
      if (!cnt["r"] || !cnt["c"] || !cnt["o"]) { print "- -"; exit }
      printf "%.1f %.1f\n", 1e6 * (sum["r"] / cnt["r"] - sum["c"] / cnt["c"]), 1e6 * p50("o")
    }' "$1" "$2"
}

RES=$TMP/results.tsv # target model c run rps p50 p90 p99 max errors host server overhead_mean_us overhead_p50_us
: >"$RES"
ORTRES=$TMP/ortloop.tsv # model run rows_per_s
: >"$ORTRES"
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "# Flywheel vs Node peer — $(date -u +%FT%TZ), $(nproc) CPUs ($CPU_MODEL), wrk -t1, ${DURATION}s per run, batch $BATCH"
echo
for run in $(seq 1 "$REPEAT"); do
  for m in "${models[@]}"; do
    for c in $CONCURRENCY; do
      for t in "${run_targets[@]}"; do
        [[ $t == flywheel ]] && scrape "$m" >"$TMP/m0"
        s0=$(cpu_ticks "${SPIDS[$t,$m]}")
        read -r hb0 ht0 < <(host_ticks)
        line=$(run_wrk "$t" "$m" "$c" "$DURATION")
        read -r hb1 ht1 < <(host_ticks)
        s1=$(cpu_ticks "${SPIDS[$t,$m]}")
        ovh="- -"
        if [[ $t == flywheel ]]; then
          scrape "$m" >"$TMP/m1"
          ovh=$(overhead "$TMP/m0" "$TMP/m1")
        fi
        get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
        errs=$(($(get non2xx) + $(get socket_errors)))
        host=$(awk -v b=$((hb1 - hb0)) -v t=$((ht1 - ht0)) -v n="$NCPU" 'BEGIN{printf "%.0f", t ? 100*n*b/t : 0}')
        srv=$(awk -v d=$((s1 - s0)) -v hz="$HZ" -v s="$(get duration_s)" 'BEGIN{printf "%.0f", 100*d/hz/s}')
        printf '%s\t%s\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$m" "$c" "$run" "$(get rps)" \
          "$(get p50_ms)" "$(get p90_ms)" "$(get p99_ms)" "$(get max_ms)" "$errs" "$host" "$srv" ${ovh% *} ${ovh#* } >>"$RES"
        printf '  run %s %-9s %-10s c=%-3s %8.0f req/s  p50 %s ms  p99 %s ms  errors %s  host %s%%  server %s%%\n' \
          "$run" "$t" "$m" "$c" "$(get rps)" "$(get p50_ms)" "$(get p99_ms)" "$errs" "$host" "$srv" >&2
      done
    done
    if [[ $ORTLOOP == 1 ]]; then
      line=$(cd "$ROOT" && timeout 300 "$TMP/ortloop" -model "$TMP/models/$m/1/model.onnx" -batch "$ORTLOOP_BATCH" \
        -goroutines "$ORTLOOP_GOROUTINES" -duration "$ORTLOOP_DURATION" 2>&1 | grep '^RESULT' || true)
      rows=$(sed -n 's/.* rows_per_s=\([^ ]*\).*/\1/p' <<<"$line")
      if [[ -n $rows ]]; then
        printf '%s\t%s\t%s\n' "$m" "$run" "$rows" >>"$ORTRES"
        printf '  run %s ortloop   %-10s batch %s x %s goroutines: %s rows/s\n' "$run" "$m" "$ORTLOOP_BATCH" "$ORTLOOP_GOROUTINES" "$rows" >&2
      else
        echo "note: ortloop gave no result for $m (a model with one FP32 input [N,F] and output [N,C] is needed)" >&2
      fi
    fi
  done
done

# ---- open loop (k6) -----------------------------------------------------
OPENRES=$TMP/open.tsv # target model rate rps p50 p90 p99 max failed dropped
: >"$OPENRES"
# Two open-loop generators: loadtest/openloop (Go, ~30 µs of CPU per request, so it holds rates
# of tens of thousands a second on these cores) and k6 (the issue's tool, ~200 µs a request: it
# drops what it cannot start on time at such rates, and says so in its dropped column).
tools=()
if [[ $OPEN != 0 ]]; then
  if (cd "$ROOT" && go build -o "$TMP/openloop" ./loadtest/openloop); then
    tools+=(openloop)
  else
    echo "note: loadtest/openloop did not build" >&2
  fi
  if [[ -x $K6 ]]; then
    tools+=(k6)
  elif [[ $OPEN == 1 ]]; then
    echo "k6 not found at $K6 (go install go.k6.io/k6@latest, GOBIN=bin/tools)" >&2; exit 1
  else
    echo "note: k6 not found; open-loop runs with loadtest/openloop only (GOBIN=$ROOT/bin/tools go install go.k6.io/k6@latest)" >&2
  fi
fi
if ((${#tools[@]} > 0)); then
  for m in "${models[@]}"; do
    rate=$OPEN_RATE
    if [[ $rate == auto ]]; then
      rate=$(awk -F'\t' -v m="$m" '$2 == m && $1 != "ceiling" && $1 != "nolog" { k = $1 SUBSEP $3; s[k] += $5; n[k]++; srv[$1] = 1 }
        END { lo = -1
          for (t in srv) { best = 0
            for (k in s) { split(k, a, SUBSEP); if (a[1] == t && s[k] / n[k] > best) best = s[k] / n[k] }
            if (lo < 0 || best < lo) lo = best }
          printf "%d", lo / 2 }' "$RES")
    fi
    ((rate > 0)) || continue
    for tool in "${tools[@]}"; do
      for t in "${run_targets[@]}"; do
        [[ $t == ceiling || $t == nolog ]] && continue
        url="${URL[$t,$m]}/v2/models/$m/infer"
        if [[ $tool == k6 ]]; then
          line=$(MODEL=$m FEATURES=${FEATURES[$m]} INPUT=${INPUT[$m]} BATCH=$BATCH timeout 300 "$K6" run -q \
            -e URL="$url" -e RATE="$rate" -e DURATION="$OPEN_DURATION" "$HERE/oip.k6.js" 2>/dev/null | grep '^RESULT' || true)
        else
          line=$(timeout 300 "$TMP/openloop" -url "$url" -rate "$rate" -duration "$OPEN_DURATION" -conns 64 \
            -features "${FEATURES[$m]}" -input "${INPUT[$m]}" -batch "$BATCH" 2>&1 | grep '^RESULT' || true)
        fi
        get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$m" "$rate" "$(get rps)" "$(get p50_ms)" "$(get p90_ms)" \
          "$(get p99_ms)" "$(get max_ms)" "$(get failed)" "$(get dropped)" "$tool" >>"$OPENRES"
        printf '  open  %-8s %-9s %-10s rate %s: %s req/s  p50 %s ms  p99 %s ms  failed %s  dropped %s\n' "$tool" "$t" "$m" "$rate" \
          "$(get rps)" "$(get p50_ms)" "$(get p99_ms)" "$(get failed)" "$(get dropped)" >&2
      done
    done
  done
fi

# ---- tables -------------------------------------------------------------
{
  echo "## Every run"
  echo
  echo "| server | model | conc | run | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | host CPU % | server CPU % | overhead mean µs | overhead p50 µs |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14}' "$RES"
  echo
  echo "## Median of $REPEAT runs per model and concurrency"
  echo
  echo "Machine: $NCPU × $CPU_MODEL; load average $LOAD_BEFORE before the runs, $(cut -d' ' -f1-3 /proc/loadavg) after."
  echo
  echo "| model | conc | flywheel req/s | node req/s | flywheel ÷ node | ceiling req/s | flywheel ÷ ceiling | ortloop rows/s | flywheel ÷ min(ceiling, ortloop) | no-log req/s | log on ÷ off | flywheel p50 ms | flywheel p99 ms | node p99 ms | ceiling p99 ms | flywheel p99 ÷ ceiling p99 | flywheel overhead p50 µs | server CPU µs/request: flywheel / no-log / ceiling / node |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' -v ortres="$ORTRES" '
    function median(key, col,    n, i, j, v, tmp) {
      n = cnt[key]; for (i = 1; i <= n; i++) v[i] = val[key, i, col]
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { tmp = v[i]; v[i] = v[j]; v[j] = tmp }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function cell(x, fmt) { return x == "" ? "-" : sprintf(fmt, x) }
    function ratio(a, b) { return a == "" || b == "" || b == 0 ? "-" : sprintf("%.2f", a / b) }
    FILENAME == ortres { key = "ortloop" SUBSEP $1; cnt[key]++; val[key, cnt[key], "rps"] = $3; next }
    {
      key = $1 SUBSEP $2 SUBSEP $3; cnt[key]++
      val[key, cnt[key], "rps"] = $5; val[key, cnt[key], "p50"] = $6; val[key, cnt[key], "p99"] = $8
      val[key, cnt[key], "ovh"] = $14
      val[key, cnt[key], "cpu"] = $5 > 0 ? $12 * 1e4 / $5 : ""
      if (!(($2, $3) in seen)) { seen[$2, $3] = 1; order[++no] = $2 SUBSEP $3 }
    }
    function get(s, m, c, col,    key) { key = s SUBSEP m SUBSEP c; return cnt[key] ? median(key, col) : "" }
    END {
      for (k = 1; k <= no; k++) {
        split(order[k], mc, SUBSEP); m = mc[1]; c = mc[2]
        fr = get("flywheel", m, c, "rps"); nr = get("node", m, c, "rps"); cr = get("ceiling", m, c, "rps")
        or = cnt["ortloop" SUBSEP m] ? median("ortloop" SUBSEP m, "rps") : ""
        lim = cr; if (or != "" && (lim == "" || or < lim)) lim = or
        fp99 = get("flywheel", m, c, "p99"); cp99 = get("ceiling", m, c, "p99")
        xr = get("nolog", m, c, "rps")
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m, c,
          cell(fr, "%.0f"), cell(nr, "%.0f"), ratio(fr, nr), cell(cr, "%.0f"), ratio(fr, cr), cell(or, "%.0f"), ratio(fr, lim),
          cell(xr, "%.0f"), ratio(fr, xr),
          cell(get("flywheel", m, c, "p50"), "%.3f"), cell(fp99, "%.3f"), cell(get("node", m, c, "p99"), "%.3f"),
          cell(cp99, "%.3f"), ratio(fp99, cp99), cell(get("flywheel", m, c, "ovh"), "%s"),
          cell(get("flywheel", m, c, "cpu"), "%.1f") " / " cell(get("nolog", m, c, "cpu"), "%.1f") " / " \
            cell(get("ceiling", m, c, "cpu"), "%.1f") " / " cell(get("node", m, c, "cpu"), "%.1f")
      }
    }' "$ORTRES" "$RES"
  echo
  echo "Overhead: per request, Flywheel's request duration minus its ORT run time, from its own /metrics during the run"
  echo "(flywheel_inference_overhead_seconds: median interpolated within 20 %-wide buckets; the mean from _sum/_count)."
  echo "It includes decoding and, with batching under load, the wait for the previous batch (queueing)."
  echo "Ceiling: loadtest/ceiling answers a fixed body without parsing or running a model (fasthttp, like Flywheel): the most"
  echo "any server reaches here with wrk -t1 on the same two cores; a ratio to Node above ceiling/node is out of reach."
  echo "Node peer: ${NODE_WORKERS}-worker cluster; ORT default threads for mlp_small/ridership, INTRA_OP_THREADS=$NODE_WIDE_INTRA for mlp_wide."
  echo "ortloop: loadtest/ortloop, ONNX Runtime's Run on preallocated tensors of $ORTLOOP_BATCH rows, $ORTLOOP_GOROUTINES goroutines with a session"
  echo "and one intra-op thread each, ${ORTLOOP_DURATION} per repeat: the model's ceiling here; flywheel ÷ min(ceiling, ortloop) is the issue's ratio."
  echo "no-log: the same flywheel serve with the prediction log off (--predlog-db=; drift, metrics and request ids on), run"
  echo "back to back with it: log on ÷ off is the prediction log's share of req/s."
  echo "Server CPU per request: the server processes' user+system CPU during a run over its requests (median of the runs);"
  echo "on a box shared with other work it moves much less than req/s, which depends on the CPU share a server gets."
  if [[ -s $OPENRES ]]; then
    echo
    echo "## Open loop: constant arrival rate, ${OPEN_DURATION} per run, the same rate for both servers"
    echo
    echo "| tool | server | model | rate req/s | achieved req/s | p50 ms | p90 ms | p99 ms | max ms | failed | dropped |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $11,$1,$2,$3,$4,$5,$6,$7,$8,$9,$10}' "$OPENRES"
    echo
    echo "Latency is measured from each request's due time (no coordinated omission). openloop (loadtest/openloop, Go,"
    echo "64 keep-alive connections, ~30 µs of CPU per request) drops a request not sent within 1 s of its due time;"
    echo "k6 (loadtest/oip.k6.js, ~0.2 ms of CPU per request) drops what it cannot start on time (no free VU)."
    echo "Both share the two cores with the servers."
  fi
} | tee ${OUT:+"$OUT"}
