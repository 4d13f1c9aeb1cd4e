#!/usr/bin/env python3
"""`make xenlab-test`: the upstream `xl remus` baseline on a running xenlab.

One host (booted by `make xenlab-up`), replication to localhost:
  1. dom0 features  -> results/dom0-features.json
  2. the PV guest with its workload; latency without Remus
  3. for -i 25, 100, 200, without and (if the netbuf library was built)
     with network buffering: start Remus, measure checkpoints/s and
     latency over a window, then fail over cleanly and check the guest's
     state carried over
  4. results/baseline.json and results/baseline.md

`--two-host` (make xenlab-baseline-2host) instead boots hosts 1 and 2 joined
by a QEMU network, replicates host1 -> host2, kills host1's QEMU outright
and records whether and when host2 takes over; the result is merged into the
same report.

Assertions are on counts (a checkpoint happened, the failover resumed the
same boot of the guest), never on rates: TCG speed varies with the
machine's load. A failure prints what failed and the console's tail.
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
INTERVALS = [25, 100, 200]


class Failed(Exception):
    """A baseline assertion failed."""


def lab(n, cmd, timeout=600):
    """Runs a lab script in hostN's dom0 and returns its last JSON line."""
    rc, out = xenlab.run(n, cmd, timeout=timeout)
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return rc, json.loads(line)
            except ValueError:
                break
    return rc, {"ok": False, "error": "no JSON from %r (exit %d)" % (cmd, rc), "output": out[-2000:]}


def must(cond, what, n, detail=None):
    if not cond:
        msg = "xenlab-test: %s" % what
        if detail is not None:
            msg += "\n--- detail ---\n%s" % json.dumps(detail, indent=1, sort_keys=True)[-4000:]
        msg += "\n--- host%d console tail ---\n%s" % (n, xenlab.tail(n, 30))
        raise Failed(msg)


def meta():
    info = {}
    try:
        img = open(xenlab.path(1, "image")).read().strip()
        info["image"] = img
        info["image_info"] = open(os.path.join(img, "info")).read().strip()
    except OSError:
        pass
    info["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    info["host_loadavg_start"] = open("/proc/loadavg").read().split()[:3]
    info["host_cpus"] = os.cpu_count()
    return info


def one_host(a):
    n = 1
    if xenlab.read_pid(n, "qemu") is None:
        raise Failed("xenlab-test: host1 is not up; run `make xenlab-up` first")
    report = {"meta": meta(), "window_s": a.window, "dirty_mb_per_s": a.dirty, "runs": []}
    t_all = time.time()

    rc, out = xenlab.run(n, "python3 /mnt/lab/features.py", timeout=180)
    must(rc == 0, "features.py failed (exit %d)" % rc, n, out)
    feats = json.loads(out)
    write_json("dom0-features.json", feats)
    report["features"] = {k: feats[k] for k in ("xen_version", "hypervisor_package", "xen_utils_package")}
    for m, v in feats["modules"].items():
        must(v["loaded"] and v["probe_ok"], "dom0 lacks %s" % m, n, v)

    xenlab.run(n, "/mnt/lab/domu.sh stop", timeout=120)
    t0 = time.time()
    rc, out = xenlab.run(n, "/mnt/lab/domu.sh start %d 1" % a.dirty, timeout=300)
    must(rc == 0, "the PV guest did not come up", n, out)
    report["guest_start_s"] = round(time.time() - t0, 1)
    report["guest_status"] = out.strip().splitlines()[-1]

    rc, base = lab(n, "python3 /mnt/lab/remus.py latency --count 20", timeout=180)
    must(base.get("ok"), "guest latency probe failed", n, base)
    report["latency_without_remus"] = base

    netbuf = feats.get("netbuf_lib_shared", False)
    report["netbuf_available"] = netbuf
    modes = [(i, False) for i in a.intervals] + ([(i, True) for i in a.intervals] if netbuf else [])
    for interval, nb in modes:
        run = {"interval_ms": interval, "netbuf": nb}
        report["runs"].append(run)
        label = "-i %d %s" % (interval, "with netbuf" if nb else "-n (no netbuf)")
        print("xenlab-test: xl remus %s ..." % label, flush=True)
        rc, st = lab(n, "python3 /mnt/lab/remus.py start --interval %d%s --timeout %d"
                     % (interval, " --netbuf" if nb else "", a.timeout), timeout=a.timeout + 60)
        run["start"] = st
        must(st.get("ok"), "xl remus %s did not reach a checkpoint" % label, n, st)
        rc, ms = lab(n, "python3 /mnt/lab/remus.py measure --window %g" % a.window, timeout=a.window * 4 + 120)
        run["measure"] = ms
        must(ms.get("ok") and ms.get("checkpoints", 0) >= 1, "xl remus %s made no checkpoint in the window" % label,
             n, ms)
        rc, fo = lab(n, "python3 /mnt/lab/remus.py failover --timeout %d" % a.timeout, timeout=a.timeout + 60)
        run["failover_clean"] = fo
        must(fo.get("ok"), "clean failover after xl remus %s lost the guest or its state" % label, n, fo)
        print("xenlab-test:   %.2f checkpoints/s (configured %.1f), ping avg %s ms, failover %.1f s"
              % (ms["achieved_per_s"], ms["configured_per_s"], ms["ping"]["avg_ms"], fo["failover_ms"] / 1000.0),
              flush=True)
        write_report(report, merge=True)
    report["test_wall_s"] = round(time.time() - t_all, 1)
    report["meta"]["host_loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    write_report(report, merge=True)
    print("xenlab-test: passed (%d runs, %.0f s); report in %s" % (len(modes), time.time() - t_all, RESULTS))


def two_host(a):
    info = {"meta": meta()}
    t_all = time.time()
    image = subprocess.run([os.path.join(HERE, "build-image.sh")], check=True, capture_output=True,
                           text=True).stdout.strip()
    share = os.environ.get("XENLAB_SHARE", os.path.join(HERE, "..", "..", "bin"))
    os.makedirs(share, exist_ok=True)
    xenlab.down([1, 2])
    t0 = time.time()
    # Both hosts boot at once: two TCG guests on two cores, about 3x slower
    # each, but still quicker than one after the other.
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "xenlab.py"), "boot", str(n), "--image", image,
                               "--share", share, "--peer", str(3 - n), "--timeout", str(a.timeout * 2)])
             for n in (1, 2)]
    for p in procs:
        if p.wait() != 0:
            raise Failed("xenlab-baseline-2host: a host did not boot\n--- host1 ---\n%s\n--- host2 ---\n%s"
                         % (xenlab.tail(1, 20), xenlab.tail(2, 20)))
    info["boot_both_s"] = round(time.time() - t0, 1)
    try:
        rc, out = xenlab.run(1, "ping -c 3 -W 5 xenlab2 >/dev/null && ssh xenlab2 xl info | grep xen_version",
                             timeout=120)
        must(rc == 0, "host1 cannot reach host2 over the lab network", 1, out)
        xenlab.run(2, "/mnt/lab/domu.sh prepare", timeout=60)
        rc, out = xenlab.run(1, "/mnt/lab/domu.sh start %d 1" % a.dirty, timeout=300)
        must(rc == 0, "the PV guest did not come up on host1", 1, out)
        rc, st = lab(1, "python3 /mnt/lab/remus.py start --interval 200 --target xenlab2 --timeout %d"
                     % (a.timeout * 2), timeout=a.timeout * 2 + 60)
        info["start"] = st
        must(st.get("ok"), "xl remus host1 -> host2 did not reach a checkpoint", 1, st)
        rc, ms = lab(1, "python3 /mnt/lab/remus.py measure --window %g" % a.window, timeout=a.window * 4 + 120)
        info["measure"] = ms
        must(ms.get("ok"), "xl remus host1 -> host2 made no checkpoint in the window", 1, ms)
        _, g = lab(1, "python3 /mnt/lab/remus.py latency --count 5", timeout=120)
        # Under two-host load the probe can miss; the window's last answer will do.
        info["guest_before_kill"] = g.get("guest") or ms.get("guest_after")
        pid = xenlab.kill_qemu(1)
        t_kill = time.time()
        info["killed_host1_qemu_pid"] = pid
        rc, w = lab(2, "python3 /mnt/lab/remus.py peerwatch --timeout %d" % a.kill_wait, timeout=a.kill_wait + 120)
        w["since_kill_s"] = round(time.time() - t_kill, 1)
        info["after_qemu_kill"] = w
        if not w.get("recovered"):
            # Upstream has no failure detector: the ssh stream just hangs.
            # Ending it by hand shows what the receiver does with a late EOF.
            rc, e = lab(2, "python3 /mnt/lab/remus.py eof", timeout=60)
            info["forced_eof"] = e
            rc, w2 = lab(2, "python3 /mnt/lab/remus.py peerwatch --timeout %d" % a.kill_wait,
                         timeout=a.kill_wait + 120)
            w2["since_kill_s"] = round(time.time() - t_kill, 1)
            info["after_forced_eof"] = w2
    finally:
        info["wall_s"] = round(time.time() - t_all, 1)
        xenlab.down([1, 2])
    report = load_report()
    report["two_host"] = info
    write_report(report)
    print("xenlab-baseline-2host: done in %.0f s; host2 took over after the QEMU kill: %s"
          % (time.time() - t_all, info["after_qemu_kill"].get("recovered")))


# ---------------------------------------------------------------- reports

def write_json(name, obj):
    os.makedirs(RESULTS, exist_ok=True)
    tmp = os.path.join(RESULTS, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(RESULTS, name))


def load_report():
    try:
        with open(os.path.join(RESULTS, "baseline.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_report(report, merge=False):
    if merge:
        old = load_report()
        if "two_host" in old and "two_host" not in report:
            report["two_host"] = old["two_host"]
    write_json("baseline.json", report)
    with open(os.path.join(RESULTS, "baseline.md"), "w") as f:
        f.write(markdown(report))


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float):
        v = ("%.2f" % v).rstrip("0").rstrip(".")
    return "%s%s" % (v, unit)


def guest(g):
    if not g:
        return "no answer"
    return "boot %s, tick %s, disk records %s" % (g.get("boot"), g.get("tick"), g.get("dseq"))


def markdown(r):
    m = r.get("meta", {})
    out = ["# Upstream `xl remus` baseline (xenlab)", "",
           "Generated by `make xenlab-test` (test/xenlab/baseline.py); raw data in `baseline.json`.", ""]
    if m:
        out += ["* when: %s; host load average at start %s, 2 cores shared, QEMU TCG" %
                (m.get("date"), "/".join(m.get("host_loadavg_start", []))),
                "* image: `%s`" % m.get("image_info", "?")]
    f = r.get("features")
    if f:
        out.append("* hypervisor %s (package %s), dom0 tools %s" %
                   (f.get("xen_version"), f.get("hypervisor_package"), f.get("xen_utils_package")))
    if "dirty_mb_per_s" in r:
        out.append("* guest: PV, 192 MB, busybox; dirties %d MB/s; window %g s per run; replication to "
                   "localhost over ssh; `-F -d` always (no disk replication), `-n` unless netbuf"
                   % (r["dirty_mb_per_s"], r["window_s"]))
    lw = r.get("latency_without_remus")
    if lw:
        out.append("* without Remus: ping avg %s ms (max %s), port-7 round trip avg %s ms" %
                   (fmt(lw["ping"]["avg_ms"]), fmt(lw["ping"]["max_ms"]), fmt(lw["service"]["avg_ms"])))
    out += ["", "| -i (ms) | netbuf | configured /s | achieved /s | pages/ckpt | first ckpt (s) | "
            "ping avg / max (ms) | port 7 avg (ms) | clean failover (s) | state kept |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for run in r.get("runs", []):
        ms, st, fo = run.get("measure", {}), run.get("start", {}), run.get("failover_clean", {})
        p = ms.get("ping", {})
        fms = st.get("first_checkpoint_ms")
        fo_ms = fo.get("failover_ms")
        out.append("| %d | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s |" % (
            run["interval_ms"], "yes" if run["netbuf"] else "no (`-n`)", fmt(ms.get("configured_per_s")),
            fmt(ms.get("achieved_per_s")), fmt(ms.get("pages_per_checkpoint")),
            fmt(fms / 1000.0 if fms else None), fmt(p.get("avg_ms")), fmt(p.get("max_ms")),
            fmt(ms.get("service", {}).get("avg_ms")), fmt(fo_ms / 1000.0 if fo_ms else None),
            {True: "yes", False: "NO"}.get(fo.get("state_survived"), "–")))
    if not r.get("netbuf_available", True):
        out += ["", "Network buffering rows are missing: the netbuf libxenlight was not built "
                    "(`make xenlab-netbuf`, then `make xenlab-up`)."]
    th = r.get("two_host")
    if th:
        ms = th.get("measure", {})
        k = th.get("after_qemu_kill", {})
        out += ["", "## Two hosts: host1 -> host2, host1's QEMU killed (SIGKILL)", "",
                "* both hosts booted together in %s s; `xl remus -F -n -d -i 200 domu xenlab2`: first checkpoint "
                "after %s s, %s checkpoints/s (configured 5), %s pages each" % (
                    fmt(th.get("boot_both_s")), fmt((th.get("start", {}).get("first_checkpoint_ms") or 0) / 1000.0),
                    fmt(ms.get("achieved_per_s")), fmt(ms.get("pages_per_checkpoint"))),
                "* guest before the kill: %s" % guest(th.get("guest_before_kill"))]
        if k.get("recovered"):
            out.append("* host2 took over %s s after the kill; guest: %s" % (fmt(k["after_ms"] / 1000.0), guest(k.get("guest"))))
        else:
            out.append("* **no failover**: after %s s host2 still shows `%s` (the ssh stream hangs; upstream Remus "
                       "has no failure detector)" % (fmt(k.get("waited_ms", 0) / 1000.0), k.get("domains")))
            e = th.get("after_forced_eof")
            if e:
                if e.get("recovered"):
                    out.append("* after killing host2's sshd session (forced EOF) the backup took over in %s s "
                               "(%s s after the kill); guest: %s"
                               % (fmt(e["after_ms"] / 1000.0), fmt(e.get("since_kill_s")), guest(e.get("guest"))))
                else:
                    out.append("* after killing host2's sshd session (forced EOF), still no failover after %s s: "
                               "`%s`; receiver: %s" % (fmt(e.get("waited_ms", 0) / 1000.0), e.get("domains"),
                                                       "; ".join(e.get("processes", []))[:300]))
    out.append("")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--two-host", action="store_true")
    p.add_argument("--window", type=float, default=float(os.environ.get("XENLAB_WINDOW", "15")))
    p.add_argument("--dirty", type=int, default=int(os.environ.get("XENLAB_DIRTY_MB", "8")))
    p.add_argument("--timeout", type=int, default=int(os.environ.get("XENLAB_TIMEOUT", "300")))
    p.add_argument("--kill-wait", type=int, default=60)
    p.add_argument("--intervals", default=os.environ.get("XENLAB_INTERVALS", ",".join(map(str, INTERVALS))))
    a = p.parse_args()
    a.intervals = [int(x) for x in a.intervals.split(",") if x]
    try:
        if a.two_host:
            two_host(a)
        else:
            one_host(a)
    except (Failed, xenlab.LabError) as e:
        print(str(e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
