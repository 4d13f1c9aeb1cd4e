#!/usr/bin/env python3
"""Records what a xenlab dom0 offers to a Remus/Kemari-style tool, as JSON.

Checks the kernel pieces xl-kemari relies on (sch_plug for output
buffering, ifb to buffer a guest's egress as ingress, nbd for disk
replication, nfnetlink_queue for the NFQUEUE path), exercises a plug qdisc
end to end with tc, and runs the repo's bin/xl-kemari (shared at
/mnt/host) if it is there.
"""
import json
import os
import subprocess
import sys


def sh(cmd, timeout=60):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
        return r.returncode, (r.stdout + r.stderr).strip()
    except subprocess.TimeoutExpired:
        return 124, "timed out after %d s" % timeout


def module(name, probe):
    rc, out = sh("modprobe %s" % name)
    loaded = os.path.isdir("/sys/module/%s" % name)
    return {"modprobe_ok": rc == 0, "loaded": loaded, "probe_ok": probe() if loaded else False,
            "error": out if rc else ""}


def has_ifb():
    return os.path.isdir("/sys/class/net/ifb0")


def plug_cycle():
    # A scratch ifb of its own, deleted afterwards: a used ifb keeps a
    # qdisc that makes remus-netbuf-setup think it is taken.
    dev = "xlabplug0"
    sh("ip link del %s" % dev)
    steps = ["ip link add %s type ifb" % dev, "ip link set %s up" % dev,
             "tc qdisc add dev %s root plug limit 10000" % dev,
             "tc qdisc change dev %s root plug block" % dev,
             "tc qdisc change dev %s root plug release" % dev,
             "tc qdisc change dev %s root plug release_indefinite" % dev,
             "tc qdisc del dev %s root" % dev]
    ok = all(sh(s)[0] == 0 for s in steps)
    sh("ip link del %s" % dev)
    return ok


def nfqueue():
    return os.path.exists("/proc/net/netfilter/nfnetlink_queue")


def nbd():
    return os.path.exists("/dev/nbd0")


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "/mnt/host"
    f = {}
    f["xen_version"] = sh("xl info | sed -n 's/^xen_version *: *//p'")[1]
    try:
        f["hypervisor_package"] = open("/var/lib/xenlab/hypervisor").read().strip()
    except OSError:
        f["hypervisor_package"] = ""
    f["xen_utils_package"] = sh("dpkg-query -W -f='${Version}' xen-utils-4.17")[1]
    f["dom0_kernel"] = os.uname().release
    f["modules"] = {
        "sch_plug": module("sch_plug", plug_cycle),
        "ifb": module("ifb", has_ifb),
        "nbd": module("nbd", nbd),
        "nfnetlink_queue": module("nfnetlink_queue", nfqueue),
    }
    f["tc_plug_cycle"] = "add, block, release, release_indefinite, del on an ifb device"
    lib = "/usr/lib/x86_64-linux-gnu/libxenlight.so.4.17"
    rc, _ = sh("grep -q 'No support for network buffering' %s" % lib)
    f["debian_libxenlight_netbuf"] = rc != 0
    f["remus_netbuf_setup_shipped"] = os.path.exists("/etc/xen/scripts/remus-netbuf-setup")
    f["netbuf_lib_shared"] = os.path.exists("/mnt/netbuf/libxenlight.so.4.17.0")
    tool = os.path.join(host, "xl-kemari")
    k = {"path": tool, "present": os.path.exists(tool)}
    if k["present"]:
        for sub in ("version", "status"):
            rc, out = sh("%s %s" % (tool, sub))
            k[sub] = {"exit": rc, "output": out}
        k["ldd"] = sh("ldd %s" % tool)[1]
    else:
        k["note"] = "bin/xl-kemari not built when the lab ran; build it (go build -tags xen -o bin/xl-kemari ./xlkemari) and rerun make xenlab-test"
    f["xl_kemari"] = k
    json.dump(f, sys.stdout, indent=2, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
