#!/usr/bin/env python3
"""`make xenlab-soak`: does a short xl-kemari timeout hold under load?

Boots hosts 1 and 2 (as make xenlab-failover), starts the lab's PV guest on
host1 (192 MB, dirtying XENLAB_DIRTY_MB MB/s, default 8) and protects it
with

  xl-kemari start -F --interval=200ms --timeout=T --netbuf=plug \\
      --set=disk=none --set=unsafe=1 --remote-command=/mnt/lab/kemari-standby domu xenlab2

(T: XENLAB_KEMARI_TIMEOUT, default 2s). Once protected, for XENLAB_SOAK_S
seconds (600) the lab's load runs against it: the guest's own dirtying,
`ping -i 0.2` and port-7 requests every 0.5 s from host1's dom0 (lab/bench.py
measure), and the prober in host2's dom0 (a request every 0.5 s). Nothing
fails on purpose, so every one of these is a false failover or a false
loss, and the soak passes only with none:

* the standby activating its replica (an "activate" event, or its state
  leaving ready/syncing);
* the primary losing its standby (its state leaving "protected": standby
  lost, unprotected, stalled, arbitrating, connecting again);
* the guest changing boot, or the primary's process ending.

Writes results/soak.json and results/soak.md. About 13 minutes (two
boots, the guest, the sync, the soak): CI does not run it.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import failover as F  # noqa: E402
import xenlab  # noqa: E402

RESULTS = F.RESULTS


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=float(os.environ.get("XENLAB_SOAK_S", "600")))
    p.add_argument("--interval", type=int, default=int(os.environ.get("XENLAB_FAILOVER_INTERVAL", "200")))
    p.add_argument("--dirty", type=int, default=int(os.environ.get("XENLAB_DIRTY_MB", "8")))
    p.add_argument("--timeout", type=int, default=int(os.environ.get("XENLAB_TIMEOUT", "300")))
    p.add_argument("--kemari-timeout", default=os.environ.get("XENLAB_KEMARI_TIMEOUT", "2s"))
    a = p.parse_args()
    info = {"meta": {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host_loadavg_start": F.loadavg()},
            "seconds": a.seconds, "interval_ms": a.interval, "kemari_timeout": a.kemari_timeout,
            "dirty_mb_per_s": a.dirty}
    t_all = time.time()
    try:
        soak(a, info)
    except (F.Failed, xenlab.LabError) as e:
        info["error"] = str(e)[-4000:]
        print("xenlab-soak: %s" % e, file=sys.stderr)
    finally:
        info["wall_s"] = round(time.time() - t_all, 1)
        info["meta"]["host_loadavg_end"] = F.loadavg()
        xenlab.down([1, 2])
    verdict(info)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "soak.json"), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    md = markdown(info)
    with open(os.path.join(RESULTS, "soak.md"), "w") as f:
        f.write(md)
    print(md)
    print("xenlab-soak: %s in %.0f s" % ("passed" if info.get("passed") else "FAILED", time.time() - t_all))
    return 0 if info.get("passed") else 1


def soak(a, info):
    import subprocess
    image = subprocess.run([os.path.join(HERE, "build-image.sh")], check=True, capture_output=True,
                           text=True).stdout.strip()
    share = os.environ.get("XENLAB_SHARE", os.path.join(HERE, "..", "..", "bin"))
    if not os.path.exists(os.path.join(share, "xl-kemari")):
        raise F.Failed("no %s/xl-kemari: make xenlab-kemari-bin" % share)
    xenlab.down([1, 2])
    t0 = time.time()
    F.boot([1, 2], image, share, a.timeout * 2)
    info["boot_both_s"] = round(time.time() - t0, 1)
    rc, out = xenlab.run(1, "ssh xenlab2 /mnt/host/xl-kemari version", timeout=120)
    if rc != 0:
        raise F.Failed("host1 cannot run xl-kemari on host2 over ssh: %s" % out)
    info["meta"]["xl_kemari_version"] = out.strip().splitlines()[:1]
    xenlab.run(2, "/mnt/lab/domu.sh prepare", timeout=60)
    st = F.lab(1, "reset --guest start --dirty %d" % a.dirty, timeout=500)
    if not st.get("ok"):
        raise F.Failed("the guest did not come up on host1: %s" % st)
    info["reaper_start"] = F.lab(2, "reaper start", timeout=60)
    st = F.lab(1, "kemari-start --target xenlab2 --interval %d --peer-timeout %s --timeout %d"
               % (a.interval, a.kemari_timeout, a.timeout * 2), timeout=a.timeout * 2 + 120)
    info["reaper_stop"] = F.lab(2, "reaper stop", timeout=60)
    info["start"] = st
    if not st.get("ok"):
        raise F.Failed("xl-kemari start host1 -> host2 did not reach protected: %s" % json.dumps(st)[-3000:])
    info["prober_start"] = F.lab(2, "prober start", timeout=60)
    t_soak = time.time_ns()
    info["t_soak_start_machine_ns"] = t_soak
    print("xenlab-soak: protected; %d s of load ..." % a.seconds, flush=True)
    info["measure"] = F.lab(1, "measure --window %g" % a.seconds, timeout=int(a.seconds * 2) + 300)
    info["t_soak_end_machine_ns"] = time.time_ns()
    info["prober_stop"] = F.lab(2, "prober stop", timeout=60)
    off1, _ = F.clock_offset(1)
    off2, _ = F.clock_offset(2)
    info["clock_host1_minus_machine_ns"], info["clock_host2_minus_machine_ns"] = off1, off2
    # Both sides' events over the soak, and the guest's answers to host2.
    rc, out = xenlab.run(1, "mkdir -p /mnt/out/soak && cp /run/xenlab/kemari/* /mnt/out/soak/; "
                            "python3 -c \"import json,sys; ev=[json.loads(l) for l in open(sys.argv[1])]; "
                            "print(json.dumps([e for e in ev if e.get('kind') in ('state','error','warning')]))\" "
                            "/run/xenlab/kemari/kemari-i%d-f1-epoch-xenlab2.jsonl" % a.interval, timeout=120)
    info["primary_states"] = last_json(out)
    rc, out = xenlab.run(2, "mkdir -p /mnt/out/soak && cp /run/xenlab/kemari/standby.* /run/xenlab/prober.jsonl "
                            "/mnt/out/soak/ 2>/dev/null; python3 -c \"import json,sys; "
                            "ev=[json.loads(l) for l in open(sys.argv[1])]; print(json.dumps([e for e in ev "
                            "if e.get('kind') in ('state','activate','error','warning')]))\" "
                            "/run/xenlab/kemari/standby.jsonl", timeout=120)
    info["standby_states"] = last_json(out)
    prober = os.path.join(xenlab.path(2, "out"), "soak", "prober.jsonl")
    answers = []
    try:
        for line in open(prober):
            try:
                x = json.loads(line)
            except ValueError:
                continue
            answers.append({"t": x["t"], "ok": bool(x.get("q")), "boot": (x.get("q") or {}).get("boot")})
    except OSError:
        pass
    info["prober"] = {"requests": len(answers), "answered": sum(1 for x in answers if x["ok"]),
                      "boots": sorted({x["boot"] for x in answers if x["boot"]})}
    rc, out = xenlab.run(1, "xl list; python3 /mnt/lab/bench.py reset --guest keep", timeout=200)
    info["host1_after"] = out.strip().splitlines()[-6:]


def last_json(out):
    for line in reversed(out.strip().splitlines()):
        if line.startswith("["):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def verdict(info):
    """False failovers and losses inside the soak window (host clocks
    converted to this machine's)."""
    t0, t1 = info.get("t_soak_start_machine_ns"), info.get("t_soak_end_machine_ns")
    if t0 is None or t1 is None or info.get("primary_states") is None or info.get("standby_states") is None:
        info["passed"] = False
        return
    o1, o2 = info["clock_host1_minus_machine_ns"], info["clock_host2_minus_machine_ns"]
    ps = [e for e in info["primary_states"] if t0 <= e.get("t", 0) - o1 <= t1]
    ss = [e for e in info["standby_states"] if t0 <= e.get("t", 0) - o2 <= t1]
    info["false_failovers"] = [e for e in ss if e.get("kind") == "activate"
                               or (e.get("kind") == "state" and e.get("state") not in ("ready", "syncing"))]
    info["protection_losses"] = [e for e in ps if e.get("kind") == "state" and e.get("state") != "protected"]
    m = info.get("measure") or {}
    boots = set(m.get("boots") or []) | set((info.get("prober") or {}).get("boots") or [])
    info["boots"] = sorted(boots)
    info["passed"] = (not info["false_failovers"] and not info["protection_losses"] and len(boots) == 1
                      and bool(m.get("alive")))


def markdown(info):
    m = info.get("measure") or {}
    pr = info.get("prober") or {}
    out = ["# Soak: xl-kemari at --timeout=%s under load, nothing failing (xenlab, two hosts)" % info.get(
        "kemari_timeout"), "",
           "Generated by `make xenlab-soak` (test/xenlab/soak.py); raw data in `soak.json`.", "",
           "* when: %s; machine load average %s at the start, %s at the end (2 cores shared, QEMU TCG)" % (
               info["meta"].get("date"), "/".join(info["meta"].get("host_loadavg_start", [])),
               "/".join(info["meta"].get("host_loadavg_end", []))),
           "* xl-kemari `%s`: `xl-kemari start -F --interval=%dms --timeout=%s --netbuf=plug --set=disk=none "
           "--set=unsafe=1 --remote-command=/mnt/lab/kemari-standby domu xenlab2` (ssh), protected after %s" % (
               " ".join(info["meta"].get("xl_kemari_version", [])), info.get("interval_ms", 0),
               info.get("kemari_timeout"), F.fmt(((info.get("start") or {}).get("protected_ms") or 0) / 1000.0)),
           "* load for %s s: guest dirtying %s MB/s; from host1's dom0 ping every 0.2 s (%s of %s answered, "
           "rtt avg %s ms) and port-7 requests every 0.5 s (%s, %s failed); from host2's dom0 a request every "
           "0.5 s (%s of %s answered)" % (
               info.get("seconds"), info.get("dirty_mb_per_s"), (m.get("ping") or {}).get("received"),
               (m.get("ping") or {}).get("sent"), ((m.get("ping") or {}).get("rtt_ms") or {}).get("avg"),
               (m.get("service") or {}).get("n"), (m.get("service") or {}).get("fail"), pr.get("answered"),
               pr.get("requests")),
           "* checkpoints: %s/s (configured %s), pause avg %s ms, p90 %s ms, max %s ms" % (
               m.get("achieved_per_s"), m.get("configured_per_s"), (m.get("pause_ms") or {}).get("avg"),
               (m.get("pause_ms") or {}).get("p90"), (m.get("pause_ms") or {}).get("max")), "",
           "| | count |", "|---|---|",
           "| false failovers (standby activated or left ready) | %s |" % len(info.get("false_failovers") or []),
           "| primary lost its standby (left protected) | %s |" % len(info.get("protection_losses") or []),
           "| guest boots seen by the clients | %s |" % len(info.get("boots") or []),
           "", "Verdict: **%s**." % ("passed" if info.get("passed") else "FAILED")]
    for e in (info.get("false_failovers") or []) + (info.get("protection_losses") or []):
        out.append("* %s %s %s" % (e.get("kind"), e.get("state") or "", e.get("msg") or ""))
    if info.get("error"):
        out += ["", "**Error:** `%s`" % info["error"][:1500].replace("`", "'")]
    out += ["", "Wall time: %s." % F.fmt(info.get("wall_s")), ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
