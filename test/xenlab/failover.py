#!/usr/bin/env python3
"""`make xenlab-failover`: xl-kemari against live `xl remus`, on the same
guest and hosts, in one invocation: the primary's host dies, or only the
sending process does.

Boots hosts 1 and 2 joined by a QEMU network (as xenlab-baseline-2host) and
runs these trials, one after the other, each on the lab's PV guest (192 MB,
dirtying XENLAB_DIRTY_MB MB/s) with a client in the standby host's dom0
(lab/bench.py prober: a request to port 7 every 0.5 s, a thread each, 30 s
to answer) through the whole trial:

  kemari-eos    host1 -> host2, xl-kemari; SIGKILL of `xl-kemari start`'s
                process group only (its ssh goes with it: a clean end of
                the stream), then the primary domain is destroyed
  remus-eos     host2 -> host1, `xl remus`; SIGKILL of the sending `xl`
                and its ssh, then the primary destroyed
  remus-death   host1 -> host2, `xl remus`; host1's QEMU SIGKILLed. Upstream
                has no failure detector: after XENLAB_REMUS_WAIT s (30)
                without a takeover the backup's sshd session is killed (a
                forced EOF), as xenlab-baseline-2host does
  kemari-death  host1 is booted again; host2 -> host1, xl-kemari; host2's
                QEMU SIGKILLed

(The directions alternate so that each trial starts where the guest is
after the last one, and only one extra boot is needed.) xl-kemari runs
`xl-kemari start -F --interval=200ms --timeout=T --netbuf=plug
--set=disk=none --set=unsafe=1 --remote-command=/mnt/lab/kemari-standby
domu xenlabB` (ssh); `xl remus` runs `xl -vvv remus -F -d -i 200 domu
xenlabB` with network buffering (the netbuf libxenlight; XENLAB_REMUS_NETBUF=0:
`-n`). Both buffer the guest's output until the checkpoint is acknowledged.

Figures, each in seconds after the fault, on the standby host's clock:

* detected: xl-kemari: the standby's log line "activating the replica at epoch N"
  (its decision). `xl remus`'s receiver logs to the ssh stream it reads, so
  its decision cannot be seen: "–".
* activation: xl-kemari: decision -> "activated at epoch N in D after the decision" (the replica
  unpaused), with the backend's stages ("replica activation": writer
  backlog, libxl's end of the restore, rename, unpause) and libxl's own
  lines (stamped standby.xtl.log, XL_KEMARI_XEN_LOG=debug) in the JSON;
  `xl remus`: the first `xl list` (polled every 0.1 s) that shows `domu`
  running on the backup.
* first answer: the first answer to the prober that arrived after the
  activation.
* same boot, answered requests lost: every answer the clients got before
  the fault came from one boot, and the replica's is that boot; "lost"
  counts the answers before the fault whose tick (the guest's seconds
  counter) is above that of the replica's first answer: the guest
  answered them after the state the replica resumed (output released
  ahead of its checkpoint). The hit counter is reported too, but the
  guest's service increments it without a lock, and a torn read restarts
  it from 1.
* ratios: xl-kemari's first answer and replica-active times over
  `xl remus`'s, per fault, from this run.

Times: a host kill is stamped on this machine; a sender kill in the
primary's dom0 (lab/bench.py kill-sender); the standby's events, log and
the prober on the standby's clock. Each host writes its clock into files on
its 9p share; their mtimes are this machine's clock at the write, so the
offset is max(content - mtime) over 20 samples.

Writes results/failover.json and results/failover.md and prints the table.
Knobs: XENLAB_KEMARI_TIMEOUT (default 2s), XENLAB_FAILOVER_INTERVAL (ms,
200), XENLAB_WINDOW (s, 10), XENLAB_FAILOVER_TRIALS (comma list, default
all four in the order above), XENLAB_REMUS_WAIT (s, 30),
XENLAB_FAILOVER_REUSE=1 (hosts already up from an interrupted run: kept),
XENLAB_REMUS_NETBUF (1), XENLAB_DIRTY_MB, XENLAB_TIMEOUT, XENLAB_SHARE.
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
ALL_TRIALS = ["kemari-eos", "remus-eos", "remus-death", "kemari-death"]
# (primary, standby) of each trial: see the module comment.
HOSTS = {"kemari-eos": (1, 2), "remus-eos": (2, 1), "remus-death": (1, 2), "kemari-death": (2, 1)}


class Failed(Exception):
    """The trial could not be run or its checks failed."""


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def lab(n, cmd, timeout, script="bench.py"):
    full = "python3 /mnt/lab/%s %s" % (script, cmd)
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
    p.add_argument("--window", type=float, default=float(os.environ.get("XENLAB_WINDOW", "10")))
    p.add_argument("--dirty", type=int, default=int(os.environ.get("XENLAB_DIRTY_MB", "8")))
    p.add_argument("--timeout", type=int, default=int(os.environ.get("XENLAB_TIMEOUT", "300")))
    p.add_argument("--kemari-timeout", default=os.environ.get("XENLAB_KEMARI_TIMEOUT", "2s"))
    p.add_argument("--remus-wait", type=int, default=int(os.environ.get("XENLAB_REMUS_WAIT", "30")))
    p.add_argument("--remus-netbuf", default=os.environ.get("XENLAB_REMUS_NETBUF", "1") != "0",
                   type=lambda v: v not in ("0", "no", "false"))
    p.add_argument("--trials", default=os.environ.get("XENLAB_FAILOVER_TRIALS", ",".join(ALL_TRIALS)))
    p.add_argument("--keep", action="store_true", help="leave both hosts up afterwards (to look around)")
    p.add_argument("--report", action="store_true", help="only rewrite failover.md (and the summaries) from failover.json")
    a = p.parse_args()
    if a.report:
        with open(os.path.join(RESULTS, "failover.json")) as f:
            info = json.load(f)
        for t in info["trials"].values():
            t["summary"] = summarize(t)
        info["ratios"] = ratios(info["trials"])
        write(info)
        print(markdown(info))
        return 0
    trials = [t.strip() for t in a.trials.split(",") if t.strip()]
    bad = [t for t in trials if t not in ALL_TRIALS]
    if bad:
        print("xenlab-failover: unknown trial %s (XENLAB_FAILOVER_TRIALS): want some of %s"
              % (", ".join(bad), ",".join(ALL_TRIALS)), file=sys.stderr)
        return 2
    info = {"meta": {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host_loadavg_start": loadavg(),
                     "host_cpus": os.cpu_count()},
            "interval_ms": a.interval, "kemari_timeout": a.kemari_timeout, "window_s": a.window,
            "dirty_mb_per_s": a.dirty, "remus_netbuf": a.remus_netbuf, "remus_wait_s": a.remus_wait,
            "trials": {}}
    t_all = time.time()
    try:
        run_all(a, trials, info)
    except (Failed, xenlab.LabError) as e:
        info["error"] = str(e)[-4000:]
        print("xenlab-failover: %s" % e, file=sys.stderr)
    finally:
        info["wall_s"] = round(time.time() - t_all, 1)
        info["meta"]["host_loadavg_end"] = loadavg()
        if not a.keep:
            xenlab.down([1, 2])
    for name, t in info["trials"].items():
        t["summary"] = summarize(t)
    info["ratios"] = ratios(info["trials"])
    write(info)
    print(markdown(info))
    ok = bool(info["trials"]) and all(t["summary"].get("passed") for t in info["trials"].values()) \
        and not info.get("error") and len(info["trials"]) == len(trials)
    print("xenlab-failover: %s in %.0f s; report in %s" % ("passed" if ok else "FAILED", time.time() - t_all, RESULTS))
    return 0 if ok else 1


def netbuf_dir():
    """build-netbuf.sh's output (lib.sh's NETBUF_DIR) when it is complete:
    `xl remus` buffers output with it; None otherwise."""
    r = subprocess.run(["bash", "-c", '. "$1/lib.sh" >/dev/null 2>&1; echo "$NETBUF_DIR"', "lib", HERE],
                       capture_output=True, text=True)
    d = r.stdout.strip()
    return d if d and os.path.exists(os.path.join(d, ".xenlab-done")) else None


def boot(hosts, image, share, timeout, netbuf=None):
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "xenlab.py"), "boot", str(n), "--image", image,
                               "--share", share, "--peer", str(3 - n), "--timeout", str(timeout)]
                              + (["--netbuf", netbuf] if netbuf else []))
             for n in hosts]
    for pr in procs:
        if pr.wait() != 0:
            raise Failed("a host did not boot\n" + "\n".join("--- host%d ---\n%s" % (n, xenlab.tail(n, 20))
                                                             for n in hosts))


def run_all(a, trials, info):
    image = subprocess.run([os.path.join(HERE, "build-image.sh")], check=True, capture_output=True,
                           text=True).stdout.strip()
    share = os.environ.get("XENLAB_SHARE", os.path.join(HERE, "..", "..", "bin"))
    if any(t.startswith("kemari") for t in trials) and not os.path.exists(os.path.join(share, "xl-kemari")):
        raise Failed("no %s/xl-kemari: make xenlab-kemari-bin" % share)
    try:
        info["meta"]["image_info"] = open(os.path.join(image, "info")).read().strip()
    except OSError:
        pass
    nb = netbuf_dir() if a.remus_netbuf else None
    if a.remus_netbuf and not nb and any(t.startswith("remus") for t in trials):
        raise Failed("no netbuf libxenlight (make xenlab-netbuf), or XENLAB_REMUS_NETBUF=0 for `xl remus -n`")
    if os.environ.get("XENLAB_FAILOVER_REUSE") != "1":
        xenlab.down([1, 2])
    t0 = time.time()
    boot([1, 2], image, share, a.timeout * 2, nb)  # "already up" with XENLAB_FAILOVER_REUSE=1
    info["boot_both_s"] = round(time.time() - t0, 1)
    for n in (1, 2):
        rc, out = xenlab.run(n, "ssh xenlab%d /mnt/host/xl-kemari version; /mnt/lab/domu.sh prepare" % (3 - n),
                             timeout=120)
        if rc != 0:
            raise Failed("host%d cannot run xl-kemari on host%d over ssh: %s" % (n, 3 - n, out))
        info["meta"]["xl_kemari_version"] = out.strip().splitlines()[:1]
    dead = set()
    for name in trials:
        prim, stby = HOSTS[name]
        for n in (prim, stby):
            if n in dead:
                t0 = time.time()
                xenlab.down([n], quiet=True)
                boot([n], image, share, a.timeout * 2, nb)
                xenlab.run(n, "/mnt/lab/domu.sh prepare", timeout=60)
                info.setdefault("reboots", []).append({"host": n, "before": name, "s": round(time.time() - t0, 1)})
                dead.discard(n)
        t = {"name": name, "protector": name.split("-")[0], "fault": name.split("-")[1], "primary": prim,
             "standby": stby, "host_loadavg_start": loadavg()}
        info["trials"][name] = t
        print("xenlab-failover: %s (host%d -> host%d) ..." % (name, prim, stby), flush=True)
        t0 = time.time()
        try:
            trial(a, t)
        except (Failed, xenlab.LabError) as e:
            t["error"] = str(e)[-3000:]
            print("xenlab-failover: %s: %s" % (name, e), file=sys.stderr)
        finally:
            t["wall_s"] = round(time.time() - t0, 1)
            if t.get("killed_qemu_pid"):
                dead.add(prim)
            # Logs of both sides, for the record, while they are up.
            for n in (prim, stby):
                if n not in dead:
                    xenlab.run(n, "mkdir -p /mnt/out/failover-%s && cp /run/xenlab/kemari/* /run/xenlab/*.log "
                                  "/run/xenlab/prober.jsonl /mnt/out/failover-%s/ 2>/dev/null; true" % (name, name),
                               timeout=60)
            collect(t)
            write(info)


# libxl's and libxc's lines that mark where an activation's time goes.
XTL_MARKS = ("xc: ", "domcreate", "hotplug", "device_", "Running", "script", "stream", "libxl__spawn",
             "domain_unpause", "rename", "activat", "checkpoint", "Restore", "restore")


def collect(t):
    """Copies the trial's logs from the hosts' shares into
    results/failover-logs/NAME/ (small files only), and keeps, from the
    standby's stamped log, the Xen libraries' lines between the decision
    and the end of the activation, with their time since the decision."""
    import shutil
    dst = os.path.join(RESULTS, "failover-logs", t["name"])
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst, exist_ok=True)
    for n in (t["primary"], t["standby"]):
        src = os.path.join(xenlab.path(n, "out"), "failover-" + t["name"])
        if not os.path.isdir(src):
            continue
        for f in os.listdir(src):
            p = os.path.join(src, f)
            if os.path.isfile(p) and os.path.getsize(p) <= 2 << 20:
                shutil.copy(p, os.path.join(dst, "host%d-%s" % (n, f)))
    al = ((t.get("watch") or {}).get("activation_log") or {})
    dec, end = (al.get("decided") or {}).get("t"), (al.get("activated") or {}).get("t")
    xtl = os.path.join(xenlab.path(t["standby"], "out"), "failover-" + t["name"], "standby.xtl.log")
    if not dec or not end or not os.path.exists(xtl):
        return
    off = t.get("clock_standby_minus_machine_ns", 0)
    lines = []
    for line in open(xtl, errors="replace"):
        ts, _, rest = line.partition(" ")
        if not ts.isdigit():
            continue
        # Stamped on the standby's clock; the log's own stamps are too.
        tt = int(ts)
        if dec - 50_000_000 <= tt <= end + 500_000_000 and any(m in rest for m in XTL_MARKS) \
                and "level=DEBUG" not in rest:
            lines.append("%+.3f %s" % ((tt - dec) / 1e9, rest.strip()[:240]))
    t["xtl_activation"] = lines[:400]



def place(a, prim, stby):
    """The guest runs on prim only, unprotected, with nothing left of an
    earlier trial on either host."""
    # The guest may be on the standby host (the last trial's replica): it
    # goes, and starts anew on the primary host unless it runs there.
    r = {"standby": lab(stby, "reset --guest stop", timeout=200)}
    r["primary"] = lab(prim, "reset --guest start --dirty %d" % a.dirty, timeout=500)
    if not r["primary"].get("ok"):
        raise Failed("the guest did not come up on host%d: %s" % (prim, json.dumps(r["primary"])[-2000:]))
    return r


def trial(a, t):
    prim, stby, kind, fault = t["primary"], t["standby"], t["protector"], t["fault"]
    if kind == "kemari":
        t["kemari_timeout"] = a.kemari_timeout
    t["place"] = place(a, prim, stby)
    target = "xenlab%d" % stby
    if kind == "kemari":
        t["reaper_start"] = lab(stby, "reaper start", timeout=60)
        st = lab(prim, "kemari-start --target %s --interval %d --peer-timeout %s --timeout %d"
                 % (target, a.interval, a.kemari_timeout, a.timeout * 2), timeout=a.timeout * 2 + 120)
        t["reaper_stop"] = lab(stby, "reaper stop", timeout=60)
    else:
        st = lab(prim, "remus-start --target %s --interval %d --timeout %d%s"
                 % (target, a.interval, a.timeout * 2, " --netbuf" if a.remus_netbuf else ""),
                 timeout=a.timeout * 2 + 120)
    t["start"] = st
    if not st.get("ok"):
        raise Failed("%s start host%d -> host%d did not get protected: %s" % (kind, prim, stby, json.dumps(st)[-3000:]))
    t["prober_start"] = lab(stby, "prober start", timeout=60)
    ms = lab(prim, "measure --window %g" % a.window, timeout=int(a.window * 6) + 180)
    t["measure"] = ms
    if not ms.get("ok"):
        raise Failed("no checkpoint host%d -> host%d in the window: %s" % (prim, stby, json.dumps(ms)[-3000:]))
    # The fault comes only once a client was answered through the
    # protection: the replica's hit count is checked against those answers.
    pw = lab(stby, "prober wait --at-least 3 --timeout %d" % a.timeout, timeout=a.timeout + 60)
    t["prober_answers_before_fault"] = pw.get("answers")
    if not pw.get("ok"):
        raise Failed("the client in host%d's dom0 got no answers through the protection: %s" % (stby, pw))
    off_s, _ = clock_offset(stby)
    t["clock_standby_minus_machine_before_ns"] = off_s
    t["host_loadavg_at_fault"] = loadavg()
    if fault == "death":
        xenlab.run(prim, "mkdir -p /mnt/out/failover-%s && cp /run/xenlab/kemari/* /run/xenlab/*.log "
                         "/mnt/out/failover-%s/ 2>/dev/null; true" % (t["name"], t["name"]), timeout=60)
        pid = xenlab.kill_qemu(prim)
        t["t_fault_machine_ns"] = time.time_ns()
        t["killed_qemu_pid"] = pid
        print("xenlab-failover: host%d's QEMU (pid %d) SIGKILLed; watching host%d ..." % (prim, pid, stby), flush=True)
    else:
        off_p, _ = clock_offset(prim)
        t["clock_primary_minus_machine_ns"] = off_p
        ks = lab(prim, "kill-sender", timeout=180)
        t["kill_sender"] = ks
        if not ks.get("ok"):
            raise Failed("could not kill the sender on host%d: %s" % (prim, ks))
        t["t_fault_machine_ns"] = ks["t_kill"] - off_p
        print("xenlab-failover: host%d's sender SIGKILLed; watching host%d ..." % (prim, stby), flush=True)
    if kind == "kemari":
        t["watch"] = lab(stby, "watch --timeout %d" % a.timeout, timeout=a.timeout + 120)
    else:
        wait = a.remus_wait if fault == "death" else a.timeout
        t["watch"] = lab(stby, "watch-remus --timeout %d" % wait, timeout=wait + 120)
        if fault == "death" and not t["watch"].get("t_active"):
            # No failure detector upstream: the ssh stream just hangs.
            # Ending it by hand shows what the receiver does with a late EOF.
            t["forced_eof"] = lab(stby, "eof", timeout=60, script="remus.py")
            t["forced_eof_machine_ns"] = time.time_ns()
            t["watch_after_eof"] = lab(stby, "watch-remus --timeout %d" % a.timeout, timeout=a.timeout + 120)
    t["prober_stop"] = lab(stby, "prober stop", timeout=60)
    off, spread = clock_offset(stby)
    t["clock_standby_minus_machine_ns"] = off
    t["clock_sample_spread_ns"] = spread
    t["clock_drift_during_trial_ns"] = off - off_s
    rc, out = xenlab.run(stby, "xl list", timeout=60)
    t["standby_host_after"] = out.strip().splitlines()


def go_seconds(d):
    """A Go duration string ("1.2s", "850ms", "1m2s") in seconds."""
    import re
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "ns": 1e-9}
    parts = re.findall(r"([\d.]+)(h|ms|us|\u00b5s|ns|m|s)", (d or "").strip().strip('"'))
    if not parts:
        return None
    return sum(float(v) * units[u] for v, u in parts)


def summarize(t):
    """The verdict and the figures of one trial, seconds after the fault."""
    w = t.get("watch") or {}
    s = {"protector": t.get("protector"), "fault": t.get("fault")}
    if "t_fault_machine_ns" not in t or not w:
        s["passed"] = False
        s["summary"] = "trial did not reach the fault: %s" % (t.get("error") or "?")[:300]
        return s
    k2 = t["t_fault_machine_ns"] + t["clock_standby_minus_machine_ns"]  # the fault on the standby's clock

    def since(x):
        return None if x is None else round((x - k2) / 1e9, 3)

    def arrived(x):
        return x.get("t_end") or x["t"] + int((x.get("rtt_ms") or 0) * 1e6)

    if t["protector"] == "kemari":
        al = w.get("activation_log") or {}
        act = w.get("activate") or {}
        dec = (al.get("decided") or {}).get("t")
        done = (al.get("activated") or {}).get("t")
        if dec is None and act.get("t") and w.get("activation_ns"):
            dec = act["t"] - w["activation_ns"]
        s["detected_s"] = since(dec)
        s["active_s"] = since(done or act.get("t"))
        if dec and (done or act.get("t")):
            s["activation_s"] = round(((done or act["t"]) - dec) / 1e9, 3)
        st = (al.get("stages") or {}).get("fields") or {}
        fin = (al.get("activated") or {}).get("fields") or {}
        s["stages"] = {k: go_seconds(st.get(k)) for k in ("drain", "restore_end", "rename", "unpause")
                       if st.get(k)}
        for k, name in (("verify", "verify"), ("prepared", "prepare"), ("sink", "sink")):
            if fin.get(k):
                s["stages"][name] = go_seconds(fin.get(k))
        for k in ("backlog_checkpoints", "backlog_pages"):
            if k in st:
                s["stages"][k] = int(st[k])
        s["verdict"] = fin.get("verdict", "").strip('"') or None
        t_act = done or act.get("t")
    else:
        ww = w if w.get("t_active") else (t.get("watch_after_eof") or {})
        s["detected_s"] = None
        s["active_s"] = since(ww.get("t_active"))
        s["forced_eof"] = not w.get("t_active") and bool(t.get("forced_eof"))
        if s["forced_eof"]:
            s["not_taken_over_within_s"] = w.get("waited_s")
            s["forced_eof_s"] = round((t["forced_eof_machine_ns"] - t["t_fault_machine_ns"]) / 1e9, 1)
        t_act = ww.get("t_active")
        w = ww or w
    answers = sorted(w.get("answers") or [], key=arrived)
    before = [x for x in answers if arrived(x) <= k2]
    m = t.get("measure") or {}
    max_hits = max([x["q"]["hits"] for x in before] + [m.get("max_hits") or 0])
    boots = sorted({x["q"]["boot"] for x in before} | set(m.get("boots") or []))
    s["answers_before_fault"] = len(before)
    s["max_hits_before_fault"] = max_hits
    s["boots_before_fault"] = boots
    first = w.get("first_answer_after")
    if first:
        s["first_answer_s"] = since(arrived(first))
        s["first_answer"] = first["q"]
        s["same_boot"] = len(boots) == 1 and first["q"]["boot"] in boots
        # The guest's tick (+1 a second) of an answer released before the
        # fault is at most that of the checkpoint the replica resumes
        # (output commit), so an answer with a later tick than the
        # replica's first is one the replica forgot. The hit counter would
        # say so per request, but guest/svc increments it without a lock
        # and a torn read restarts it from 1 (seen under concurrent
        # requests), so it is reported, not judged.
        s["answered_lost"] = sum(1 for x in before if x["q"].get("tick", 0) > first["q"].get("tick", 0))
        s["max_tick_before_fault"] = max([x["q"].get("tick", 0) for x in before] or [0])
        s["hits_above"] = first["q"]["hits"] > max_hits
    s["passed"] = bool(first and s.get("same_boot") and s.get("active_s") is not None and t_act
                       and s.get("answered_lost") == 0 if t["protector"] == "kemari" else
                       first and s.get("active_s") is not None)
    if t["protector"] == "kemari":
        tmo = go_seconds(t.get("kemari_timeout") or "")
        s["detected_within_timeout"] = None if tmo is None or s.get("detected_s") is None else \
            s["detected_s"] <= tmo + 0.2
    return s


def ratios(trials):
    """xl-kemari's figures over xl remus's, per fault, from this run."""
    out = {}
    for fault in ("eos", "death"):
        k = (trials.get("kemari-" + fault) or {}).get("summary") or {}
        r = (trials.get("remus-" + fault) or {}).get("summary") or {}
        for key in ("active_s", "first_answer_s"):
            if k.get(key) and r.get(key):
                out["%s_%s" % (fault, key)] = round(k[key] / r[key], 3)
    return out


def write(info):
    os.makedirs(RESULTS, exist_ok=True)
    tmp = os.path.join(RESULTS, "failover.json.tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(RESULTS, "failover.json"))
    with open(os.path.join(RESULTS, "failover.md"), "w") as f:
        f.write(markdown(info))


def fmt(v, unit=" s", nd=1):
    return "–" if v is None else (("%%.%df%%s" % nd) % (v, unit))


def yes(v):
    return {True: "yes", False: "**NO**"}.get(v, "–")


TITLES = {"kemari-eos": "xl-kemari, sender killed", "remus-eos": "xl remus, sender killed",
          "kemari-death": "xl-kemari, host killed", "remus-death": "xl remus, host killed"}


def markdown(info):
    m = info.get("meta", {})
    trials = info.get("trials", {})
    names = [n for n in ALL_TRIALS if n in trials]
    out = ["# Failover on real Xen: xl-kemari against live `xl remus` (xenlab, two hosts)", "",
           "Generated by `make xenlab-failover` (test/xenlab/failover.py); raw data in `failover.json`, logs of "
           "both sides in `failover-logs/`.", "",
           "* when: %s; machine load average %s at the start (2 cores shared, QEMU TCG)" % (
               m.get("date"), "/".join(m.get("host_loadavg_start", []))),
           "* image: `%s`; xl-kemari `%s`" % (m.get("image_info", "?"), " ".join(m.get("xl_kemari_version", []))),
           "* both hosts booted together in %s; guest PV, 192 MB, dirtying %s MB/s; client in the standby's dom0, "
           "a request every 0.5 s" % (fmt(info.get("boot_both_s")), info.get("dirty_mb_per_s")),
           "* xl-kemari: `xl-kemari start -F --interval=%dms --timeout=%s --netbuf=plug --set=disk=none "
           "--set=unsafe=1 --remote-command=/mnt/lab/kemari-standby domu xenlabB` (ssh)" % (
               info.get("interval_ms", 0), info.get("kemari_timeout")),
           "* xl remus: `xl -vvv remus -F -d %s-i %d domu xenlabB`%s; after a host kill it is given %s s, then "
           "its backup's sshd session is killed (forced EOF)" % (
               "" if info.get("remus_netbuf") else "-n ", info.get("interval_ms", 0),
               " with network buffering (netbuf libxenlight)" if info.get("remus_netbuf") else "",
               info.get("remus_wait_s")),
           "* sender killed: SIGKILL of the protector's process group on the primary host (host stays up), then "
           "the primary domain destroyed; host killed: SIGKILL of the primary host's QEMU", "",
           "| seconds after the fault | " + " | ".join("%s (host%d → host%d)" % (
               TITLES[n], trials[n]["primary"], trials[n]["standby"]) for n in names) + " |",
           "|---|" + "---|" * len(names)]

    def row(label, f):
        out.append("| %s | %s |" % (label, " | ".join(f(trials[n], trials[n].get("summary") or {}) for n in names)))

    row("load average at the fault", lambda t, s: "/".join((t.get("host_loadavg_at_fault") or [])[:1]) or "–")
    row("protected after (s; xl remus: first checkpoint)", lambda t, s: fmt(
        ((t.get("start") or {}).get("protected_ms") or (t.get("start") or {}).get("first_checkpoint_ms") or 0) / 1000.0
        if t.get("start", {}).get("ok") else None))
    row("checkpoints/s in the window (configured 5)", lambda t, s: str((t.get("measure") or {}).get("achieved_per_s", "–")))
    row("failure detected", lambda t, s: fmt(s.get("detected_s")) if t["protector"] == "kemari" else
        ("not within %s s; forced EOF at %s s" % (s.get("not_taken_over_within_s"), s.get("forced_eof_s"))
         if s.get("forced_eof") else "– (not logged)"))
    row("activation (decision → replica unpaused)", lambda t, s: fmt(s.get("activation_s"), nd=2)
        if t["protector"] == "kemari" else "–")
    row("replica active", lambda t, s: fmt(s.get("active_s")))
    row("first answer from the replica", lambda t, s: fmt(s.get("first_answer_s")))
    row("same boot", lambda t, s: yes(s.get("same_boot")))
    row("answered requests lost", lambda t, s: "–" if s.get("answered_lost") is None else str(s["answered_lost"]))
    row("answers before the fault (max tick / max hits)", lambda t, s: "%s (%s / %s)" % (
        s.get("answers_before_fault", "–"), s.get("max_tick_before_fault", "–"), s.get("max_hits_before_fault", "–")))
    row("replica's first answer (tick / hits)", lambda t, s: "%s / %s" % (
        (s.get("first_answer") or {}).get("tick", "–"), (s.get("first_answer") or {}).get("hits", "–")))
    row("passed", lambda t, s: yes(s.get("passed")))
    out.append("")
    r = info.get("ratios") or {}
    if r:
        out.append("Ratios, xl-kemari over xl remus in this run: " + "; ".join(
            "%s %s" % (k.replace("_s", "").replace("eos_", "sender killed, ").replace("death_", "host killed, ")
                       .replace("active", "replica active").replace("first_answer", "first answer"), v)
            for k, v in sorted(r.items())) + ".")
        out.append("")
    for n in names:
        s = trials[n].get("summary") or {}
        if s.get("stages"):
            st = s["stages"]
            out.append("* %s: activation stages (standby's log): backlog %s checkpoints / %s pages, drain %s, "
                       "libxl's end of the restore %s, rename %s, unpause %s; digest check %s (beside it: decision to built "
                       "domain %s); %s" % (
                           TITLES[n], st.get("backlog_checkpoints", "–"), st.get("backlog_pages", "–"),
                           fmt(st.get("drain"), nd=3), fmt(st.get("restore_end"), nd=3), fmt(st.get("rename"), nd=3),
                           fmt(st.get("unpause"), nd=3), fmt(st.get("verify"), nd=3), fmt(st.get("prepare"), nd=3),
                           s.get("verdict")))
        if trials[n].get("error"):
            out.append("* %s: **error:** `%s`" % (TITLES[n], trials[n]["error"][:800].replace("`", "'")))
    for note in info.get("notes") or []:  # added by hand to failover.json, kept by --report
        out.append("* note: %s" % note)
    if info.get("error"):
        out += ["", "**Error:** `%s`" % info["error"][:1500].replace("`", "'")]
    out += ["", "Wall time: %s (reboots: %s)." % (fmt(info.get("wall_s")), info.get("reboots") or "none"), ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
