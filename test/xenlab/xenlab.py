#!/usr/bin/env python3
"""Driver for the xenlab: Xen 4.17 hosts booted in QEMU (TCG).

Each host N has, under the run directory (default /var/cache/xenlab/run):
  hostN.qcow2        overlay on the image's dom0.img
  hostN.serial       QEMU's serial socket (server, wait=on)
  hostN.console      the relay's socket; clients type into the serial line
  hostN.console.log  everything the serial line ever printed (this boot)
  hostN.qemu.pid     hostN.relay.pid   pid files; `down` stops only these
  hostN.out/         shared read-write into dom0 at /mnt/out

The relay is started before QEMU and stays connected for the host's life:
an unconnected serial socket stalls Xen's console output (pitfall 3). The
driver types commands in short paced chunks because Xen's serial ring drops
fast input (pitfall 4), and frames output with markers the echo of the typed
line cannot produce.

Usage:
  xenlab.py boot N --image DIR [--share DIR] [--lab DIR] [--netbuf DIR] [--peer M] [--timeout S]
  xenlab.py run N 'CMD' [--timeout S]     prints CMD's output, exits with its code
  xenlab.py wait N REGEX [--timeout S]    waits for REGEX on the console
  xenlab.py log N [--lines K]             console log tail
  xenlab.py down [N ...]                  stops hosts (all when none named)
  xenlab.py status
"""

import argparse
import fcntl
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.environ.get("XENLAB_RUN", os.path.join(os.environ.get("XENLAB_CACHE", "/var/cache/xenlab"), "run"))
PORT_BASE = int(os.environ.get("XENLAB_PORT_BASE", "47560"))
CHUNK = 24
CHUNK_GAP = 0.05
READY = "XENLAB-DOM0-READY"
FATAL = re.compile(r"XENLAB-DOM0-FAILED|Hardware Dom0 crashed|Kernel panic|Panic on CPU|Reboot in five seconds")


class LabError(Exception):
    """A lab operation failed; the message says what and where to look."""


def path(n, suffix):
    return os.path.join(RUN, "host%d.%s" % (n, suffix))


def read_pid(n, what):
    try:
        with open(path(n, what + ".pid")) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    # A pid file can outlive its process and the number be reused; only a
    # process whose command line names this host's files is ours.
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    want = ("xenlab.py relay %d" % n) if what == "relay" else ("host%d.qemu.pid" % n)
    if want not in cmd:
        return None
    return pid


def tail(n, lines=40):
    try:
        with open(path(n, "console.log"), "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode(errors="replace").replace("\r", "")
    except OSError:
        return "(no console log %s)" % path(n, "console.log")
    return "\n".join(data.splitlines()[-lines:])


def log_size(n):
    try:
        return os.path.getsize(path(n, "console.log"))
    except OSError:
        return 0


def read_log_from(n, off):
    try:
        with open(path(n, "console.log"), "rb") as f:
            f.seek(off)
            return f.read().decode(errors="replace").replace("\r", "")
    except OSError:
        return ""


# ---------------------------------------------------------------- relay

def relay(n):
    """Connects to QEMU's serial socket, logs it, serves hostN.console."""
    serial_path = path(n, "serial")
    deadline = time.time() + 60
    ser = None
    while ser is None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(serial_path)
            ser = s
        except OSError:
            s.close()
            if time.time() > deadline:
                sys.exit("relay: no serial socket at %s" % serial_path)
            time.sleep(0.05)
    con_path = path(n, "console")
    try:
        os.unlink(con_path)
    except FileNotFoundError:
        pass
    lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsn.bind(con_path)
    lsn.listen(8)
    logf = open(path(n, "console.log"), "ab", buffering=0)
    sel = selectors.DefaultSelector()
    sel.register(ser, selectors.EVENT_READ, "serial")
    sel.register(lsn, selectors.EVENT_READ, "listen")
    clients = []
    while True:
        for key, _ in sel.select():
            if key.data == "serial":
                try:
                    data = ser.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    logf.write(b"\n[xenlab relay: serial closed]\n")
                    try:
                        os.unlink(con_path)
                    except OSError:
                        pass
                    return
                logf.write(data)
                for c in list(clients):
                    try:
                        c.sendall(data)
                    except OSError:
                        sel.unregister(c)
                        clients.remove(c)
                        c.close()
            elif key.data == "listen":
                c, _ = lsn.accept()
                c.settimeout(2)
                clients.append(c)
                sel.register(c, selectors.EVENT_READ, "client")
            else:
                c = key.fileobj
                try:
                    data = c.recv(4096)
                except OSError:
                    data = b""
                if data:
                    ser.sendall(data)
                else:
                    sel.unregister(c)
                    clients.remove(c)
                    c.close()


# ---------------------------------------------------------------- boot / down

def wait_for(n, regex, timeout, start=0, what=None):
    """Waits until REGEX appears in the console log after offset START.

    Fails early when the log shows a crash or QEMU exits, so a broken boot
    costs seconds rather than the whole timeout.
    """
    rx = re.compile(regex)
    deadline = time.time() + timeout
    while True:
        text = read_log_from(n, start)
        m = rx.search(text)
        if m:
            return m
        bad = FATAL.search(text)
        if bad:
            raise LabError("host%d: console shows %r while waiting for %s\n--- console tail ---\n%s"
                           % (n, bad.group(0), what or regex, tail(n)))
        if read_pid(n, "qemu") is None and read_pid(n, "relay") is None:
            raise LabError("host%d: QEMU is not running while waiting for %s\n--- console tail ---\n%s"
                           % (n, what or regex, tail(n)))
        if time.time() > deadline:
            raise LabError("host%d: no %s within %d s\n--- console tail ---\n%s"
                           % (n, what or regex, timeout, tail(n)))
        time.sleep(0.2)


def boot(n, image, share=None, lab=None, peer=None, timeout=300, mem="3G", netbuf=None):
    os.makedirs(RUN, exist_ok=True)
    image = os.path.abspath(image)
    qpid = read_pid(n, "qemu")
    if qpid is not None:
        try:
            with open(path(n, "image")) as f:
                same = f.read().strip() == image
        except OSError:
            same = False
        if same:
            print("host%d: already up (qemu pid %d)" % (n, qpid))
            return
        print("host%d: running an older image; restarting it" % n)
        down([n])
    down([n], quiet=True)
    base = os.path.join(image, "dom0.img")
    ov = path(n, "qcow2")
    # A fresh overlay per boot: an overlay over a rebuilt base is garbage
    # (pitfall 7), and a clean disk makes every boot the same.
    if os.path.exists(ov):
        os.unlink(ov)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, ov], check=True)
    out = path(n, "out")
    os.makedirs(out, exist_ok=True)
    logp = path(n, "console.log")
    if os.path.exists(logp):
        os.replace(logp, logp + ".prev")
    with open(path(n, "image"), "w") as f:
        f.write(image + "\n")

    rl = subprocess.Popen([sys.executable, os.path.abspath(__file__), "relay", str(n)],
                          stdin=subprocess.DEVNULL, stdout=open(path(n, "relay.err"), "wb"),
                          stderr=subprocess.STDOUT, start_new_session=True)
    with open(path(n, "relay.pid"), "w") as f:
        f.write("%d\n" % rl.pid)

    b = os.path.join(image, "boot")
    # dom0 holds xl-kemari's primary and standby of a guest at once (one
    # host) at about 1.5x the guest's memory each at their peak.
    dom0_mem = os.environ.get("XENLAB_DOM0_MEM", "1536M")
    xen_args = ("console=com1 com1=115200,8n1 dom0_mem=%s,max:%s dom0_max_vcpus=2 " % (dom0_mem, dom0_mem) +
                "loglvl=all guest_loglvl=all noreboot")
    linux = ("%s/vmlinuz root=/dev/vda rw console=hvc0 loglevel=4 init=/usr/local/sbin/xenlab-init "
             "xenlab.id=%d,%s/initrd.img" % (b, n, b))
    cmd = ["qemu-system-x86_64", "-name", "xenlab-host%d" % n,
           "-accel", "tcg,thread=multi", "-cpu", "qemu64", "-m", mem, "-smp", "2",
           "-display", "none", "-vga", "none", "-nodefaults", "-no-reboot",
           "-chardev", "socket,id=s0,path=%s,server=on,wait=on" % path(n, "serial"),
           "-serial", "chardev:s0",
           "-monitor", "unix:%s,server,nowait" % path(n, "monitor"),
           "-drive", "file=%s,if=virtio,format=qcow2,cache=unsafe" % ov,
           "-kernel", os.path.join(b, "xen"), "-append", xen_args, "-initrd", linux,
           "-pidfile", path(n, "qemu.pid"), "-daemonize"]
    if peer:
        cmd += ["-netdev", "socket,id=n0,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d" % (PORT_BASE + peer, PORT_BASE + n),
                "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:%02x" % n]
    else:
        cmd += ["-nic", "none"]
    shares = [("host", share, True), ("lab", lab or os.path.join(HERE, "lab"), True), ("out", out, False),
              ("netbuf", netbuf, True)]
    for tag, d, ro in shares:
        if d:
            cmd += ["-virtfs", "local,path=%s,mount_tag=%s,security_model=none%s"
                    % (os.path.abspath(d), tag, ",readonly=on" if ro else "")]
    t0 = time.time()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        down([n], quiet=True)
        raise LabError("host%d: qemu failed: %s" % (n, r.stderr.strip()))
    m = wait_for(n, READY + r"[^\n]*", timeout, what=READY)
    print("host%d: %s (%.1f s)" % (n, m.group(0).strip(), time.time() - t0))
    # Settle the shell: the first line typed may be echoed before .bashrc
    # turns echo off (pitfall 11), so spend it on a no-op.
    run(n, "true", timeout=120)


def kill_pid(pid, timeout=15):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # Reap if it happens to be our child.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def down(hosts=None, quiet=False):
    if not hosts:
        hosts = sorted({int(m.group(1)) for f in (os.listdir(RUN) if os.path.isdir(RUN) else [])
                        for m in [re.match(r"host(\d+)\.", f)] if m})
    for n in hosts:
        for what in ("qemu", "relay"):
            pid = read_pid(n, what)
            if pid is not None:
                kill_pid(pid)
                if not quiet:
                    print("host%d: stopped %s (pid %d)" % (n, what, pid))
            try:
                os.unlink(path(n, what + ".pid"))
            except FileNotFoundError:
                pass
        for s in ("serial", "console", "monitor", "qcow2", "image"):
            try:
                os.unlink(path(n, s))
            except FileNotFoundError:
                pass


def kill_qemu(n):
    """SIGKILL hostN's QEMU: the host dies with no clean shutdown at all."""
    pid = read_pid(n, "qemu")
    if pid is None:
        raise LabError("host%d: QEMU not running" % n)
    os.kill(pid, signal.SIGKILL)
    return pid


# ---------------------------------------------------------------- run

_seq = [0]


def run(n, command, timeout=120, check=False):
    """Runs COMMAND in hostN's dom0 shell; returns (exit code, output)."""
    con = path(n, "console")
    if not os.path.exists(con):
        raise LabError("host%d is not up (no %s); run `make xenlab-up`" % (n, con))
    lock = open(path(n, "lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        _seq[0] += 1
        tag = "%d%d%04d" % (os.getpid() % 10000, _seq[0], int(time.time() * 1000) % 10000)
        # The quotes split the markers in the typed text, so an echoed
        # command line can never match them.
        line = 'echo "@XB""-%s"; { %s\n} 2>&1; echo "@XE""-%s:$?"\n' % (tag, command, tag)
        rx = re.compile(r"@XB-%s\n(.*?)@XE-%s:(\d+)" % (tag, tag), re.S)
        start = log_size(n)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(con)
        data = line.encode()
        for i in range(0, len(data), CHUNK):
            s.sendall(data[i:i + CHUNK])
            time.sleep(CHUNK_GAP)
        deadline = time.time() + timeout
        while True:
            text = read_log_from(n, start)
            m = rx.search(text)
            if m:
                break
            if read_pid(n, "qemu") is None:
                s.close()
                raise LabError("host%d: QEMU died while running %r\n--- console tail ---\n%s" % (n, command, tail(n)))
            if time.time() > deadline:
                s.sendall(b"\x03")
                s.close()
                raise LabError("host%d: %r did not finish within %d s\n--- console tail ---\n%s"
                               % (n, command, timeout, tail(n)))
            time.sleep(0.1)
        s.close()
        out, rc = m.group(1), int(m.group(2))
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    if check and rc != 0:
        raise LabError("host%d: %r exited %d:\n%s" % (n, command, rc, out))
    return rc, out


def main(argv):
    p = argparse.ArgumentParser(description="xenlab driver")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("boot")
    b.add_argument("n", type=int)
    b.add_argument("--image", required=True)
    b.add_argument("--share")
    b.add_argument("--lab")
    b.add_argument("--peer", type=int)
    b.add_argument("--netbuf", help="directory from build-netbuf.sh, shared at /mnt/netbuf")
    b.add_argument("--timeout", type=int, default=300)
    r = sub.add_parser("run")
    r.add_argument("n", type=int)
    r.add_argument("command")
    r.add_argument("--timeout", type=int, default=120)
    w = sub.add_parser("wait")
    w.add_argument("n", type=int)
    w.add_argument("regex")
    w.add_argument("--timeout", type=int, default=120)
    lg = sub.add_parser("log")
    lg.add_argument("n", type=int)
    lg.add_argument("--lines", type=int, default=40)
    d = sub.add_parser("down")
    d.add_argument("n", type=int, nargs="*")
    sub.add_parser("status")
    rl = sub.add_parser("relay")
    rl.add_argument("n", type=int)
    a = p.parse_args(argv)
    try:
        if a.cmd == "relay":
            relay(a.n)
        elif a.cmd == "boot":
            boot(a.n, a.image, a.share, a.lab, a.peer, a.timeout, netbuf=a.netbuf)
        elif a.cmd == "run":
            rc, out = run(a.n, a.command, a.timeout)
            sys.stdout.write(out)
            return rc
        elif a.cmd == "wait":
            m = wait_for(a.n, a.regex, a.timeout)
            print(m.group(0))
        elif a.cmd == "log":
            print(tail(a.n, a.lines))
        elif a.cmd == "down":
            down(a.n)
        elif a.cmd == "status":
            for f in sorted(os.listdir(RUN)) if os.path.isdir(RUN) else []:
                m = re.match(r"host(\d+)\.qemu\.pid$", f)
                if m:
                    n = int(m.group(1))
                    print("host%d: qemu %s, relay %s" % (n, read_pid(n, "qemu"), read_pid(n, "relay")))
    except LabError as e:
        print("xenlab: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
