#!/usr/bin/env python3
"""Upstream `xl remus` baseline, run in a xenlab dom0 (shared at /mnt/lab).

Each subcommand prints one JSON object on stdout and exits 0 when it did
what it says, 1 otherwise (the JSON then says why):

  remus.py latency [--count N]       ping and port-7 round trips, no Remus
  remus.py start --interval MS [--netbuf] [--target HOST] [--timeout S]
                                     start `xl -vvv remus` on domu and wait
                                     for its first completed checkpoint
  remus.py measure [--window S]      checkpoints/s and latency under Remus
  remus.py failover [--timeout S]    clean failure: SIGKILL the sending xl
                                     (its ssh stream then ends cleanly),
                                     destroy the primary, time until the
                                     backup's guest answers, and check that
                                     its state (boot id, tick) carried over
  remus.py peerwatch [--timeout S]   on a backup host: wait for domu to fail
                                     over after the primary host died
  remus.py eof                       on a backup host: end migrate-receive's
                                     stream by killing the sshd session
                                     that feeds it

Checkpoints are counted from libxc's progress lines in the -vvv log: each
completed checkpoint ends with "Checkpointed save: N/N 100%", N being the
pages it sent.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

GUEST = "192.0.2.100"
STATE = "/run/xenlab/remus.json"
NETBUF_SRC = "/mnt/netbuf"
NETBUF_LIB = "/var/lib/xenlab/netbuf"  # not /run: initramfs-tools mounts it noexec
DONE = re.compile(r"Checkpointed save: (\d+)/(\d+)\s+100%")


def now():
    return time.monotonic()


def sh(cmd, timeout=60):
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).strip()


def query(timeout=3.0):
    """One status line from the guest's port 7, as a dict; None if no answer."""
    try:
        with socket.create_connection((GUEST, 7), timeout=timeout) as s:
            s.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                b = s.recv(512)
                if not b:
                    break
                data += b
    except OSError:
        return None
    line = data.decode(errors="replace").strip()
    if not line.startswith("xenlab"):
        return None
    d = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    for k in ("tick", "hits", "dseq", "rate"):
        if k in d:
            d[k] = int(d[k])
    return d


def domid(name):
    rc, out = sh("xl domid %s" % name)
    return int(out) if rc == 0 and out.isdigit() else None


def domains():
    rc, out = sh("xl list")
    return " ".join("%s:%s" % (l.split()[0], l.split()[4]) for l in out.splitlines()[1:] if len(l.split()) >= 5)


def ping(count, interval="0.2"):
    rc, out = sh("ping -n -q -c %d -i %s -W 2 %s" % (count, interval, GUEST), timeout=count * 3 + 30)
    r = {"sent": count, "loss_pct": 100.0, "min_ms": None, "avg_ms": None, "max_ms": None}
    m = re.search(r"([\d.]+)% packet loss", out)
    if m:
        r["loss_pct"] = float(m.group(1))
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", out)
    if m:
        r["min_ms"], r["avg_ms"], r["max_ms"] = (float(x) for x in m.groups())
    return r


def service_times(stop, out, gap=0.5):
    """Times port-7 round trips until STOP is set; appends ms or None."""
    while not stop.is_set():
        t0 = now()
        ok = query() is not None
        out.append(round((now() - t0) * 1000, 1) if ok else None)
        stop.wait(gap)


def svc_summary(times):
    ok = [t for t in times if t is not None]
    return {"n": len(times), "fail": len(times) - len(ok),
            "avg_ms": round(sum(ok) / len(ok), 1) if ok else None,
            "max_ms": max(ok) if ok else None}


def load():
    with open(STATE) as f:
        return json.load(f)


def checkpoints(log):
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except OSError:
        return 0, 0
    pages = [int(a) for a, b in DONE.findall(text) if a == b]
    return len(pages), sum(pages)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def log_tail(log, n=15):
    try:
        with open(log, errors="replace") as f:
            lines = [l.rstrip() for l in f if "debug:" not in l]
    except OSError:
        return []
    return lines[-n:]


def free_ifbs():
    """Returns every ifb device to the state remus-netbuf-setup calls free.

    A sender that dies skips the script's teardown and leaves a plug qdisc
    on its ifb; deleting that qdisc is not enough, because the default
    qdisc the kernel then attaches also counts as "in use" to the script.
    A recreated device has no qdisc until it is brought up. Only call this
    when no Remus is running.
    """
    for dev in sorted(os.listdir("/sys/class/net")):
        if dev.startswith("ifb") and "noop" not in sh("tc qdisc show dev %s" % dev)[1]:
            sh("ip link del %s && ip link add %s type ifb" % (dev, dev))


def emit(obj, ok=True):
    obj["ok"] = ok
    print(json.dumps(obj, sort_keys=True))
    return 0 if ok else 1


# ---------------------------------------------------------------- commands

def cmd_latency(a):
    q = query()
    stop = threading.Event()
    times = []
    t = threading.Thread(target=service_times, args=(stop, times))
    t.start()
    p = ping(a.count)
    stop.set()
    t.join()
    return emit({"ping": p, "service": svc_summary(times), "guest": q}, q is not None)


def cmd_start(a):
    os.makedirs("/run/xenlab", exist_ok=True)
    d = domid("domu")
    if d is None:
        return emit({"error": "domu is not running", "domains": domains()}, False)
    env = dict(os.environ)
    opts = ["-F", "-d"]
    if a.netbuf:
        lib = os.path.join(NETBUF_SRC, "libxenlight.so.4.17.0")
        if not os.path.exists(lib):
            return emit({"error": "no netbuf libxenlight at %s (make xenlab-netbuf, then make xenlab-up)" % lib}, False)
        # Only this xl process loads the netbuf build: dom0's own library
        # stays Debian's, the one cgo binaries link against.
        os.makedirs(NETBUF_LIB, exist_ok=True)
        shutil.copy(lib, NETBUF_LIB)
        link = os.path.join(NETBUF_LIB, "libxenlight.so.4.17")
        if not os.path.lexists(link):
            os.symlink("libxenlight.so.4.17.0", link)
        # Hotplug scripts source their helpers from their own directory.
        shutil.copy(os.path.join(NETBUF_SRC, "remus-netbuf-setup"), "/etc/xen/scripts/remus-netbuf-setup")
        os.chmod("/etc/xen/scripts/remus-netbuf-setup", 0o755)
        env["LD_LIBRARY_PATH"] = NETBUF_LIB
        free_ifbs()
    else:
        opts.append("-n")
    tag = "i%d-%s-%s" % (a.interval, "netbuf" if a.netbuf else "nonetbuf", a.target)
    log = "/run/xenlab/remus-%s.log" % tag
    cmd = ["xl", "-vvv", "remus"] + opts + ["-i", str(a.interval), "domu", a.target]
    t0 = now()
    with open(log, "w") as lf:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
    st = {"pid": p.pid, "log": log, "primary": d, "interval": a.interval, "netbuf": a.netbuf,
          "target": a.target, "cmd": " ".join(cmd), "started": time.time()}
    with open(STATE, "w") as f:
        json.dump(st, f)
    deadline = t0 + a.timeout
    while now() < deadline:
        n, _ = checkpoints(log)
        if n >= 1:
            st["first_checkpoint_ms"] = int((now() - t0) * 1000)
            with open(STATE, "w") as f:
                json.dump(st, f)
            return emit({"cmd": st["cmd"], "first_checkpoint_ms": st["first_checkpoint_ms"]})
        if p.poll() is not None:
            return emit({"cmd": st["cmd"], "error": "xl remus exited %d before a checkpoint" % p.returncode,
                         "log_tail": log_tail(log), "domains": domains()}, False)
        time.sleep(0.25)
    return emit({"cmd": st["cmd"], "error": "no checkpoint within %d s" % a.timeout,
                 "log_tail": log_tail(log), "domains": domains()}, False)


def cmd_measure(a):
    st = load()
    if not alive(st["pid"]):
        return emit({"error": "xl remus is not running", "log_tail": log_tail(st["log"])}, False)
    q0 = query()
    c0, p0 = checkpoints(st["log"])
    t0 = now()
    stop = threading.Event()
    times = []
    t = threading.Thread(target=service_times, args=(stop, times))
    t.start()
    pg = ping(int(a.window * 5))
    stop.set()
    t.join()
    c1, p1 = checkpoints(st["log"])
    el = now() - t0
    q1 = query()
    n = c1 - c0
    r = {"interval_ms": st["interval"], "netbuf": st["netbuf"], "target": st["target"],
         "window_s": round(el, 2), "checkpoints": n,
         "configured_per_s": round(1000.0 / st["interval"], 2),
         "achieved_per_s": round(n / el, 2) if el > 0 else 0,
         "pages_per_checkpoint": round((p1 - p0) / n, 1) if n else None,
         "ping": pg, "service": svc_summary(times),
         "guest_before": q0, "guest_after": q1, "remus_alive": alive(st["pid"])}
    ok = n >= 1 and r["remus_alive"]
    if not ok:
        r["log_tail"] = log_tail(st["log"])
    # The failover judges the replica against the last state a client saw;
    # on a loaded TCG host the guest may not answer just before the kill.
    if q1 or q0:
        st["last_guest"] = q1 or q0
        with open(STATE, "w") as f:
            json.dump(st, f)
    return emit(r, ok)


def cmd_failover(a):
    st = load()
    if not alive(st["pid"]) or domid("domu--incoming") is None:
        # Without a live replica, destroying the primary would only lose the guest.
        return emit({"error": "no Remus pair to fail over (xl remus alive: %s)" % alive(st["pid"]),
                     "domains": domains(), "log_tail": log_tail(st["log"])}, False)
    q0 = query(timeout=10.0) or st.get("last_guest")
    before = domains()
    t0 = now()
    try:
        os.killpg(st["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    # The primary may be left suspended mid-checkpoint; it is the dead host.
    sh("xl destroy %d" % st["primary"])
    deadline = t0 + a.timeout
    q1 = None
    while now() < deadline:
        d = domid("domu")
        if d is not None and d != st["primary"]:
            q1 = query(timeout=1.0)
            if q1 is not None:
                break
        time.sleep(0.2)
    el = int((now() - t0) * 1000)
    r = {"case": "clean stream end (sender xl SIGKILLed, primary destroyed)",
         "interval_ms": st["interval"], "netbuf": st["netbuf"], "domains_before": before,
         "domains_after": domains(), "guest_before": q0, "guest_after": q1}
    if q1 is None:
        r["error"] = "no failover within %d s" % a.timeout
        return emit(r, False)
    r["failover_ms"] = el
    if st["netbuf"]:
        free_ifbs()
    same = q0 is not None and q1.get("boot") == q0.get("boot")
    # Output is released ahead of the last checkpoint by at most an interval
    # without netbuf, so the tick may step back by one, never to zero.
    r["state_survived"] = bool(same and q1["tick"] >= q0["tick"] - 1 and q1["tick"] > 1)
    return emit(r, r["state_survived"])


def cmd_peerwatch(a):
    t0 = now()
    deadline = t0 + a.timeout
    while now() < deadline:
        if domid("domu") is not None:
            q = query(timeout=1.0)
            if q is not None:
                return emit({"recovered": True, "after_ms": int((now() - t0) * 1000), "guest": q,
                             "domains": domains()})
        time.sleep(0.5)
    rc, ps = sh("ps -eo pid,ppid,pcpu,stat,args | grep -E 'migrate-receive|sshd' | grep -v grep")
    return emit({"recovered": False, "waited_ms": int((now() - t0) * 1000), "domains": domains(),
                 "processes": ps.splitlines()}, True)


def cmd_eof(a):
    rc, out = sh("pgrep -x xl")
    killed = []
    for pid in (int(x) for x in out.split()) if rc == 0 else []:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
            if "migrate-receive" not in cmd:
                continue
            with open("/proc/%d/stat" % pid) as f:
                ppid = int(f.read().split(")")[-1].split()[1])
            with open("/proc/%d/cmdline" % ppid, "rb") as f:
                parent = f.read().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError, IndexError):
            continue
        if "sshd" in parent:
            os.kill(ppid, signal.SIGKILL)
            killed.append({"sshd": ppid, "sshd_cmd": parent, "receiver": pid, "receiver_cmd": cmd.strip()})
    return emit({"killed": killed}, bool(killed))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("latency")
    l.add_argument("--count", type=int, default=20)
    s = sub.add_parser("start")
    s.add_argument("--interval", type=int, required=True)
    s.add_argument("--netbuf", action="store_true")
    s.add_argument("--target", default="localhost")
    s.add_argument("--timeout", type=int, default=300)
    m = sub.add_parser("measure")
    m.add_argument("--window", type=float, default=20)
    f = sub.add_parser("failover")
    f.add_argument("--timeout", type=int, default=120)
    w = sub.add_parser("peerwatch")
    w.add_argument("--timeout", type=int, default=60)
    sub.add_parser("eof")
    a = p.parse_args()
    return {"latency": cmd_latency, "start": cmd_start, "measure": cmd_measure, "failover": cmd_failover,
            "peerwatch": cmd_peerwatch, "eof": cmd_eof}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
