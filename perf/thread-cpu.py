#!/usr/bin/env python3
"""Each second, the CPU of a process's busiest threads, and by kind (thread names without their numbers), from
/proc/PID/task (Linux). A thread near a whole core is a stage that does not spread over cores; the node's own are
mn-admission (its batcher) and mn-store-commit (the store's committer), the rest the runtime's thread pool.
Usage: perf/thread-cpu.py PID   (until the process ends; prints only seconds in which it kept over one core busy).
Example: meganet load ... & sleep 1; perf/thread-cpu.py $(pgrep -n -x meganet)
"""
import os, sys, time

# A missing or wrong PID printed nothing and exited 0, as for a process never busy ("$(pgrep ...)" expands to nothing
# while `dotnet run` is still building).
if len(sys.argv) != 2 or not sys.argv[1].isdigit():
    sys.exit("usage: perf/thread-cpu.py PID   (a process id, e.g. $(pgrep -n -x meganet); got "
             + (repr(" ".join(sys.argv[1:])) if len(sys.argv) > 1 else "none") + ")")
pid = sys.argv[1]
if not os.path.isdir(f"/proc/{pid}/task"):
    sys.exit(f"perf/thread-cpu.py: no process {pid} (/proc/{pid}/task not found; Linux only)")


def snap():
    """Each thread's name and user + kernel ticks by thread id; None once the process is gone."""
    out = {}
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                line = open(f"/proc/{pid}/task/{t}/stat").read()
            except OSError:
                continue
            o, c = line.index("("), line.rindex(")")
            f = line[c + 1:].split()
            out[t] = (line[o + 1:c], int(f[11]) + int(f[12]))
    except OSError:
        return None
    return out


prev, t0 = snap(), time.time()
while prev is not None:
    time.sleep(1.0)
    cur = snap()
    if cur is None:
        break
    # Ticks are the kernel's USER_HZ, 100 a second; a thread new since the last sample spent all of its in it.
    d = sorted(((v[1] - prev.get(k, (0, 0))[1], v[0]) for k, v in cur.items()), reverse=True)
    total = sum(x for x, _ in d)
    if total > 100:
        groups = {}
        for x, n in d:
            g = n if n.startswith("mn-") else n.rstrip("0123456789 ")
            groups[g] = groups.get(g, 0) + x
        print(f"t={time.time() - t0:5.1f}s total {total / 100:5.2f} cores; top threads: " + ", ".join(f"{n} {x / 100:.2f}" for x, n in d[:6])
              + "; by kind: " + ", ".join(f"{g} {x / 100:.2f}" for g, x in sorted(groups.items(), key=lambda kv: -kv[1])[:6]), flush=True)
    prev = cur
