#!/usr/bin/env python3
"""`make xenlab-failover`: xl-kemari survives the death of its primary host.

Boots hosts 1 and 2 joined by a QEMU network (as xenlab-baseline-2host),
starts the lab's PV guest on host1 and protects it with

  xl-kemari start -F --interval=200ms --timeout=T --netbuf=plug \\
      --set=disk=none --set=unsafe=1 --remote-command=/mnt/lab/kemari-standby domu xenlab2

over the default ssh transport (host1's ssh runs `kemari-standby receive
--stdio ...` on host2, which adds an --events file there). A client in
host2's dom0 (lab/bench.py prober) asks the guest's port 7 every 0.5 s
(a thread per request, 30 s to answer)
through the whole trial. After a measured window, host1's QEMU is killed
with SIGKILL (by its pid file): no shutdown, no FIN, no RST; the host is
simply gone. Then it checks that host2's standby declares the primary
dead within the configured timeout (plus the activation), that the guest
answers again from host2 with the same boot id and a hit counter above
every answer any client got before the kill, and it times kill ->
detection -> activation -> first answer.

Times: the kill is stamped on this machine; the standby's events and the
prober's answers on host2's clock. host2 writes its clock into files on the
9p share (lab/bench.py clock); the files' mtimes are this machine's clock
at the write, so offset = max(content - mtime) (error: the write's latency
plus the file system's timestamp granularity, a few ms).

Writes results/failover.json and results/failover.md (with the upstream
`xl remus` row of the same trial from results/baseline.json, which
`make xenlab-baseline-2host` records) and prints the table. Knobs:
XENLAB_KEMARI_TIMEOUT (default 10s), XENLAB_FAILOVER_INTERVAL (ms, 200),
XENLAB_WINDOW (s, 15), XENLAB_DIRTY_MB, XENLAB_TIMEOUT, XENLAB_SHARE.
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


class Failed(Exception):
    """The trial could not be run or its checks failed."""


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def lab(n, cmd, timeout):
    full = "python3 /mnt/lab/bench.py " + cmd
    rc, out = xenlab.run(n, full, timeout=timeout)
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    return {"ok": False, "error": "no JSON from %r (exit %d)" % (full, rc), "output": out[-3000:]}


def clock_offset(n):
    """hostN's CLOCK_REALTIME minus this machine's, in ns (see the module
    comment), with the spread of the samples."""
    r = lab(n, "clock --n 20", timeout=120)
    outdir = xenlab.path(n, "out")
    diffs = []
    for p in r.get("files", []):
        local = os.path.join(outdir, os.path.basename(p))
        try:
            c = int(open(local).read().split()[0])
            diffs.append(c - os.stat(local).st_mtime_ns)
        except (OSError, ValueError, IndexError):
            pass
    if not diffs:
        raise Failed("no clock samples from host%d: %s" % (n, r))
    return max(diffs), (max(diffs) - min(diffs))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--interval", type=int, default=int(os.environ.get("XENLAB_FAILOVER_INTERVAL", "200")))
    p.add_argument("--window", type=float, default=float(os.environ.get("XENLAB_WINDOW", "15")))
    p.add_argument("--dirty", type=int, default=int(os.environ.get("XENLAB_DIRTY_MB", "8")))
    p.add_argument("--timeout", type=int, default=int(os.environ.get("XENLAB_TIMEOUT", "300")))
    p.add_argument("--kemari-timeout", default=os.environ.get("XENLAB_KEMARI_TIMEOUT", "10s"))
    p.add_argument("--keep", action="store_true", help="leave both hosts up afterwards (to look around)")
    a = p.parse_args()
    info = {"meta": {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host_loadavg_start": loadavg(),
                     "host_cpus": os.cpu_count()},
            "interval_ms": a.interval, "kemari_timeout": a.kemari_timeout, "window_s": a.window,
            "dirty_mb_per_s": a.dirty}
    t_all = time.time()
    try:
        trial(a, info)
    except (Failed, xenlab.LabError) as e:
        info["error"] = str(e)[-4000:]
        print("xenlab-failover: %s" % e, file=sys.stderr)
    finally:
        info["wall_s"] = round(time.time() - t_all, 1)
        info["meta"]["host_loadavg_end"] = loadavg()
        if not a.keep:
            xenlab.down([1, 2])
    info["kemari"] = summarize(info)
    info["remus"] = remus_row()
    write(info)
    print(markdown(info))
    ok = info["kemari"].get("passed")
    print("xenlab-failover: %s in %.0f s; report in %s" % ("passed" if ok else "FAILED", time.time() - t_all, RESULTS))
    return 0 if ok else 1


def trial(a, info):
    image = subprocess.run([os.path.join(HERE, "build-image.sh")], check=True, capture_output=True,
                           text=True).stdout.strip()
    share = os.environ.get("XENLAB_SHARE", os.path.join(HERE, "..", "..", "bin"))
    if not os.path.exists(os.path.join(share, "xl-kemari")):
        raise Failed("no %s/xl-kemari: make xenlab-kemari-bin" % share)
    try:
        info["meta"]["image_info"] = open(os.path.join(image, "info")).read().strip()
    except OSError:
        pass
    xenlab.down([1, 2])
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "xenlab.py"), "boot", str(n), "--image", image,
                               "--share", share, "--peer", str(3 - n), "--timeout", str(a.timeout * 2)])
             for n in (1, 2)]
    for pr in procs:
        if pr.wait() != 0:
            raise Failed("a host did not boot\n--- host1 ---\n%s\n--- host2 ---\n%s"
                         % (xenlab.tail(1, 20), xenlab.tail(2, 20)))
    info["boot_both_s"] = round(time.time() - t0, 1)
    rc, out = xenlab.run(1, "ssh xenlab2 /mnt/host/xl-kemari version", timeout=120)
    if rc != 0:
        raise Failed("host1 cannot run xl-kemari on host2 over ssh: %s" % out)
    info["meta"]["xl_kemari_version"] = out.strip().splitlines()[:1]
    xenlab.run(2, "/mnt/lab/domu.sh prepare", timeout=60)
    t0 = time.time()
    rc, out = xenlab.run(1, "/mnt/lab/domu.sh start %d 1" % a.dirty, timeout=a.timeout)
    if rc != 0:
        raise Failed("the PV guest did not come up on host1: %s" % out)
    info["guest_start_s"] = round(time.time() - t0, 1)
    print("xenlab-failover: protecting host1 -> host2 ...", flush=True)
    # Replicas of standbys that died in a failed sync attempt (see
    # lab/bench.py reap_orphans) would fill host2's memory.
    info["reaper_start"] = lab(2, "reaper start", timeout=60)
    st = lab(1, "kemari-start --target xenlab2 --interval %d --peer-timeout %s --timeout %d"
             % (a.interval, a.kemari_timeout, a.timeout * 2), timeout=a.timeout * 2 + 120)
    info["start"] = st
    info["reaper_stop"] = lab(2, "reaper stop", timeout=60)
    if not st.get("ok"):
        raise Failed("xl-kemari start host1 -> host2 did not reach protected: %s" % json.dumps(st)[-3000:])
    info["prober_start"] = lab(2, "prober start", timeout=60)
    ms = lab(1, "measure --window %g" % a.window, timeout=int(a.window * 6) + 180)
    info["measure"] = ms
    if not ms.get("ok"):
        raise Failed("no checkpoint host1 -> host2 in the window: %s" % json.dumps(ms)[-3000:])
    # Kill only once a client was answered through the protection: the
    # hit counts after the failover are checked against those answers.
    pw = lab(2, "prober wait --at-least 3 --timeout %d" % a.timeout, timeout=a.timeout + 60)
    info["prober_answers_before_kill"] = pw.get("answers")
    if not pw.get("ok"):
        raise Failed("the client in host2's dom0 got no answers through the protection: %s" % pw)
    # host1's logs go with it: copy them to the share first.
    xenlab.run(1, "mkdir -p /mnt/out/failover && cp /run/xenlab/kemari/* /mnt/out/failover/; true", timeout=60)
    off_pre, spread_pre = clock_offset(2)
    info["clock_host2_minus_machine_before_ns"] = off_pre
    info["host_loadavg_at_kill"] = loadavg()
    pid = xenlab.kill_qemu(1)
    t_kill = time.time_ns()
    info["killed_host1_qemu_pid"] = pid
    info["t_kill_machine_ns"] = t_kill
    print("xenlab-failover: host1's QEMU (pid %d) SIGKILLed; watching host2 ..." % pid, flush=True)
    w = lab(2, "watch --timeout %d" % a.timeout, timeout=a.timeout + 120)
    info["watch"] = w
    info["prober_stop"] = lab(2, "prober stop", timeout=60)
    off, spread = clock_offset(2)
    info["clock_host2_minus_machine_ns"] = off
    info["clock_sample_spread_ns"] = spread
    info["clock_drift_during_trial_ns"] = off - off_pre
    rc, out = xenlab.run(2, "xl list; tail -5 /run/xenlab/kemari/standby.log", timeout=60)
    info["host2_after"] = out.strip().splitlines()
    # Copy the standby's events and log out of host2 for the record.
    xenlab.run(2, "mkdir -p /mnt/out/failover && cp /run/xenlab/kemari/standby.* /run/xenlab/prober.jsonl "
                  "/mnt/out/failover/ 2>/dev/null; true", timeout=60)


def summarize(info):
    """The verdict and the times, on the machine's clock (kill = 0)."""
    w = info.get("watch") or {}
    s = {"timeout": info.get("kemari_timeout")}
    if "t_kill_machine_ns" not in info or not w:
        s["passed"] = False
        s["summary"] = "trial did not reach the kill: %s" % info.get("error", "?")[:200]
        return s
    off = info["clock_host2_minus_machine_ns"]
    k2 = info["t_kill_machine_ns"] + off  # the kill on host2's clock

    def since(t):
        return None if t is None else round((t - k2) / 1e9, 3)

    act = w.get("activate") or {}
    s["activation_s"] = round(w["activation_ns"] / 1e9, 3) if w.get("activation_ns") else None
    s["activate_event_s"] = since(act.get("t"))
    if act.get("t") and w.get("activation_ns"):
        s["detected_s"] = since(act["t"] - w["activation_ns"])
    answers = w.get("answers") or []
    # When the answer reached the prober (t is when the request left).
    def arrived(x):
        return x.get("t_end") or x["t"] + int((x.get("rtt_ms") or 0) * 1e6)

    before = [x for x in answers if arrived(x) <= k2]
    # Whatever reached a client, from either host's dom0, before the kill.
    max_hits = max([x["q"]["hits"] for x in before] + [info.get("measure", {}).get("max_hits") or 0])
    boots = sorted({x["q"]["boot"] for x in before} | set(info.get("measure", {}).get("boots") or []))
    s["answers_before_kill"] = len(before)
    s["max_hits_before_kill"] = max_hits
    s["boots_before_kill"] = boots
    if before:
        s["last_answer_before_kill_s"] = since(arrived(before[-1]))
    stuck = [x for x in answers if k2 < arrived(x) <= (act.get("t") or k2)]
    s["answers_between_kill_and_activation"] = len(stuck)
    first = w.get("first_answer_after")
    if first:
        s["first_answer_s"] = since(arrived(first))
        s["first_answer"] = first["q"]
        s["same_boot"] = len(boots) == 1 and first["q"]["boot"] in boots
        s["hits_above"] = first["q"]["hits"] > max_hits
    lost = [e for e in w.get("standby_events", []) if e.get("t", 0) > k2]
    s["standby_events_after_kill"] = [{"s": since(e["t"]), "kind": e.get("kind"), "state": e.get("state"),
                                       "msg": e.get("msg")} for e in lost]
    tmo = go_seconds(info.get("kemari_timeout"))
    s["detected_within_timeout"] = (s.get("detected_s") is not None and tmo is not None
                                    and s["detected_s"] <= tmo + 1.0)
    s["passed"] = bool(first and s.get("same_boot") and s.get("hits_above") and s.get("detected_s") is not None)
    if first:
        s["summary"] = ("primary declared dead %.1f s after the kill (timeout %s), replica active at %.1f s, "
                        "first answer %.1f s after the kill; same boot: %s, hits %d > %d: %s" % (
                            s.get("detected_s") or -1, s["timeout"], s.get("activate_event_s") or -1,
                            s["first_answer_s"], "yes" if s.get("same_boot") else "NO", first["q"]["hits"], max_hits,
                            "yes" if s.get("hits_above") else "NO"))
    else:
        s["summary"] = "no failover: %s" % w.get("error", info.get("error", "?"))[:200]
    return s


def go_seconds(d):
    if not d:
        return None
    d = d.strip()
    for suf, mul in (("ms", 1e-3), ("s", 1.0), ("m", 60.0)):
        if d.endswith(suf):
            try:
                return float(d[:-len(suf)]) * mul
            except ValueError:
                return None
    return None


def remus_row():
    """Upstream xl remus in the same trial (make xenlab-baseline-2host),
    from results/baseline.json."""
    try:
        with open(os.path.join(RESULTS, "baseline.json")) as f:
            th = json.load(f).get("two_host")
    except (OSError, ValueError):
        th = None
    if not th:
        return {"summary": "not recorded (run make xenlab-baseline-2host)"}
    k = th.get("after_qemu_kill", {})
    e = th.get("after_forced_eof", {})
    r = {"date": th.get("meta", {}).get("date"), "recovered_after_kill": k.get("recovered"),
         "waited_s": round(k.get("waited_ms", 0) / 1000.0, 1), "domains": k.get("domains"),
         "checkpoints_per_s": th.get("measure", {}).get("achieved_per_s"),
         "guest_before_kill": th.get("guest_before_kill")}
    if e:
        r["after_forced_eof"] = {"recovered": e.get("recovered"), "since_kill_s": e.get("since_kill_s"),
                                 "guest": e.get("guest")}
    if k.get("recovered"):
        r["summary"] = "took over %.1f s after the kill" % (k.get("after_ms", 0) / 1000.0)
    else:
        r["summary"] = ("no failover: %.0f s after the kill host2 still showed `%s` (no failure detector; the ssh "
                        "stream hangs)" % (r["waited_s"], k.get("domains")))
        if e.get("recovered"):
            r["summary"] += "; only a forced EOF (host2's sshd session killed by hand) made it take over, " \
                            "%s s after the kill" % e.get("since_kill_s")
    return r


def write(info):
    os.makedirs(RESULTS, exist_ok=True)
    tmp = os.path.join(RESULTS, "failover.json.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(RESULTS, "failover.json"))
    with open(os.path.join(RESULTS, "failover.md"), "w") as f:
        f.write(markdown(info))


def fmt(v, unit=" s"):
    return "–" if v is None else ("%.1f%s" % (v, unit))


def markdown(info):
    m, k, r = info.get("meta", {}), info.get("kemari", {}), info.get("remus", {})
    ms = info.get("measure", {})
    out = ["# Host death: xl-kemari against upstream `xl remus` (xenlab, two hosts)", "",
           "Generated by `make xenlab-failover` (test/xenlab/failover.py); raw data in `failover.json`. "
           "The `xl remus` column is `make xenlab-baseline-2host`'s trial (results/baseline.json).", "",
           "* when: %s; machine load average %s at the start, %s at the kill (2 cores shared, QEMU TCG)" % (
               m.get("date"), "/".join(m.get("host_loadavg_start", [])), "/".join(info.get("host_loadavg_at_kill", []))),
           "* image: `%s`; xl-kemari `%s`" % (m.get("image_info", "?"), " ".join(m.get("xl_kemari_version", []))),
           "* both hosts booted together in %s; guest (PV, 192 MB, dirtying %s MB/s) up on host1 in %s" % (
               fmt(info.get("boot_both_s")), info.get("dirty_mb_per_s"), fmt(info.get("guest_start_s"))),
           "* `xl-kemari start -F --interval=%dms --timeout=%s --netbuf=plug --set=disk=none --set=unsafe=1 "
           "--remote-command=/mnt/lab/kemari-standby domu xenlab2` (ssh): protected after %s; in a %s s window "
           "%s checkpoints/s (configured %s), pause avg %s ms" % (
               info.get("interval_ms", 0), info.get("kemari_timeout"),
               fmt((info.get("start", {}).get("protected_ms") or 0) / 1000.0), fmt(ms.get("window_s"), ""),
               ms.get("achieved_per_s"), ms.get("configured_per_s"), ms.get("pause_ms", {}).get("avg")),
           "* clocks: host2 − machine = %s ms (sample spread %s ms, drift over the trial %s ms)" % (
               round(info.get("clock_host2_minus_machine_ns", 0) / 1e6, 1),
               round(info.get("clock_sample_spread_ns", 0) / 1e6, 1),
               round(info.get("clock_drift_during_trial_ns", 0) / 1e6, 1)),
           "", "| after host1's QEMU is SIGKILLed | xl-kemari | xl remus (baseline) |", "|---|---|---|",
           "| failure detected | %s after the kill (timeout %s) | never (no failure detector) |" % (
               fmt(k.get("detected_s")), k.get("timeout")),
           "| replica active (activation took %s) | %s | never; %s |" % (
               fmt(k.get("activation_s")), fmt(k.get("activate_event_s")),
               "after a forced EOF: %s s after the kill" % r.get("after_forced_eof", {}).get("since_kill_s")
               if r.get("after_forced_eof", {}).get("recovered") else "–"),
           "| first answer to the client in host2's dom0 | %s | – |" % fmt(k.get("first_answer_s")),
           "| same boot id | %s | %s |" % ({True: "yes", False: "**NO**"}.get(k.get("same_boot"), "–"),
                                           "(after the forced EOF) yes" if (r.get("after_forced_eof") or {}).get(
                                               "guest", {}) else "–"),
           "| hit counter above every answer before the kill | %s (%s > %s) | – |" % (
               {True: "yes", False: "**NO**"}.get(k.get("hits_above"), "–"),
               (k.get("first_answer") or {}).get("hits"), k.get("max_hits_before_kill")),
           "", "* xl-kemari: %s" % k.get("summary"), "* xl remus: %s" % r.get("summary"), ""]
    ev = k.get("standby_events_after_kill")
    if ev:
        out += ["Standby events after the kill (seconds since the kill):", ""]
        out += ["* %s s: %s %s %s" % (e["s"], e["kind"], e.get("state") or "", e.get("msg") or "") for e in ev]
        out.append("")
    if info.get("error"):
        out += ["**Error:** `%s`" % info["error"][:1500].replace("`", "'"), ""]
    out.append("Wall time of the trial: %s." % fmt(info.get("wall_s")))
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
