#!/usr/bin/env python3
"""`xl remus` against `xl-kemari`, measured the same way, in a xenlab dom0.

Run from the 9p share /mnt/lab by test/xenlab/bench.py (make xenlab-bench)
and test/xenlab/failover.py (make xenlab-failover). Each subcommand prints
one JSON object on stdout and exits 0 when it did what it says, 1 otherwise
(the JSON then says why):

  bench.py latency [--count N]        ping and port-7 round trips, unprotected
  bench.py remus-start --interval MS [--netbuf] [--target HOST] [--timeout S]
                                      `xl -vvv remus -F -d [-n]` with every log
                                      line time-stamped (stamp.py); waits for
                                      the first completed checkpoint
  bench.py kemari-start --interval MS [--inflight N] [--mode epoch|event]
                        [--target HOST] [--timeout S] [--peer-timeout D]
                        [--connect-timeout D (60s)]
                                      `xl-kemari start -F` over ssh (the default
                                      transport) with plug output buffering;
                                      waits for state "protected"
  bench.py measure [--window S]       the same window for either protector:
                                      checkpoints, pauses, pages/bytes, ping and
                                      port-7 round trips (with the hit counts the
                                      clients were answered)
  bench.py failover [--timeout S]     clean stream end: SIGKILL the sender's
                                      process group, destroy the primary, time
                                      until the other domain answers; ends a
                                      kemari standby afterwards (by its pid)
  bench.py prober start|stop          a client loop on port 7 in the background,
                                      one JSON line per attempt (two hosts)
  bench.py prober wait [--at-least N]  until the prober has N answers
  bench.py reaper start|stop          reap_orphans every 5 s in the background
  bench.py watch [--timeout S]        on the standby host: wait for the
                                      standby's activation and the prober's
                                      first answer after it; the decision and
                                      the activation's stages from its log
  bench.py watch-remus [--timeout S]  on `xl remus`'s backup host: when `domu`
                                      runs there (renamed, unpaused: polled
                                      every 0.1 s) and the prober's first
                                      answer after that
  bench.py kill-sender                on the primary host, a clean end of the
                                      stream: SIGKILL the protector's process
                                      group (xl-kemari start, or xl remus and
                                      its ssh), then destroy the primary; the
                                      kill is stamped on this host's clock
  bench.py reset [--guest start|stop|keep]
                                      ends whatever a failed step left: the
                                      protector's process group, a kemari
                                      standby, replica domains, idle ifbs;
                                      then restarts domu if it is gone
                                      (start), destroys it (stop) or not
  bench.py clock [--n N]              writes this dom0's clock into N files in
                                      /mnt/out; their mtimes (the machine's
                                      clock) give the offset between the two

How each figure is obtained (same method for both protectors unless said):

* checkpoints: `xl remus`: libxc's "Checkpointed save: N/N 100%" lines;
  xl-kemari: "checkpoint" events of --events (each a captured epoch) and
  "release" events (acknowledged by the standby, output let out).
* pause per checkpoint: xl-kemari: pause_ns of the checkpoint event (the
  engine's own clock, from its suspend call until resume returns).
  `xl remus` logs no times, so stamp.py time-stamps each line as it arrives
  and the pause is taken from libxl's "issuing PV suspend request" to
  libxc's "Checkpointed save: N/N 100%" (the dirty pages are sent while the
  guest is suspended). That leaves out the last records of the checkpoint
  (vCPU state, a few KB) and the resume itself, so it is a lower bound:
  the comparison favours `xl remus`.
* bytes per checkpoint: xl-kemari: xl_kemari_bytes_wire_total (page bytes
  after compression) and _raw_total from --metrics, over the checkpoints of
  the window; `xl remus`: pages x 4 KiB (libxc sends pages uncompressed).
* latency: `ping -i 0.2` from dom0 to the guest for the whole window, and
  port-7 requests 0.5 s apart (lab/remus.py's query), both run the same way
  for both protectors.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import remus as R  # noqa: E402  (query, domid, domains, sh, free_ifbs, alive)

STATE = "/run/xenlab/bench.json"
KDIR = "/run/xenlab/kemari"
KEMARI = "/mnt/host/xl-kemari"
PRIMARY_METRICS = "127.0.0.1:9181"
PROBER_OUT = "/run/xenlab/prober.jsonl"
PROBER_PID = "/run/xenlab/prober.pid"
DONE = re.compile(r"Checkpointed save: (\d+)/(\d+)\s+100%")
SUSPEND = "issuing PV suspend request"
PAGE = 4096
# A port-7 request that gets no answer within this long counts as failed.
# Under TCG on a loaded machine the guest's service takes ~0.1-1.5 s even
# unprotected, and a held epoch adds seconds: lab/remus.py's 3 s would
# fail most requests, leaving no hit counts to check a failover against.
QUERY_TIMEOUT = 10.0


def query(timeout):
    """lab/remus.py's query, with a torn status line (a field read while
    the guest rewrote its file: "tick=" empty) counted as no answer."""
    try:
        return R.query(timeout=timeout)
    except ValueError:
        return None


def emit(obj, ok=True):
    obj["ok"] = ok
    obj["dom0_loadavg"] = open("/proc/loadavg").read().split()[:3]
    print(json.dumps(obj, sort_keys=True))
    return 0 if ok else 1


def save_state(st):
    os.makedirs("/run/xenlab", exist_ok=True)
    with open(STATE + ".tmp", "w") as f:
        json.dump(st, f)
    os.replace(STATE + ".tmp", STATE)


def load_state():
    with open(STATE) as f:
        return json.load(f)


def pct(xs, p):
    """The p-th percentile (nearest rank) of xs; None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def dist(xs, nd=1):
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "avg": round(sum(xs) / len(xs), nd), "p50": round(pct(xs, 50), nd),
            "p90": round(pct(xs, 90), nd), "max": round(max(xs), nd), "min": round(min(xs), nd)}


# ---------------------------------------------------------------- logs

def events(path):
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def remus_checkpoints(log):
    """[(t_ns, pages, pause_ns)] for each completed checkpoint in the
    stamped log; pause_ns is None when no suspend line preceded it."""
    out = []
    t_susp = None
    try:
        f = open(log, errors="replace")
    except OSError:
        return out
    with f:
        for line in f:
            ts, _, rest = line.partition(" ")
            if not ts.isdigit():
                continue
            t = int(ts)
            if SUSPEND in rest:
                t_susp = t
                continue
            m = DONE.search(rest)
            if m and m.group(1) == m.group(2):
                out.append((t, int(m.group(1)), t - t_susp if t_susp is not None else None))
                t_susp = None
    return out


def metrics(addr):
    try:
        with urllib.request.urlopen("http://%s/metrics" % addr, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, val = line.rpartition(" ")
        name = name.split("{")[0]
        try:
            out[name] = out.get(name, 0.0) + float(val)
        except ValueError:
            pass
    return out


def log_tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            lines = [l.rstrip() for l in f if "debug:" not in l and "level=DEBUG" not in l]
    except OSError:
        return []
    return lines[-n:]


# ---------------------------------------------------------------- clients

def client_loop(stop, out, gap):
    """Port-7 requests GAP seconds apart until STOP: (t_ns, rtt_ms or
    None, answer dict or None)."""
    while not stop.is_set():
        t0 = time.monotonic()
        ts = time.time_ns()
        q = query(timeout=QUERY_TIMEOUT)
        out.append((ts, round((time.monotonic() - t0) * 1000, 1) if q else None, q))
        stop.wait(gap)


def ping_rtts(count, interval="0.2"):
    rc, out = R.sh("ping -n -c %d -i %s -W 2 %s" % (count, interval, R.GUEST), timeout=count * 3 + 60)
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    return {"sent": count, "received": len(rtts), "loss_pct": round(100.0 * (count - len(rtts)) / count, 1),
            "rtt_ms": dist(rtts, 2)}


def latency(window):
    """Ping and port-7 round trips for WINDOW seconds, in parallel."""
    stop = threading.Event()
    answers = []
    t = threading.Thread(target=client_loop, args=(stop, answers, 0.5))
    t.start()
    p = ping_rtts(max(5, int(window * 5)))
    stop.set()
    t.join()
    ok = [a[1] for a in answers if a[1] is not None]
    svc = {"n": len(answers), "fail": len(answers) - len(ok), "rtt_ms": dist(ok)}
    hits = [a[2]["hits"] for a in answers if a[2]]
    boots = sorted({a[2]["boot"] for a in answers if a[2]})
    return p, svc, (max(hits) if hits else None), boots


# ---------------------------------------------------------------- commands

def cmd_latency(a):
    p, svc, hits, boots = latency(a.window)
    return emit({"ping": p, "service": svc, "max_hits": hits, "boots": boots}, bool(boots))


def wait_first(pred, timeout, proc, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return None
        if proc.poll() is not None:
            return "%s exited %d before %s" % (proc.args if isinstance(proc.args, str) else proc.args[0],
                                               proc.returncode, what)
        time.sleep(0.25)
    return "no %s within %d s" % (what, timeout)


def guest_before_start():
    """The guest's answer just before protection starts: the boot and
    hit count a failover must carry on from, even when no client gets an
    answer during the window (a guest paused most of the time)."""
    q = query(timeout=QUERY_TIMEOUT)
    return {"boot_before_start": q and q.get("boot"), "hits_before_start": q and q.get("hits")}


def cmd_remus_start(a):
    d = R.domid("domu")
    if d is None:
        return emit({"error": "domu is not running", "domains": R.domains()}, False)
    g0 = guest_before_start()
    env = dict(os.environ)
    opts = ["-F", "-d"]
    if a.netbuf:
        lib = os.path.join(R.NETBUF_SRC, "libxenlight.so.4.17.0")
        if not os.path.exists(lib):
            return emit({"error": "no netbuf libxenlight at %s" % lib}, False)
        # The same preparation as lab/remus.py start --netbuf.
        os.makedirs(R.NETBUF_LIB, exist_ok=True)
        R.shutil.copy(lib, R.NETBUF_LIB)
        link = os.path.join(R.NETBUF_LIB, "libxenlight.so.4.17")
        if not os.path.lexists(link):
            os.symlink("libxenlight.so.4.17.0", link)
        R.shutil.copy(os.path.join(R.NETBUF_SRC, "remus-netbuf-setup"), "/etc/xen/scripts/remus-netbuf-setup")
        os.chmod("/etc/xen/scripts/remus-netbuf-setup", 0o755)
        env["LD_LIBRARY_PATH"] = R.NETBUF_LIB
        R.free_ifbs()
    else:
        opts.append("-n")
    os.makedirs("/run/xenlab", exist_ok=True)
    tag = "remus-i%d-%s-%s" % (a.interval, "netbuf" if a.netbuf else "n", a.target)
    log = "/run/xenlab/%s.log" % tag
    if os.path.exists(log):
        os.unlink(log)
    xl = ["xl", "-vvv", "remus"] + opts + ["-i", str(a.interval), "domu", a.target]
    cmd = "%s 2>&1 | python3 /mnt/lab/stamp.py %s" % (" ".join(xl), log)
    t0 = time.monotonic()
    # A session of its own: failover ends xl, its ssh and the stamper at once.
    p = subprocess.Popen(["sh", "-c", cmd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    st = {"kind": "remus", "pid": p.pid, "log": log, "primary": d, "interval": a.interval, "netbuf": a.netbuf,
          "target": a.target, "cmd": " ".join(xl), "started": time.time(), **g0}
    save_state(st)
    err = wait_first(lambda: len(remus_checkpoints(log)) >= 1, a.timeout, p, "first checkpoint")
    if err:
        return emit({"cmd": st["cmd"], "error": err, "log_tail": log_tail(log), "domains": R.domains()}, False)
    st["first_checkpoint_ms"] = int((time.monotonic() - t0) * 1000)
    save_state(st)
    return emit({"cmd": st["cmd"], "first_checkpoint_ms": st["first_checkpoint_ms"]})


REPLICA = re.compile(r"--kemari-(\d+)-\d+$")


def reap_orphans():
    """Destroys replica domains (<name>--kemari-<pid>-<n>) whose standby
    process <pid> is gone. A standby that dies before its replica's first
    checkpoint leaves it paused, holding the guest's memory in Xen (seen
    in this lab: the receiver crashes in libxl_domain_create_restore after
    "primary lost before the first checkpoint"); a few of them exhaust the
    host. Returns the names destroyed."""
    out = []
    for name in R.domains().split():
        n = name.split(":")[0]
        m = REPLICA.search(n)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            R.sh("xl destroy %s" % n, timeout=120)
            out.append(n)
    return out


def cmd_kemari_start(a):
    d = R.domid("domu")
    if d is None:
        return emit({"error": "domu is not running", "domains": R.domains()}, False)
    g0 = guest_before_start()
    os.makedirs(KDIR, exist_ok=True)
    tag = "kemari-i%d-f%d-%s-%s" % (a.interval, a.inflight, a.mode, a.target)
    ev = os.path.join(KDIR, tag + ".jsonl")
    log = os.path.join(KDIR, tag + ".log")
    for f in (ev, log, os.path.join(KDIR, "standby.jsonl"), os.path.join(KDIR, "standby.log"),
              os.path.join(KDIR, "standby.pid")):
        if os.path.exists(f):
            os.unlink(f)
    # Where the standby runs (localhost or the peer host), its events go to
    # KDIR/standby.jsonl there (lab/kemari-standby).
    cmd = [KEMARI, "start", "-F", "--interval=%dms" % a.interval, "--timeout=%s" % a.peer_timeout,
           "--inflight=%d" % a.inflight, "--mode=%s" % a.mode, "--netbuf=plug",
           "--set=disk=none", "--set=unsafe=1", "--remote-command=/mnt/lab/kemari-standby",
           "--events=%s" % ev, "--metrics=%s" % PRIMARY_METRICS, "--log-level=%s" % a.log_level]
    if a.connect_timeout:
        cmd.append("--connect-timeout=%s" % a.connect_timeout)
    cmd += ["domu", a.target]
    t0 = time.monotonic()
    with open(log, "w") as lf:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                             start_new_session=True)
    st = {"kind": "kemari", "pid": p.pid, "log": log, "events": ev, "primary": d, "interval": a.interval,
          "inflight": a.inflight, "mode": a.mode, "target": a.target, "peer_timeout": a.peer_timeout,
          "netbuf": "plug", "cmd": " ".join(cmd), "started": time.time(), **g0}
    save_state(st)

    reaped = []
    last = [0.0]

    def protected():
        if time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            reaped.extend(reap_orphans())
        return any(e.get("kind") == "state" and e.get("state") == "protected" for e in events(ev))

    err = wait_first(protected, a.timeout, p, "state protected")
    if err:
        return emit({"cmd": st["cmd"], "error": err, "log_tail": log_tail(log), "domains": R.domains(),
                     "events_tail": events(ev)[-10:], "reaped": reaped}, False)
    st["protected_ms"] = int((time.monotonic() - t0) * 1000)
    evs = events(ev)
    st["first_checkpoint_ms"] = st["protected_ms"]
    save_state(st)
    # Each failed attempt of the initial sync is a line of states; reaped
    # lists replicas their dead standby left behind (see reap_orphans).
    return emit({"cmd": st["cmd"], "protected_ms": st["protected_ms"], "reaped": reaped,
                 "attempts": sum(1 for e in evs if e.get("kind") == "state" and e.get("state") == "syncing"),
                 "states": [(e.get("state"), e.get("msg")) for e in evs if e.get("kind") == "state"]})


def cmd_measure(a):
    st = load_state()
    if not R.alive(st["pid"]):
        return emit({"error": "%s is not running" % st["kind"], "log_tail": log_tail(st["log"])}, False)
    m0 = metrics(PRIMARY_METRICS) if st["kind"] == "kemari" else {}
    t0 = time.time_ns()
    p, svc, hits, boots = latency(a.window)
    t1 = time.time_ns()
    m1 = metrics(PRIMARY_METRICS) if st["kind"] == "kemari" else {}
    el = (t1 - t0) / 1e9
    r = {"kind": st["kind"], "interval_ms": st["interval"], "netbuf": st["netbuf"], "target": st["target"],
         "window_s": round(el, 2), "configured_per_s": round(1000.0 / st["interval"], 2),
         "ping": p, "service": svc, "max_hits": hits, "boots": boots,
         "first_checkpoint_ms": st.get("first_checkpoint_ms")}
    if st["kind"] == "remus":
        cps = [c for c in remus_checkpoints(st["log"]) if t0 <= c[0] <= t1]
        pauses = [c[2] / 1e6 for c in cps if c[2] is not None]
        pages = [c[1] for c in cps]
        r["pause_method"] = "stamped log: 'issuing PV suspend request' -> 'Checkpointed save: N/N 100%' (lower bound)"
        r["bytes_per_checkpoint"] = round(sum(pages) * PAGE / len(cps)) if cps else None
        r["bytes_method"] = "pages x 4 KiB (libxc progress lines)"
    else:
        evs = [e for e in events(st["events"]) if t0 <= e.get("t", 0) <= t1]
        cps = [(e["t"], e.get("pages", 0), e.get("pause_ns")) for e in evs if e.get("kind") == "checkpoint"]
        pauses = [c[2] / 1e6 for c in cps if c[2]]
        pages = [c[1] for c in cps]
        rel = [e for e in evs if e.get("kind") == "release"]
        r["releases"] = len(rel)
        r["released_per_s"] = round(len(rel) / el, 2)
        r["pause_method"] = "pause_ns of --events checkpoint (engine: suspend call to resume return)"
        dn = m1.get("xl_kemari_checkpoints_total", 0) - m0.get("xl_kemari_checkpoints_total", 0)
        dw = m1.get("xl_kemari_bytes_wire_total", 0) - m0.get("xl_kemari_bytes_wire_total", 0)
        dr = m1.get("xl_kemari_bytes_raw_total", 0) - m0.get("xl_kemari_bytes_raw_total", 0)
        r["metrics_checkpoints"] = dn
        r["bytes_per_checkpoint"] = round(dw / dn) if dn else None
        r["raw_bytes_per_checkpoint"] = round(dr / dn) if dn else None
        r["bytes_method"] = "xl_kemari_bytes_wire_total / xl_kemari_checkpoints_total over the window (--metrics)"
        states = [e for e in evs if e.get("kind") in ("state", "error")]
        r["states_in_window"] = [(e.get("kind"), e.get("state"), e.get("msg")) for e in states][:10]
        r["commit_latency_s"] = m1.get("xl_kemari_commit_latency_seconds")
    r["checkpoints"] = len(cps)
    r["achieved_per_s"] = round(len(cps) / el, 2)
    r["rate_ratio"] = round(r["achieved_per_s"] / r["configured_per_s"], 3)
    r["pages_per_checkpoint"] = round(sum(pages) / len(pages), 1) if pages else None
    r["pause_ms"] = dist(pauses)
    if len(cps) >= 2:
        gaps = [(cps[i + 1][0] - cps[i][0]) / 1e6 for i in range(len(cps) - 1)]
        r["period_ms"] = dist(gaps)
    r["alive"] = R.alive(st["pid"])
    ok = len(cps) >= 1 and r["alive"]
    if not ok:
        r["log_tail"] = log_tail(st["log"])
    st["max_hits"] = hits
    st["boots"] = boots
    save_state(st)
    return emit(r, ok)


def stop_standby(timeout=60):
    """Ends a kemari standby by its pid file (SIGTERM; it keeps an
    activated replica running); returns what happened."""
    try:
        pid = int(open(os.path.join(KDIR, "standby.pid")).read().split()[0])
    except (OSError, ValueError, IndexError):
        return "no pid file"
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"xl-kemari" not in f.read():
                return "pid %d is not xl-kemari" % pid
    except OSError:
        return "pid %d already gone" % pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not R.alive(pid):
            return "pid %d ended on SIGTERM" % pid
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    return "pid %d SIGKILLed after %d s" % (pid, timeout)


def cmd_failover(a):
    st = load_state()
    if not R.alive(st["pid"]):
        return emit({"error": "%s is not running: nothing to fail over" % st["kind"], "domains": R.domains(),
                     "log_tail": log_tail(st["log"])}, False)
    q0 = query(timeout=QUERY_TIMEOUT)
    before = R.domains()
    max_hits = max([h for h in (st.get("max_hits"), q0 and q0.get("hits"), st.get("hits_before_start"))
                    if h is not None] or [0])
    t0 = time.monotonic()
    try:
        os.killpg(st["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    # The primary may be left suspended mid-checkpoint; it is the dead host.
    R.sh("xl destroy %d" % st["primary"])
    t_destroyed = time.monotonic()
    deadline = t0 + a.timeout
    q1, new = None, None
    while time.monotonic() < deadline:
        new = R.domid("domu")
        if new is not None and new != st["primary"]:
            q1 = query(timeout=5.0)
            if q1 is not None:
                break
        time.sleep(0.1)
    el = int((time.monotonic() - t0) * 1000)
    r = {"case": "clean stream end (sender SIGKILLed, primary destroyed)", "kind": st["kind"],
         "interval_ms": st["interval"], "domains_before": before, "guest_before": q0, "guest_after": q1,
         "max_hits_before": max_hits, "destroy_ms": int((t_destroyed - t0) * 1000)}
    if st["kind"] == "kemari":
        sb = events(os.path.join(KDIR, "standby.jsonl"))
        r["standby_events_after"] = [(e.get("kind"), e.get("state"), e.get("msg")) for e in sb
                                     if e.get("kind") in ("state", "activate", "error")][-6:]
        r["stop_standby"] = stop_standby()
    elif st["netbuf"]:
        R.free_ifbs()
    r["domains_after"] = R.domains()
    r["leftover_domains"] = leftover_domains()
    if q1 is None:
        r["error"] = "no answer from a new domu within %d s" % a.timeout
        return emit(r, False)
    r["failover_ms"] = el
    # Every answer before the failure came from one boot (measure's
    # clients, and q0 when the guest answered it).
    boots_before = (set(st.get("boots") or []) | ({q0["boot"]} if q0 else set())
                    | ({st["boot_before_start"]} if st.get("boot_before_start") else set()))
    r["boots_before"] = sorted(boots_before)
    r["same_boot"] = len(boots_before) == 1 and q1.get("boot") in boots_before
    r["hits_above"] = q1.get("hits", 0) > max_hits
    r["state_survived"] = bool(r["same_boot"] and r["hits_above"])
    return emit(r, r["state_survived"])


def cmd_kill_sender(a):
    """The clean end of the stream in make xenlab-failover: the sender's
    process dies, its host stays up. The primary domain is destroyed right
    after (it is left suspended or running unprotected; two copies would
    answer the same address), as in cmd_failover."""
    st = load_state()
    if not R.alive(st["pid"]):
        return emit({"error": "%s is not running" % st["kind"], "log_tail": log_tail(st["log"])}, False)
    t_kill = time.time_ns()
    try:
        os.killpg(st["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    rc, out = R.sh("xl destroy %d" % st["primary"], timeout=120)
    r = {"t_kill": t_kill, "t_destroyed": time.time_ns(), "kind": st["kind"], "destroy_rc": rc,
         "destroy_out": out[-500:], "domains_after": R.domains()}
    if st["kind"] == "remus" and st.get("netbuf"):
        R.free_ifbs()
    return emit(r)


def cmd_watch_remus(a):
    """On `xl remus`'s backup host after a fault: polls `xl list` every
    0.1 s until a domain called exactly domu runs (the receiver renamed
    domu--incoming and unpaused it), then waits for the prober's first
    answer after that. Without a takeover within the timeout it reports
    what the host shows (ok: upstream has no failure detector)."""
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    t_active = None
    seen_incoming = None
    while time.monotonic() < deadline:
        rc, out = R.sh("xl list")
        for line in out.splitlines()[1:]:
            f = line.split()
            if len(f) >= 5 and f[0] == "domu" and "p" not in f[4]:
                t_active = time.time_ns()
            if f and f[0] == "domu--incoming" and seen_incoming is None:
                seen_incoming = time.time_ns()
        if t_active:
            break
        time.sleep(0.1)
    first = None
    if t_active:
        while time.monotonic() < deadline:
            post = sorted((x for x in events(PROBER_OUT) if x.get("q") and x["t_end"] > t_active),
                          key=lambda x: x["t_end"])
            if post:
                first = post[0]
                break
            time.sleep(0.2)
    probes = events(PROBER_OUT)
    r = {"t_active": t_active, "first_answer_after": first, "answers": [x for x in probes if x.get("q")],
         "probes": len(probes), "domains": R.domains(), "waited_s": round(time.monotonic() - t0, 1)}
    if not t_active:
        rc, ps = R.sh("ps -eo pid,ppid,pcpu,stat,args | grep -E 'migrate-receive|sshd' | grep -v grep")
        r["processes"] = ps.splitlines()
        r["error"] = "no running domu within %d s" % a.timeout
        return emit(r, True)
    if first is None:
        r["error"] = "no answer after domu ran"
    return emit(r, first is not None)


# Message prefixes (the standby's messages carry the epoch and duration).
ACTIVATION_LINES = {"activating the replica": "decided", "replica activation": "stages",
                    "activated at epoch": "activated"}


def standby_log_activation(path):
    """The standby's own account of its activation (its slog text log):
    the decision, the backend's stages and the end, each with its time
    (Unix ns, from the log's millisecond stamps) and its key=value
    fields."""
    import datetime
    out = {}
    try:
        f = open(path, errors="replace")
    except OSError:
        return out
    with f:
        for line in f:
            m = re.search(r'time=(\S+) .*msg="([^"]+)"(.*)', line)
            key = next((v for k, v in ACTIVATION_LINES.items() if m and m.group(2).startswith(k)), None)
            if key is None:
                continue
            try:
                t = datetime.datetime.fromisoformat(m.group(1))
            except ValueError:
                continue
            kv = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', m.group(3)))
            out[key] = {"t": int(t.timestamp() * 1e9), "fields": kv, "line": line.strip()}
    return out


def cmd_prober(a):
    if a.action == "start":
        if os.path.exists(PROBER_OUT):
            os.unlink(PROBER_OUT)
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "prober", "run", "--gap", str(a.gap),
                              "--query-timeout", str(a.query_timeout)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        with open(PROBER_PID, "w") as f:
            f.write("%d\n" % p.pid)
        return emit({"pid": p.pid, "out": PROBER_OUT})
    if a.action == "run":
        # A request every GAP s, each in a thread of its own, so that one
        # hanging on a dead host does not delay the next: the first answer
        # after a failover is seen within GAP of the guest giving it.
        out = open(PROBER_OUT, "a", buffering=1)
        lock = threading.Lock()

        def one():
            ts = time.time_ns()
            q = query(timeout=a.query_timeout)
            te = time.time_ns()
            with lock:
                out.write(json.dumps({"t": ts, "t_end": te, "rtt_ms": round((te - ts) / 1e6, 1) if q else None,
                                      "q": q}) + "\n")

        while True:
            threading.Thread(target=one, daemon=True).start()
            time.sleep(a.gap)
    if a.action == "wait":
        # Until the prober has AT_LEAST answers: the failover trial kills
        # the primary host only once clients have been answered through
        # the protection, so there are hit counts to compare with.
        deadline = time.monotonic() + a.timeout
        while time.monotonic() < deadline:
            n = sum(1 for x in events(PROBER_OUT) if x.get("q"))
            if n >= a.at_least:
                return emit({"answers": n})
            time.sleep(0.5)
        return emit({"answers": sum(1 for x in events(PROBER_OUT) if x.get("q")),
                     "error": "fewer than %d answers within %d s" % (a.at_least, a.timeout)}, False)
    # stop
    try:
        pid = int(open(PROBER_PID).read())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    return emit({"answers": sum(1 for x in events(PROBER_OUT) if x.get("q"))})


REAPER_PID = "/run/xenlab/reaper.pid"


def cmd_reaper(a):
    """The standby host's side of reap_orphans, in the background while
    the primary host (re)tries its initial sync."""
    if a.action == "start":
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "reaper", "run"], stdin=subprocess.DEVNULL,
                             stdout=open("/run/xenlab/reaper.log", "a"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        with open(REAPER_PID, "w") as f:
            f.write("%d\n" % p.pid)
        return emit({"pid": p.pid})
    if a.action == "run":
        while True:
            for n in reap_orphans():
                print(json.dumps({"t": time.time_ns(), "reaped": n}), flush=True)
            time.sleep(5)
    try:
        pid = int(open(REAPER_PID).read())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        pass
    reaped = [json.loads(l)["reaped"] for l in open("/run/xenlab/reaper.log") if l.startswith("{")] \
        if os.path.exists("/run/xenlab/reaper.log") else []
    return emit({"reaped": reaped})


def go_duration_ns(s):
    """Parses a Go time.Duration string ("1m2.5s", "850ms") into ns."""
    units = {"h": 3600e9, "m": 60e9, "s": 1e9, "ms": 1e6, "us": 1e3, "\u00b5s": 1e3, "ns": 1}
    parts = re.findall(r"([\d.]+)(h|ms|us|\u00b5s|ns|m|s)", s or "")
    if not parts:
        return None
    return int(sum(float(v) * units[u] for v, u in parts))


def cmd_watch(a):
    """On the standby host after the primary host died: waits for the
    standby's activation event, then for the prober's first answer after
    it; returns both with every standby event since the window began."""
    sbf = os.path.join(KDIR, "standby.jsonl")
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    act = None
    first = None
    while time.monotonic() < deadline:
        sb = events(sbf)
        act = next((e for e in sb if e.get("kind") == "activate"), None)
        if act:
            post = sorted((x for x in events(PROBER_OUT) if x.get("q") and x["t_end"] > act["t"]),
                          key=lambda x: x["t_end"])
            if post:
                first = post[0]
                break
        time.sleep(0.2)
    sb = events(sbf)
    probes = events(PROBER_OUT)
    # The activation's own duration (restore completion, digest check,
    # rename, unpause): the activate event is written when it ends, so
    # the standby decided the primary was dead that long before.
    rc, out = R.sh("%s status --json" % KEMARI)
    status = None
    try:
        status = json.loads(out)
    except ValueError:
        pass
    act_ns = None
    for e in status or []:
        for st in (e.get("status") if isinstance(e.get("status"), list) else [e]):
            if isinstance(st, dict) and st.get("activation_time"):
                act_ns = go_duration_ns(st["activation_time"])
    r = {"status": status if status is not None else out[-2000:], "activation_ns": act_ns,
         "activate": act, "first_answer_after": first,
         "standby_events": [e for e in sb if e.get("kind") in ("state", "activate", "error")],
         "last_commit": next((e for e in reversed(sb) if e.get("kind") == "commit"), None),
         "probes": len(probes), "answers": [x for x in probes if x.get("q")],
         "standby_log_tail": log_tail(os.path.join(KDIR, "standby.log"), 15), "domains": R.domains(),
         "activation_log": standby_log_activation(os.path.join(KDIR, "standby.log"))}
    ok = act is not None and first is not None
    if not ok:
        r["error"] = "no activation" if act is None else "no answer after the activation"
    return emit(r, ok)


def leftover_domains():
    out = []
    for name in R.domains().split():
        n = name.split(":")[0]
        if "--kemari-" in n or n.endswith("--incoming"):
            out.append(n)
    return out


def cmd_reset(a):
    r = {}
    try:
        st = load_state()
    except (OSError, ValueError):
        st = None
    if st and R.alive(st["pid"]):
        try:
            os.killpg(st["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
        r["killed"] = "%s pid %d" % (st["kind"], st["pid"])
    r["stop_standby"] = stop_standby()
    left = leftover_domains()
    for n in left:
        R.sh("xl destroy %s" % n, timeout=120)
    r["destroyed"] = left
    R.free_ifbs()
    if a.guest == "stop" and R.domid("domu") is not None:
        rc, out = R.sh("xl destroy domu", timeout=120)
        r["destroyed_domu"] = rc == 0
    if a.guest == "start" and R.domid("domu") is None:
        rc, out = R.sh("/mnt/lab/domu.sh start %d 1" % a.dirty, timeout=400)
        r["restarted_domu"] = out.splitlines()[-1:] if rc == 0 else out
        if rc != 0:
            return emit(r, False)
    r["domains"] = R.domains()
    return emit(r)


def cmd_clock(a):
    samples = []
    for i in range(a.n):
        p = "/mnt/out/clock-%d" % i
        with open(p, "w") as f:
            f.write("%d\n" % time.time_ns())
        samples.append(p)
        time.sleep(0.02)
    return emit({"files": samples})


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("latency")
    l.add_argument("--window", type=float, default=10)
    s = sub.add_parser("remus-start")
    s.add_argument("--interval", type=int, required=True)
    s.add_argument("--netbuf", action="store_true")
    s.add_argument("--target", default="localhost")
    s.add_argument("--timeout", type=int, default=300)
    k = sub.add_parser("kemari-start")
    k.add_argument("--interval", type=int, required=True)
    k.add_argument("--inflight", type=int, default=1)
    k.add_argument("--mode", default="epoch")
    k.add_argument("--target", default="localhost")
    k.add_argument("--timeout", type=int, default=300)
    k.add_argument("--peer-timeout", default="4s")
    k.add_argument("--log-level", default="info")
    # ssh plus the start of xl-kemari from the 9p share took 15-30 s in a
    # dom0 of a loaded machine (load 10-15), past the default 10 s.
    k.add_argument("--connect-timeout", default="60s")
    m = sub.add_parser("measure")
    m.add_argument("--window", type=float, default=15)
    f = sub.add_parser("failover")
    f.add_argument("--timeout", type=int, default=120)
    pr = sub.add_parser("prober")
    pr.add_argument("action", choices=["start", "stop", "run", "wait"])
    pr.add_argument("--gap", type=float, default=0.5)
    pr.add_argument("--query-timeout", type=float, default=30.0)
    pr.add_argument("--at-least", type=int, default=3)
    pr.add_argument("--timeout", type=int, default=300)
    rp = sub.add_parser("reaper")
    rp.add_argument("action", choices=["start", "stop", "run"])
    w = sub.add_parser("watch")
    w.add_argument("--timeout", type=int, default=300)
    rs = sub.add_parser("reset")
    rs.add_argument("--dirty", type=int, default=8)
    rs.add_argument("--guest", choices=["start", "stop", "keep"], default="start",
                    help="afterwards: domu running (started if gone), destroyed, or left as it is")
    sub.add_parser("kill-sender")
    wr = sub.add_parser("watch-remus")
    wr.add_argument("--timeout", type=int, default=120)
    c = sub.add_parser("clock")
    c.add_argument("--n", type=int, default=10)
    a = p.parse_args()
    return {"latency": cmd_latency, "remus-start": cmd_remus_start, "kemari-start": cmd_kemari_start,
            "measure": cmd_measure, "failover": cmd_failover, "prober": cmd_prober, "watch": cmd_watch,
            "clock": cmd_clock, "reset": cmd_reset, "reaper": cmd_reaper, "kill-sender": cmd_kill_sender,
            "watch-remus": cmd_watch_remus}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
