#!/usr/bin/env python3
"""`make xenlab-bench`: upstream `xl remus` against `xl-kemari` on one host.

Host 1 must be up (the make target runs xenlab-up and builds the xen
xl-kemari into the share first). On the lab's PV guest (192 MB, dirtying
8 MB/s, the baseline's guest and workload), for each interval (25, 100,
200 ms) and each row:

  remus-n          xl -vvv remus -F -d -n -i MS domu localhost
  remus-netbuf     the same with network buffering (if the library was built)
  kemari           xl-kemari start over ssh to localhost, plug output buffer
  kemari-inflight2 the same with --inflight 2
  kemari-event     the same with --mode event (--interval is then a maximum)

each run starts the protector, waits for its first checkpoint (kemari:
state protected), measures a window (lab/bench.py measure: checkpoints,
pause, bytes, ping and port-7 round trips), then fails over cleanly
(SIGKILL the sender, destroy the primary) and times the first answer of the
other copy. lab/bench.py's docstring says how each figure is obtained.

Writes results/bench.json and results/bench.md after every run, and prints
the table at the end. Knobs: XENLAB_INTERVALS, XENLAB_WINDOW (s),
XENLAB_BENCH_ROWS, XENLAB_KEMARI_TIMEOUT (xl-kemari's --timeout, default
10s), XENLAB_DIRTY_MB, XENLAB_TIMEOUT.

Assertions are on what must happen whatever the speed (each protector
reaches a checkpoint and checkpoints in its window; each failover resumes
the same boot with its hit counter above every answer a client got): the
targets on rate and pause are reported, met or not, never asserted.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import xenlab  # noqa: E402

RESULTS = os.environ.get("XENLAB_RESULTS", os.path.join(HERE, "results"))
ROWS = {
    "remus-n": ("remus", "remus-start", "xl remus -n (no output buffer)"),
    "remus-netbuf": ("remus", "remus-start --netbuf", "xl remus, netbuf"),
    "kemari": ("kemari", "kemari-start", "xl-kemari, plug"),
    "kemari-inflight2": ("kemari", "kemari-start --inflight 2", "xl-kemari, plug, --inflight 2"),
    "kemari-event": ("kemari", "kemari-start --mode event", "xl-kemari, plug, --mode event"),
}
DEFAULT_ROWS = "remus-n,remus-netbuf,kemari,kemari-inflight2,kemari-event"


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def lab(cmd, timeout):
    """Runs lab/bench.py CMD in host1's dom0; returns its JSON object."""
    full = "python3 /mnt/lab/bench.py " + cmd
    try:
        rc, out = xenlab.run(1, full, timeout=timeout)
    except xenlab.LabError as e:
        return {"ok": False, "error": str(e)[:3000], "cmd": full}
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    return {"ok": False, "error": "no JSON from %r (exit %d)" % (full, rc), "output": out[-3000:]}


def meta():
    info = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host_loadavg_start": loadavg(),
            "host_cpus": os.cpu_count()}
    try:
        img = open(xenlab.path(1, "image")).read().strip()
        info["image_info"] = open(os.path.join(img, "info")).read().strip()
    except OSError:
        pass
    rc, out = xenlab.run(1, "/mnt/host/xl-kemari version", timeout=60)
    info["xl_kemari_version"] = out.strip().splitlines()[:1]
    try:
        info["git"] = subprocess.run(["git", "-C", HERE, "describe", "--always", "--dirty"], capture_output=True,
                                     text=True).stdout.strip()
    except OSError:
        pass
    return info


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--intervals", default=os.environ.get("XENLAB_INTERVALS", "25,100,200"))
    p.add_argument("--rows", default=os.environ.get("XENLAB_BENCH_ROWS", DEFAULT_ROWS))
    p.add_argument("--window", type=float, default=float(os.environ.get("XENLAB_WINDOW", "15")))
    p.add_argument("--dirty", type=int, default=int(os.environ.get("XENLAB_DIRTY_MB", "8")))
    p.add_argument("--timeout", type=int, default=int(os.environ.get("XENLAB_TIMEOUT", "300")))
    p.add_argument("--kemari-timeout", default=os.environ.get("XENLAB_KEMARI_TIMEOUT", "10s"))
    a = p.parse_args()
    intervals = [int(x) for x in a.intervals.split(",") if x]
    rows = [r for r in a.rows.split(",") if r]
    for r in rows:
        if r not in ROWS:
            sys.exit("xenlab-bench: unknown row %r (have %s)" % (r, ", ".join(ROWS)))
    if xenlab.read_pid(1, "qemu") is None:
        sys.exit("xenlab-bench: host1 is not up; run `make xenlab-up` first")
    t_all = time.time()
    report = {"meta": meta(), "window_s": a.window, "dirty_mb_per_s": a.dirty, "kemari_timeout": a.kemari_timeout,
              "rows": rows, "intervals": intervals, "runs": []}
    rc, nb = xenlab.run(1, "test -f /mnt/netbuf/libxenlight.so.4.17.0", timeout=60)
    report["netbuf_available"] = rc == 0
    if rc != 0 and "remus-netbuf" in rows:
        rows.remove("remus-netbuf")
        report["skipped"] = "remus-netbuf: no netbuf libxenlight (make xenlab-netbuf, then make xenlab-up)"
    print("xenlab-bench: guest ...", flush=True)
    xenlab.run(1, "/mnt/lab/domu.sh stop", timeout=300)
    report["reset"] = lab("reset --dirty %d" % a.dirty, timeout=600)
    if not report["reset"].get("ok"):
        print("xenlab-bench: the guest did not come up:\n%s" % json.dumps(report["reset"], indent=1), file=sys.stderr)
        return 1
    report["unprotected"] = lab("latency --window %g" % a.window, timeout=int(a.window * 4) + 120)
    write(report)
    failed = []
    for interval in intervals:
        for row in rows:
            kind, start, label = ROWS[row]
            run = {"row": row, "label": label, "kind": kind, "interval_ms": interval,
                   "host_loadavg_before": loadavg()}
            report["runs"].append(run)
            print("xenlab-bench: -i %d %s ..." % (interval, label), flush=True)
            t0 = time.time()
            cmd = "%s --interval %d --timeout %d" % (start, interval, a.timeout)
            if kind == "kemari":
                cmd += " --peer-timeout %s" % a.kemari_timeout
            run["start"] = lab(cmd, timeout=a.timeout + 120)
            if run["start"].get("ok"):
                run["measure"] = lab("measure --window %g" % a.window, timeout=int(a.window * 6) + 180)
                if run["measure"].get("ok"):
                    run["failover_clean"] = lab("failover --timeout %d" % a.timeout, timeout=a.timeout + 120)
            run["host_loadavg_after"] = loadavg()
            run["wall_s"] = round(time.time() - t0, 1)
            why = verdict(run)
            if why:
                run["failed"] = why
                failed.append("-i %d %s: %s" % (interval, label, why))
                print("xenlab-bench:   FAILED: %s" % why, flush=True)
            print("xenlab-bench:   %s" % oneline(run), flush=True)
            # Whatever happened, the next run starts from one guest, unprotected.
            run["reset"] = lab("reset --dirty %d" % a.dirty, timeout=600)
            write(report)
            if not run["reset"].get("ok"):
                failed.append("reset after -i %d %s failed" % (interval, label))
                report["aborted"] = "no guest after a reset"
                write(report)
                print(markdown(report))
                return 1
    report["wall_s"] = round(time.time() - t_all, 1)
    report["meta"]["host_loadavg_end"] = loadavg()
    report["failures"] = failed
    write(report)
    print(markdown(report))
    print("xenlab-bench: %s (%d runs, %.0f s); report in %s" % (
        "passed" if not failed else "%d run(s) failed" % len(failed), len(report["runs"]), time.time() - t_all, RESULTS))
    for f in failed:
        print("  " + f)
    return 1 if failed else 0


def verdict(run):
    st, ms, fo = run.get("start", {}), run.get("measure", {}), run.get("failover_clean", {})
    if not st.get("ok"):
        return "no first checkpoint: %s" % st.get("error", "?")[:300]
    if not ms.get("ok"):
        return "no checkpoint in the window: %s" % ms.get("error", "?")[:300]
    if not fo.get("ok"):
        return "clean failover: %s" % (fo.get("error") or "state lost (same boot %s, hits above %s)" % (
            fo.get("same_boot"), fo.get("hits_above")))[:300]
    return None


def oneline(run):
    ms, fo = run.get("measure", {}), run.get("failover_clean", {})
    return "%s/s of %s, pause avg %s ms, ping avg %s ms, failover %s s" % (
        ms.get("achieved_per_s"), ms.get("configured_per_s"), ms.get("pause_ms", {}).get("avg"),
        ms.get("ping", {}).get("rtt_ms", {}).get("avg"),
        fo["failover_ms"] / 1000.0 if fo.get("failover_ms") else None)


# ---------------------------------------------------------------- report

def write(report):
    os.makedirs(RESULTS, exist_ok=True)
    tmp = os.path.join(RESULTS, "bench.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(RESULTS, "bench.json"))
    with open(os.path.join(RESULTS, "bench.md"), "w") as f:
        f.write(markdown(report))


def fmt(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        t = "%.*f" % (nd, v)
        return t.rstrip("0").rstrip(".") if "." in t else t
    return str(v)


def kib(b):
    return "–" if b is None else "%.0f KiB" % (b / 1024.0)


def failover_row():
    """The host-death figures of results/failover.json, if it exists."""
    try:
        with open(os.path.join(RESULTS, "failover.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def markdown(r):
    m = r.get("meta", {})
    out = ["# `xl remus` against `xl-kemari` (xenlab, one host)", "",
           "Generated by `make xenlab-bench` (test/xenlab/bench.py, lab/bench.py); raw data in `bench.json`.", "",
           "* when: %s; machine load average %s at the start, %s at the end (2 cores shared with other labs, "
           "QEMU TCG: speeds vary with it, see each row)" % (m.get("date"), "/".join(m.get("host_loadavg_start", [])),
                                                           "/".join(m.get("host_loadavg_end", ["?"]))),
           "* image: `%s`; xl-kemari `%s` (tree %s)" % (m.get("image_info", "?"), " ".join(m.get("xl_kemari_version", [])),
                                                     m.get("git", "?")),
           "* guest: PV, 192 MB, busybox, dirtying %s MB/s (the baseline's); window %s s per run; "
           "replication to localhost over ssh for both" % (r.get("dirty_mb_per_s"), fmt(r.get("window_s"))),
           "* `xl remus -F -d [-n] -i MS domu localhost`; `xl-kemari start -F --netbuf=plug --set=disk=none "
           "--set=unsafe=1 --timeout=%s --interval=MSms [--inflight 2 | --mode event] domu localhost` "
           "(ssh transport, `--remote-command` lab/kemari-standby)" % r.get("kemari_timeout")]
    u = r.get("unprotected", {})
    if u.get("ping"):
        out.append("* unprotected: ping avg %s ms (p90 %s), port-7 round trip avg %s ms" % (
            fmt(u["ping"]["rtt_ms"].get("avg")), fmt(u["ping"]["rtt_ms"].get("p90")),
            fmt(u["service"]["rtt_ms"].get("avg"))))
    out += ["", "Pause: xl-kemari's is the engine's own (suspend call to resume return, `pause_ns`); "
                "`xl remus` logs no times, so each line of `xl -vvv` is time-stamped as it arrives "
                "(lab/stamp.py) and the pause runs from \"issuing PV suspend request\" to "
                "\"Checkpointed save: N/N 100%\": a lower bound (it leaves out the checkpoint's last records and "
                "the resume), which favours `xl remus`. Bytes: xl-kemari's page bytes on the wire "
                "(`xl_kemari_bytes_wire_total`, after lz4 + XOR delta; raw in brackets); `xl remus`: pages x "
                "4 KiB, uncompressed. First ckpt: from the start command to `xl remus`'s first completed checkpoint, "
                "or to xl-kemari's state `protected` (initial sync done). Latency: `ping -i 0.2` and port-7 requests 0.5 s apart from dom0, "
                "the same for both; requests that got no answer within 10 s count as failed.", "",
            "| -i (ms) | protector | first ckpt (s) | checkpoints/s (of) | ratio | pause avg / p50 / p90 / max (ms) | period p50 (ms) | "
            "pages/ckpt | bytes/ckpt | ping avg / p90 (ms) | port 7 avg (ms), failed | clean failover (s) | "
            "state kept | load avg |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in r.get("runs", []):
        ms, fo = run.get("measure", {}), run.get("failover_clean", {})
        pz, pg, sv = ms.get("pause_ms", {}), ms.get("ping", {}).get("rtt_ms", {}), ms.get("service", {})
        b = ms.get("bytes_per_checkpoint")
        bytes_s = kib(b)
        if ms.get("raw_bytes_per_checkpoint"):
            bytes_s += " (%s)" % kib(ms["raw_bytes_per_checkpoint"])
        if run.get("failed") and not ms:
            out.append("| %d | %s | **failed**: %s | | | | | | | | | | | %s |" % (
                run["interval_ms"], run["label"], run["failed"][:160].replace("|", "/").replace("\n", " "),
                "/".join(run.get("host_loadavg_before", [])[:1])))
            continue
        first = run.get("start", {}).get("first_checkpoint_ms") or run.get("start", {}).get("protected_ms")
        out.append("| %d | %s | %s | %s (%s) | %s | %s / %s / %s / %s | %s | %s | %s | %s / %s | %s, %s/%s | %s | %s | %s |" % (
            run["interval_ms"], run["label"], fmt(first / 1000.0 if first else None, 1), fmt(ms.get("achieved_per_s")), fmt(ms.get("configured_per_s")),
            fmt(ms.get("rate_ratio")), fmt(pz.get("avg"), 0), fmt(pz.get("p50"), 0), fmt(pz.get("p90"), 0),
            fmt(pz.get("max"), 0), fmt(ms.get("period_ms", {}).get("p50"), 0), fmt(ms.get("pages_per_checkpoint"), 0),
            bytes_s, fmt(pg.get("avg"), 0), fmt(pg.get("p90"), 0), fmt(sv.get("rtt_ms", {}).get("avg"), 0),
            sv.get("fail"), sv.get("n"), fmt(fo["failover_ms"] / 1000.0, 1) if fo.get("failover_ms") else "–",
            {True: "yes", False: "**NO**"}.get(fo.get("state_survived"), "–"),
            "%s→%s" % (run.get("host_loadavg_before", ["?"])[0], run.get("host_loadavg_after", ["?"])[0])))
    out += targets(r)
    fr = failover_row()
    if fr:
        k = fr.get("kemari", {})
        out += ["", "Host death (two hosts, host1's QEMU SIGKILLed; `make xenlab-failover`, results/failover.md): "
                    "xl-kemari: %s; xl remus: %s." % (k.get("summary", "?"), fr.get("remus", {}).get("summary", "?"))]
    out.append("")
    return "\n".join(out)


def targets(r):
    """Issue 7's targets, per interval: rate >= 0.95 of configured, and
    pause <= 0.25 x xl remus's (both remus rows when present)."""
    by, load = {}, {}
    for run in r.get("runs", []):
        ms = run.get("measure", {})
        if ms.get("ok"):
            by[(run["interval_ms"], run["row"])] = ms
            # The machine's 1-minute load over the run: before and after.
            ls = [float(x[0]) for x in (run.get("host_loadavg_before"), run.get("host_loadavg_after")) if x]
            load[(run["interval_ms"], run["row"])] = sum(ls) / len(ls) if ls else None
    lines = []
    for i in r.get("intervals", []):
        k = by.get((i, "kemari"))
        if not k:
            continue
        rates = "rate %s of configured (target ≥ 0.95: %s)" % (fmt(k.get("rate_ratio")),
                                                             "met" if k.get("rate_ratio", 0) >= 0.95 else "**not met**")
        cmp_ = []
        for rr in ("remus-netbuf", "remus-n"):
            x = by.get((i, rr))
            if x and x.get("pause_ms", {}).get("avg") and k.get("pause_ms", {}).get("avg"):
                q = k["pause_ms"]["avg"] / x["pause_ms"]["avg"]
                la, lb = load.get((i, "kemari")), load.get((i, rr))
                caveat = ""
                if la is not None and lb is not None and abs(la - lb) > 1.0:
                    caveat = " — not comparable: machine load %.1f against %.1f" % (la, lb)
                cmp_.append("%.2f× %s's (target ≤ 0.25: %s%s)" % (q, rr, "met" if q <= 0.25 else "**not met**",
                                                                    caveat))
        xr = [by[(i, rr)].get("rate_ratio") for rr in ("remus-netbuf", "remus-n") if (i, rr) in by]
        lines.append("* -i %d: xl-kemari %s; xl remus %s; average pause %s" % (
            i, rates, "/".join(fmt(x) for x in xr) or "–", "; ".join(cmp_) or "–"))
    if lines:
        lines = ["", "## Targets (issue 7), met or not", ""] + lines
    return lines


if __name__ == "__main__":
    sys.exit(main())
