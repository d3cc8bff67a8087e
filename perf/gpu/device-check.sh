#!/usr/bin/env bash
# One call on a lent GPU machine (the device tool; ../shared/gpu/README.md): correctness of the gpu backend against
# the expected verdicts, then the throughput sweep (whose --check runs the reference's adversarial mix first, for the GPU also repeated to the largest batch, which
# goes out in chunks on both streams), then
# the compiler's report on the kernel. Prepare here, from the project root:
#   ../shared/gpu/bundle.sh src/MegaNet.Node meganet            -> .gpu-bundle/bundle.tar.xz
#   mkdir -p .gpu-check && cp ../shared/vectors/*.jsonl .gpu-check/   (lines with a "meganet" verdict)
#   MEGANET_PTX_OUT=$PWD/.gpu-check dotnet test tests/MegaNet.Verify.Tests -c Release --filter 'FullyQualifiedName~compiles_to_PTX|FullyQualifiedName~widening_rewrite_turns'
# (.gpu-check must be in .git/info/exclude), then call the device tool's run with carry [".gpu-bundle", ".gpu-check"].
# Usage there: bash perf/gpu/device-check.sh [BATCH_SIZES] [SECONDS_PER_POINT]; logs land in $OUT.
# BACKEND=gpu-cpu runs the same steps here, without a GPU, to try the script. MODES="1" checks only the default
# multiply path and PTXAS=0 skips the ptxas report, for a call that must be short.
# Both modes hash on the device (the default); MEGANET_GPU_HOST_HASH=1 in the environment hashes on the host.
# CHUNKS="32768 65536" then times batches of CHUNK_SIZES (default 32768,65536,131072) again with each of those items
# per launch (MEGANET_GPU_CHUNK; by default one launch up to the threads the device holds, equal launches above), verdicts checked first.
# LAUNCH_GROUPS="96 128" does the same with that many threads in every group of a launch (MEGANET_GPU_GROUP; by default
# whole warps dividing the kernel's occupancy group, as many as still give every multiprocessor a group).
set -uo pipefail
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
sizes=${1:-1024,4096,16384,65536,262144,1048576}
seconds=${2:-1}
backend=${BACKEND:-gpu}
export PATH=$PATH:/usr/local/cuda/bin
step() { echo; echo "=== $* ($(date +%T))"; }
# Any wrong verdict or failed step makes the script exit 1 (the device tool reports rc), not just print it.
status=0

# The machine, libcuda.so and the bundle unpacked into $b, with "${meganet[@]}" to run it (shared with relay-check.sh).
source "$(dirname "$0")/unpack.sh" || exit 1

# The plain C# multiply first, then the PTX-widened one (VerifierOptions.GpuInlinePtx, the default: limb products
# rewritten to mul.wide.s32; checked on an H200 in perf/gpu/results/2026-11-30-h200-run2.txt).
for ptx in ${MODES:-0 1}; do
  export MEGANET_GPU_INLINE_PTX=$ptx
  step "MEGANET_GPU_INLINE_PTX=$ptx: verdicts of --backend $backend against each file's expected verdicts"
  failed=0
  cat .gpu-check/*.jsonl > /tmp/all.jsonl
  timeout 300 "${meganet[@]}" verify --backend "$backend" --in /tmp/all.jsonl --out "$out/verdicts-$ptx.jsonl" 2>&1 | tail -2
  python3 - /tmp/all.jsonl "$out/verdicts-$ptx.jsonl" <<'PY' || failed=1
import collections, json, sys
want = [json.loads(l) for l in open(sys.argv[1])]
got = [json.loads(l)["valid"] for l in open(sys.argv[2])]
per_set = collections.Counter(w["set"] for w in want)
bad = [w for w, g in zip(want, got) if w["meganet"] != g]
print(f"{len(got)} of {len(want)} verdicts ({dict(per_set)}), {len(bad)} differ from the expected")
for w in bad[:8]:
    print("  differs:", w.get("set"), w.get("id"), w.get("kind", ""), "expected", w["meganet"])
sys.exit(1 if bad or len(got) != len(want) else 0)
PY
  echo "verdict check: $([ $failed = 0 ] && echo PASSED || echo FAILED)"
  [ $failed = 0 ] || status=1

  # simd is timed once, beside the default kernel.
  others=$([ $ptx = 0 ] && echo ",simd" || echo "")
  step "MEGANET_GPU_INLINE_PTX=$ptx: sweep of $backend$others (all cores) against libsodium"
  timeout 420 "${meganet[@]}" bench --backend "$backend$others" --threads "$(nproc)" --batch "$sizes" --seconds "$seconds" --check --check-items 16384 \
    --json "$out/bench-$ptx.json" 2>&1 | tee "$out/bench-$ptx.txt" | grep -v "^  batch"
  bench=${PIPESTATUS[0]}
  [ "$bench" = 0 ] || { echo "bench FAILED (exit $bench)"; status=1; }
done
unset MEGANET_GPU_INLINE_PTX

# Times CHUNK_SIZES again with one variable set: rebench WHAT VARIABLE VALUE NAME (logs bench-NAME.*).
rebench() {
  step "$2=$3: $backend at ${CHUNK_SIZES:-32768,65536,131072} with $1"
  env "$2=$3" timeout 300 "${meganet[@]}" bench --backend "$backend" --batch "${CHUNK_SIZES:-32768,65536,131072}" --seconds "$seconds" \
    --check --check-items 16384 --json "$out/bench-$4.json" 2>&1 | tee "$out/bench-$4.txt" | grep -v "^  batch"
  bench=${PIPESTATUS[0]}
  [ "$bench" = 0 ] || { echo "bench FAILED (exit $bench)"; status=1; }
}
for chunk in ${CHUNKS:-}; do rebench "$chunk items per launch" MEGANET_GPU_CHUNK "$chunk" "chunk-$chunk"; done
for group in ${LAUNCH_GROUPS:-}; do rebench "groups of $group threads" MEGANET_GPU_GROUP "$group" "group-$group"; done

[ "${PTXAS:-1}" = 1 ] && step "ptxas for sm_90"
[ "${PTXAS:-1}" = 1 ] && for p in .gpu-check/*.ptx perf/gpu/*.ptx; do
  name=$(basename "$p" .ptx)
  timeout 120 ptxas -arch=sm_90 -v "$p" -o "/tmp/$name.cubin" > "$out/ptxas-$name.txt" 2>&1
  grep -E "registers|spill|stack" "$out/ptxas-$name.txt" | head -6
  cuobjdump -sass "/tmp/$name.cubin" 2>/dev/null | awk '/\/\*[0-9a-f]{4}\*\// { for (i = 2; i <= NF; i++) if ($i !~ /^@/ && $i !~ /^\/\*/) { print $i; break } }' \
    | sort | uniq -c | sort -rn | head -14 | awk -v n="$name" '{ printf "%s %s:%s\n", n, $2, $1 }' | paste -sd' '
  [ "$name" = widen ] && cuobjdump -sass "/tmp/$name.cubin" | grep -E "Function|IMAD|IMUL" | head -20
done
echo "done $(date +%T), $([ $status = 0 ] && echo "every check passed" || echo "A CHECK FAILED (see above)")"
exit $status
