package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/xl-kemari/xl-kemari/libxl/sim/svc"
)

func init() {
	register(&command{
		Name:    "demo",
		Summary: "replicate a simulated service domain, kill its primary, check the failover",
		Usage:   "demo [--json] [--run DURATION] [--kill-after DURATION]",
		Run:     runDemo,
	})
}

// demoReport is the demo's verdict; --json prints it as one object.
type demoReport struct {
	FailoverMs     float64  `json:"failover_ms"`
	DetectMs       float64  `json:"activation_after_kill_ms"`
	Acked          int      `json:"acked"`
	Lost           int      `json:"lost"`
	Violations     int      `json:"violations"`
	ReplicaMatch   bool     `json:"replica_match"`
	Epochs         int      `json:"epochs"`
	AvgPauseUs     float64  `json:"avg_pause_us"`
	ActivatedEpoch uint64   `json:"activated_epoch"`
	MaxCounter     uint64   `json:"max_counter"`
	Errors         []string `json:"errors,omitempty"`
}

func freePort(network string) (string, error) {
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.LocalAddr().String(), nil
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer l.Close()
		return l.Addr().String(), nil
	}
}

func readEvents(path string) []eventLine {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []eventLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l eventLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

func runDemo(e *env, args []string) int {
	fs := pflag.NewFlagSet("demo", pflag.ContinueOnError)
	fs.SetOutput(e.Stderr)
	asJSON := fs.Bool("json", false, "print the final report as one JSON object")
	runFor := fs.Duration("run", 6*time.Second, "how long the client runs in all")
	killAfter := fs.Duration("kill-after", 3*time.Second, "when to SIGKILL the primary")
	interval := fs.Duration("interval", 25*time.Millisecond, "checkpoint interval")
	timeout := fs.Duration("timeout", 0, "failure-detection timeout (default: derived by the primary from the pauses, heartbeat jitter and round trips it measures, 1s until measured, and announced to the standby)")
	mode := fs.String("mode", "epoch", "checkpoint trigger: epoch or event")
	keep := fs.Bool("keep", false, "keep the working directory (logs, event files)")
	useArbiter := fs.Bool("arbiter", false, "guard the failover with a file: arbiter in the demo's directory (then a primary that stalls past the timeout is fenced instead of answering beside the replica)")
	if code, ok := parseArgs(e, fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		e.errorf("demo: unexpected argument %q; see 'xl kemari help demo'", fs.Arg(0))
		return exitUsage
	}
	say := func(format string, a ...any) {
		if !*asJSON {
			fmt.Fprintf(e.Stdout, format+"\n", a...)
		}
	}
	self, err := os.Executable()
	if err != nil {
		e.errorf("%v", err)
		return exitFailure
	}
	dir, err := os.MkdirTemp("", "xl-kemari-demo-")
	if err != nil {
		e.errorf("%v", err)
		return exitFailure
	}
	defer func() {
		if !*keep {
			os.RemoveAll(dir)
		}
	}()
	// Replication over a unix socket in the demo's private directory:
	// the local transport, root's or this user's only (see xl-kemari(1),
	// SECURITY); no loopback port any local user could reach.
	repl := filepath.Join(dir, "replication.stream")
	svcAddr, err := freePort("udp")
	if err != nil {
		e.errorf("%v", err)
		return exitFailure
	}
	common := []string{"--hypervisor=sim", "--interval=" + interval.String(), "--mode=" + *mode, "--log-level=warn"}
	if *timeout != 0 {
		common = append(common, "--timeout="+timeout.String())
	}
	if *useArbiter {
		common = append(common, "--arbiter=file:"+filepath.Join(dir, "arbiter"))
	}
	start := func(name string, args ...string) (*exec.Cmd, error) {
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(self, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		// Control sockets in the demo's own directory: nothing left in
		// /run/xen/kemari after a SIGKILL.
		cmd.Env = append(os.Environ(), "KEMARI_RUN_DIR="+dir)
		return cmd, cmd.Start()
	}
	sEv, pEv := filepath.Join(dir, "standby.jsonl"), filepath.Join(dir, "primary.jsonl")
	standby, err := start("standby", append([]string{"receive", "--listen=" + repl, "--events=" + sEv}, common...)...)
	if err != nil {
		e.errorf("start standby: %v", err)
		return exitFailure
	}
	standbyExited := make(chan error, 1)
	go func() { standbyExited <- standby.Wait() }()
	defer func() {
		standby.Process.Signal(syscall.SIGTERM)
		<-standbyExited
		standbyExited <- nil // for a later reader
	}()
	say("standby   pid %d, replication on %s", standby.Process.Pid, repl)
	primary, err := start("primary", append([]string{"start", "--events=" + pEv,
		"--sim=workload=service", "--sim=memory_mib=64", "--sim=disks=4096", "--sim=listen=" + svcAddr,
		"guest", repl}, common...)...)
	if err != nil {
		e.errorf("start primary: %v", err)
		return exitFailure
	}
	primaryExited := make(chan error, 1)
	go func() { primaryExited <- primary.Wait() }()
	defer func() { primary.Process.Kill(); <-primaryExited }()
	say("primary   pid %d, service domain on udp %s", primary.Process.Pid, svcAddr)

	// Wait for protection (the initial sync), bounded.
	deadline := time.Now().Add(60 * time.Second)
	for !protected(pEv) {
		select {
		case err := <-standbyExited:
			e.errorf("the standby exited before the primary was protected (%v); logs in %s", err, dir)
			standbyExited <- err
			*keep = true
			return exitFailure
		case err := <-primaryExited:
			e.errorf("the primary exited before it was protected (%v); logs in %s", err, dir)
			primaryExited <- err
			*keep = true
			return exitFailure
		default:
		}
		if time.Now().After(deadline) {
			e.errorf("the primary was not protected after 60s; logs in %s", dir)
			*keep = true
			return exitFailure
		}
		time.Sleep(20 * time.Millisecond)
	}
	say("protected: initial sync done")

	cl, err := svc.NewClient(svcAddr, 1)
	if err != nil {
		e.errorf("%v", err)
		return exitFailure
	}
	defer cl.Close()
	cl.SetTryTimeout(50 * time.Millisecond)
	rec := svc.NewRecorder(nil)
	cl.SetRecorder(rec)
	ctx, cancel := context.WithTimeout(context.Background(), *runFor+30*time.Second)
	defer cancel()
	t0 := time.Now()
	var killed time.Time
	var firstAfter time.Time
	lastTick := t0
	for time.Since(t0) < *runFor {
		if killed.IsZero() && time.Since(t0) >= *killAfter {
			primary.Process.Signal(syscall.SIGKILL)
			killed = time.Now()
			say("SIGKILL primary at %.1fs", time.Since(t0).Seconds())
		}
		_, err := cl.Do(ctx, svc.Request{Op: svc.OpIncr})
		if err != nil {
			e.errorf("client: %v", err)
			break
		}
		if !killed.IsZero() && firstAfter.IsZero() {
			firstAfter = time.Now()
			say("failover: the service answered again after %v", firstAfter.Sub(killed).Round(time.Millisecond))
		}
		if time.Since(lastTick) >= time.Second && killed.IsZero() {
			lastTick = time.Now()
			n, pause, pages := checkpointStats(pEv)
			say("  %4.1fs  epochs %d  avg pause %v  avg dirty %d pages  acked requests %d",
				time.Since(t0).Seconds(), n, pause, pages, len(rec.Records()))
		}
	}
	rep := demoReport{}
	sum, cerr := svc.Check(rec.Records())
	rep.Acked, rep.MaxCounter = sum.Acked, sum.MaxCounter
	if cerr != nil {
		rep.Errors = append(rep.Errors, cerr.Error())
		rep.Lost = countViolations(cerr)
	}
	if !firstAfter.IsZero() {
		rep.FailoverMs = float64(firstAfter.Sub(killed).Microseconds()) / 1000
	}
	rep.Epochs, _, _ = checkpointStats(pEv)
	_, avg, _ := checkpointStats(pEv)
	rep.AvgPauseUs = float64(avg.Microseconds())
	pev, sev := readEvents(pEv), readEvents(sEv)
	rep.Violations = outputCommitViolations(pev, sev)
	digests := map[uint64]string{}
	for _, l := range pev {
		if l.Kind == "checkpoint" {
			digests[l.Epoch] = l.Digest
		}
	}
	for _, l := range sev {
		if l.Kind == "activate" {
			rep.ActivatedEpoch = l.Epoch
			rep.DetectMs = float64(time.Unix(0, l.T).Sub(killed).Microseconds()) / 1000
			rep.ReplicaMatch = l.Msg == "verified" && l.Digest != "" && digests[l.Epoch] == l.Digest
		}
	}
	if *asJSON {
		b, _ := json.Marshal(rep)
		fmt.Fprintln(e.Stdout, string(b))
	} else {
		say("\nresult")
		say("  failover time (kill → service answers)  %.0f ms (standby activated %.0f ms after the kill)", rep.FailoverMs, rep.DetectMs)
		say("  requests acknowledged                   %d (counter reached %d)", rep.Acked, rep.MaxCounter)
		say("  acknowledged requests lost              %d", rep.Lost)
		say("  output-commit violations                %d", rep.Violations)
		say("  replica matched primary at epoch %-6d %v", rep.ActivatedEpoch, rep.ReplicaMatch)
		for _, er := range rep.Errors {
			say("  error: %s", er)
		}
	}
	if rep.Lost > 0 || rep.Violations > 0 || !rep.ReplicaMatch || firstAfter.IsZero() {
		return exitLost
	}
	return exitOK
}

func countViolations(err error) int {
	type multi interface{ Unwrap() []error }
	if m, ok := err.(multi); ok {
		return len(m.Unwrap())
	}
	return 1
}

// protected reports whether the first checkpoint was acknowledged (a
// release): only from then on can the standby take over.
func protected(path string) bool {
	for _, l := range readEvents(path) {
		if l.Kind == "release" {
			return true
		}
	}
	return false
}

func checkpointStats(path string) (int, time.Duration, int) {
	var n, pages int
	var pause time.Duration
	for _, l := range readEvents(path) {
		if l.Kind == "checkpoint" {
			n++
			pause += time.Duration(l.PauseNs)
			pages += l.Pages
		}
	}
	if n == 0 {
		return 0, 0, 0
	}
	return n, pause / time.Duration(n), pages / n
}

// outputCommitViolations counts releases of epoch k by the primary at a
// moment when the standby had not yet committed k (both logs carry wall
// clock stamps of one machine). Design I1.
func outputCommitViolations(pev, sev []eventLine) int {
	type commit struct {
		t int64
		e uint64
	}
	var commits []commit
	for _, l := range sev {
		if l.Kind == "commit" {
			commits = append(commits, commit{l.T, l.Epoch})
		}
	}
	bad := 0
	for _, l := range pev {
		if l.Kind != "release" {
			continue
		}
		ok := false
		for _, c := range commits {
			if c.t <= l.T && c.e >= l.Epoch {
				ok = true
				break
			}
		}
		if !ok {
			bad++
		}
	}
	return bad
}
