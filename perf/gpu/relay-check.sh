#!/usr/bin/env bash
# One call on a lent many-core machine (the device tool; ../shared/gpu/README.md): why a node with cores to spare
# carries only 125,000-200,000 streamed envelopes a second (docs/performance-log.md, 2026-12-04, forty-fourth session).
# Each run starts `meganet node` in its own process (data on tmpfs, mailbox quotas and the per-key rate limit raised),
# streams ENVELOPES into it with `meganet load` from another process (64 a request), and records beside the load's own
# figures:
#   - the node's instruments about every 5 s (`meganet profile --once --json`, ~2.5 s to collect, then 2 s apart): admission queue depth and latency, verifier
#     batch size and time, the store's put and commit latency, so the time an envelope spends in the node can be told
#     from the time it spends in gRPC and the client;
#   - the node's busiest threads every second (perf/thread-cpu.py); the load prints its own busiest thread over the
#     streaming phase.
# Prepare here, from the project root: ../shared/gpu/bundle.sh src/MegaNet.Node meganet, then call the device tool's
# run with carry [".gpu-bundle"]. Usage there: bash perf/gpu/relay-check.sh [ENVELOPES] (default 1,000,000: about 6 s
# of streaming at 170,000/s, 2.8 GB on tmpfs); logs in $OUT/relay-logs.tgz. RUNS lists the runs as
# BACKEND:STREAM_WINDOW[:CLIENTS[:CONNECTIONS]][+NAME=VALUE...] (16 clients on 1 connection unless given; each
# +NAME=VALUE sets the node option NAME, as MEGANET_MegaNet__NAME=VALUE): StreamWindow is how many envelopes a stream
# may have unanswered, so 16 streams of 512 hold at most 8,192 in the node, and StoreInFlight how many verified ones
# admission may have handed to the store unanswered (4,096 is about the four batches that bounded it before
# 2026-12-04; the default carried more on 16 cores, 2026-12-04, forty-sixth session), and StoreGroupsInFlight how
# many store groups may be committing at once (default 2), and StoreApplyThreads on how many threads the apply stage
# may write a large group's table records and leaf hashes (default 1). The default runs, about 6 minutes: "simd:512
# simd:512+StoreGroupsInFlight=4 simd:512+StoreApplyThreads=4 simd:512+StoreGroupsInFlight=4+StoreApplyThreads=4
# nostore-simd:512 bare-simd:512 auto:512 auto:512+StoreGroupsInFlight=4+StoreApplyThreads=4 nostore-auto:512" (with
# the store's stage times printed, and the ceilings, they tell where the store's round trip goes, whether overlapping
# commits, a wider apply stage or both shorten it, and what the rest carries; more commits in flight can only help
# while the apply stage, one group at a time, keeps up). A window much wider
# than 512 fills the admission queue, and the node then demands proof of work, as it should under load, which the
# load does not stamp (refused as FailedPrecondition). Works without a GPU for a try (RUNS="simd:512:8").
# A BACKEND of nostore-NAME or bare-NAME serves perf/MegaNet.RelayCeiling instead of the node, with verifier NAME:
# the node without its store, or without its store and verification, to tell which stage limits a many-core machine
# (StreamWindow 512 and the default options only: the ceiling takes no settings). It needs the ceiling's own three
# files packed beside the bundle, whose app folder holds the rest (build both from one checkout):
#   dotnet publish perf/MegaNet.RelayCeiling -c Release -r linux-x64 --self-contained false -p:UseAppHost=false \
#     -o /tmp/ceiling && tar -cJf .gpu-bundle/ceiling.tar.xz -C /tmp/ceiling MegaNet.RelayCeiling.dll \
#     MegaNet.RelayCeiling.deps.json MegaNet.RelayCeiling.runtimeconfig.json
set -uo pipefail
out=${OUT:-/tmp/relay-out}
# The device tool brings back only a few files from $OUT, and none whose name has an "=": the logs are written here
# and packed into one archive, $OUT/relay-logs.tgz, at the end.
logs=$(mktemp -d /tmp/relay-logs.XXXX)
mkdir -p "$out"
envelopes=${1:-1000000}
step() { echo; echo "=== $* ($(date +%T))"; }
source "$(dirname "$0")/unpack.sh" || exit 1
here=$(cd "$(dirname "$0")/../.." && pwd)
data=/dev/shm/mn-relay-check
port=7711
status=0

# The node's instruments, one line per snapshot with the load running (accepted/s over 0): what each stage took.
summarize() {
  python3 - "$1" <<'PY'
import json, sys
def q(i):
    return i["quantiles"] or f'{i["value"]:g}'
for line in open(sys.argv[1]):
    try:
        snap = json.loads(line)
    except ValueError:
        continue
    by = {}
    for i in snap["instruments"]:
        by.setdefault(i["instrument"], []).append(i)
    accepted = sum(i["per_second"] for i in by.get("meganet.admission.accepted", []))
    if accepted <= 0:
        continue
    pick = lambda name: "; ".join(q(i) for i in by.get(name, [])) or "-"
    # The apply stage takes one group at a time: its median time by the groups a second, near 1, is a stage at its limit.
    groups = sum(i["per_second"] for i in by.get("meganet.store.group_size", []))
    apply_p50 = [float(x.split("=")[1]) for i in by.get("meganet.store.apply_duration", []) for x in i["quantiles"].split(";") if x.startswith("0.5=")]
    busy = f'{groups * apply_p50[0] / 1000:.2f}' if apply_p50 else "-"
    # Per envelope (median time by median group): the one-group-at-a-time stages' cost, and the rate each alone allows.
    def p50(name):
        v = [float(x.split("=")[1]) for i in by.get(name, []) for x in i["quantiles"].split(";") if x.startswith("0.5=")]
        return v[0] if v else None
    size = p50("meganet.store.group_size")
    for stage in ("prepare", "apply"):
        ms = p50(f"meganet.store.{stage}_duration")
        if size and ms:
            busy += f'; {stage} {ms * 1000 / size:.2f} µs an envelope (alone {size / ms * 1000:,.0f}/s)'
    print(f'accepted {accepted:,.0f}/s, queue {pick("meganet.admission.queue_depth")}; admission latency ms {pick("meganet.admission.latency")}; '
          f'batch {pick("meganet.verify.batch_size")}, batch ms {pick("meganet.verify.batch_duration")}; '
          f'store put ms {pick("meganet.store.put_latency")}, commit ms {pick("meganet.store.commit_latency")}; '
          f'{groups:,.0f} groups/s of {pick("meganet.store.group_size")}: prepare ms {pick("meganet.store.prepare_duration")}, '
          f'log commit ms {pick("meganet.store.log_commit_duration")}, apply ms {pick("meganet.store.apply_duration")} (apply busy ~{busy})')
PY
}

# The N seconds of perf/thread-cpu.py's output in which the process kept the most cores busy.
busiest() { awk '{ for (i = 1; i < NF; i++) if ($i == "total") { print $(i + 1) "\t" $0; break } }' | sort -rn | head -"$1" | cut -f2-; }

for run in ${RUNS:-simd:512 simd:512+StoreGroupsInFlight=4 simd:512+StoreApplyThreads=4 simd:512+StoreGroupsInFlight=4+StoreApplyThreads=4 nostore-simd:512 bare-simd:512 auto:512 auto:512+StoreGroupsInFlight=4+StoreApplyThreads=4 nostore-auto:512}; do
  IFS=+ read -r -a parts <<< "$run"
  IFS=: read -r backend window clients connections <<< "${parts[0]}"
  clients=${clients:-16}
  connections=${connections:-1}
  settings=()
  run_index=$((${run_index:-0} + 1))
  name="$run_index-$backend-w$window-c$clients-n$connections" # numbered: a run given twice keeps its own logs
  for setting in "${parts[@]:1}"; do settings+=("MEGANET_MegaNet__$setting"); name+="-${setting//=/-}"; done
  step "$name: node --backend $backend, StreamWindow $window ${parts[*]:1}; $clients clients over $connections connection(s), $envelopes envelopes"
  rm -rf "$data"
  case $backend in
    nostore-* | bare-*)
      without=store; [ "${backend%%-*}" = bare ] && without=store,verification
      if [ "$window" != 512 ] || [ ${#settings[@]} != 0 ]; then
        echo "$run: the ceiling takes StreamWindow 512 and no settings"; status=1; continue
      fi
      if [ -z "${ceiling_unpacked:-}" ]; then
        tar -xJf .gpu-bundle/ceiling.tar.xz -C "$b/app" ||
          { echo "$run: no .gpu-bundle/ceiling.tar.xz (see the top of this script)"; status=1; continue; }
        ceiling_unpacked=1
      fi
      "$b/dotnet/dotnet" "$b/app/MegaNet.RelayCeiling.dll" --without $without --backend "${backend#*-}" --listen 127.0.0.1:$port > "$logs/node-$name.log" 2>&1 &
      ready="NOT A RELAY"
      ;;
    *)
      # The load's 1,024 sending keys at the default 200/s each carry only 204,800/s: the anti-spam limit is raised too.
      env MEGANET_MegaNet__MailboxMaxCount=10000000 MEGANET_MegaNet__MailboxMaxBytes=100000000000 MEGANET_MegaNet__StreamWindow=$window \
        MEGANET_MegaNet__SubmitRatePerKey=1000000 MEGANET_MegaNet__SubmitBurst=1000000 "${settings[@]}" \
        "${meganet[@]}" node --data "$data" --listen 127.0.0.1:$port --backend "$backend" > "$logs/node-$name.log" 2>&1 &
      ready="node listening"
      ;;
  esac
  node=$!
  for _ in $(seq 120); do grep -q "$ready" "$logs/node-$name.log" && break; kill -0 $node 2> /dev/null || break; sleep 0.5; done
  if ! grep -q "$ready" "$logs/node-$name.log"; then
    echo "the node did not start:"; tail -5 "$logs/node-$name.log"; kill $node 2> /dev/null; status=1; continue
  fi
  grep -o "verifier .*; data" "$logs/node-$name.log" | head -1
  python3 "$here/perf/thread-cpu.py" $node > "$logs/threads-node-$name.txt" &
  "${meganet[@]}" load --node http://127.0.0.1:$port --clients "$clients" --connections "$connections" --envelopes "$envelopes" \
    --mode stream --per-request 64 > "$logs/load-$name.txt" 2>&1 &
  load=$!
  while kill -0 $load 2> /dev/null; do
    timeout 20 "${meganet[@]}" profile -p $node --once --json 2> /dev/null | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))' \
      >> "$logs/profile-$name.jsonl" 2> /dev/null
    sleep 2
  done
  wait $load || { echo "load FAILED (exit $?)"; status=1; }
  grep -E "raw simd|accepted/s|CPU:" "$logs/load-$name.txt"
  summarize "$logs/profile-$name.jsonl"
  echo "node threads, the 3 busiest seconds:"
  busiest 3 < "$logs/threads-node-$name.txt"
  kill -TERM $node
  wait $node
  rm -rf "$data"
done
tar -czf "$out/relay-logs.tgz" -C "$logs" . && rm -rf "$logs"
echo "done $(date +%T), $([ $status = 0 ] && echo "every run finished" || echo "A RUN FAILED (see above)")"
exit $status
