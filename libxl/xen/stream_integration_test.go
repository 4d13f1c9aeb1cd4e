//go:build xen && integration

package xen_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xl-kemari/xl-kemari/libxl/xen"
	"github.com/xl-kemari/xl-kemari/libxl/xen/libxcstream"
)

// guestStatus asks the lab guest's port-7 service for its status line.
func guestStatus(t *testing.T) (boot string, tick int, line string) {
	t.Helper()
	re := regexp.MustCompile(`boot=(\S+) tick=(\d+)`)
	for range 20 {
		// An empty line: the service answers at once instead of
		// waiting 2 s for a command.
		nc := exec.Command("nc", "-w", "3", "192.0.2.100", "7")
		nc.Stdin = strings.NewReader("\n")
		out, _ := nc.CombinedOutput()
		if m := re.FindStringSubmatch(string(out)); m != nil {
			fmt.Sscan(m[2], &tick)
			return m[1], tick, strings.TrimSpace(string(out))
		}
		<-time.After(500 * time.Millisecond)
	}
	t.Fatal("the guest's service on 192.0.2.100:7 does not answer")
	return "", 0, ""
}

// TestRouteA drives route (a) end to end on one host: xc_domain_save of a
// running PV guest in a REMUS stream into a pipe, parsed into captures
// (pages + state blobs), re-encoded as the standby would from committed
// epochs and fed to libxl_domain_create_restore; then the primary is
// destroyed and the replica, unpaused, must carry on from the last
// checkpoint (same boot id, tick not reset).
func TestRouteA(t *testing.T) {
	hv := openXen(t)
	dom := createGuest(t, hv)
	ctx := hv.(*xen.Hypervisor).Context()
	boot0, tick0, line := guestStatus(t)
	t.Logf("primary: %s", line)

	js, err := ctx.RetrieveDomainConfiguration(xen.Domid(dom))
	if err != nil {
		t.Fatal(err)
	}
	saveR, saveW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	restR, restW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("replica-%d", os.Getpid())
	t.Cleanup(func() { exec.Command("xl", "destroy", name).Run() })

	type restored struct {
		id  xen.Domid
		err error
	}
	restoreDone := make(chan restored, 1)
	go func() {
		id, err := ctx.DomainCreateRestore(js, name, restR)
		restR.Close()
		restoreDone <- restored{id, err}
	}()

	// The primary's parser and the standby's encoder, back to back: each
	// complete capture is "committed" at once.
	type capStat struct {
		pages, typed, records, bytes int
		took                         time.Duration
	}
	caps := make(chan capStat, 64)
	parseDone := make(chan error, 1)
	go func() {
		defer restW.Close()
		r := libxcstream.NewReader(saveR)
		h, err := r.ReadHeader()
		if err != nil {
			parseDone <- err
			return
		}
		t.Logf("libxc stream: %+v", h)
		var enc libxcstream.Encoder
		c := libxcstream.NewCapture()
		c.SetHeader(h)
		for {
			rec, err := r.Next()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				parseDone <- err
				return
			}
			done, err := c.Add(rec)
			if err != nil {
				parseDone <- err
				return
			}
			if !done {
				continue
			}
			t0 := time.Now()
			pfns := c.Slots()
			typed := 0
			for _, p := range pfns {
				if c.Type(uint64(p)) != libxcstream.PageNormal {
					typed++
				}
			}
			states := c.AppendStates(nil)
			cw := &countWriter{w: restW}
			if err := enc.WriteCheckpoint(cw, pfns, c.SlotData, states); err != nil {
				parseDone <- fmt.Errorf("feeding the restore: %w", err)
				return
			}
			caps <- capStat{len(pfns), typed, len(states), cw.n, time.Since(t0)}
			c = libxcstream.NewCapture()
		}
	}()

	const checkpoints = 8
	var (
		n      int
		t0     time.Time
		pauses []time.Duration
	)
	start := time.Now()
	err = ctx.DomainSaveRemus(xen.Domid(dom), saveW, &xen.SaveCallbacks{
		Suspend: func() error {
			t0 = time.Now()
			return ctx.DomainSuspendOnly(xen.Domid(dom))
		},
		Postcopy: func() error {
			err := ctx.DomainResume(xen.Domid(dom), true)
			pauses = append(pauses, time.Since(t0))
			return err
		},
		Checkpoint: func() bool {
			n++
			if n >= checkpoints {
				return false
			}
			<-time.After(200 * time.Millisecond)
			return true
		},
	})
	saveW.Close()
	t.Logf("DomainSaveRemus: %d checkpoints in %v: %v", n, time.Since(start), err)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-parseDone; err != nil {
		t.Fatalf("parse/encode: %v", err)
	}
	close(caps)
	i := 0
	for c := range caps {
		t.Logf("checkpoint %d: pause %v, %d pages (%d typed), %d state blobs, %d stream bytes, encode+feed %v", i+1, pauses[i], c.pages, c.typed, c.records, c.bytes, c.took)
		i++
	}
	if i != checkpoints {
		t.Errorf("%d captures, want %d", i, checkpoints)
	}
	// The stream is closed after a whole checkpoint: libxl fails over to it.
	var res restored
	select {
	case res = <-restoreDone:
	case <-time.After(120 * time.Second):
		t.Fatal("libxl_domain_create_restore did not return within 120 s of the stream's end")
	}
	if res.err != nil {
		t.Fatalf("restore: %v", res.err)
	}
	t.Logf("replica %q is domain %d (paused)", name, res.id)

	_, tick1, line := guestStatus(t)
	t.Logf("primary before its destruction: %s", line)
	if err := hv.Source().Destroy(dom); err != nil {
		t.Fatal(err)
	}
	if err := ctx.DomainUnpause(res.id); err != nil {
		t.Fatal(err)
	}
	boot2, tick2, line := guestStatus(t)
	t.Logf("replica: %s", line)
	if boot2 != boot0 {
		t.Errorf("replica boot id %s, primary's %s: it rebooted instead of resuming", boot2, boot0)
	}
	if tick2 < tick0 || tick2 > tick1+5 {
		t.Errorf("replica tick %d, primary's were %d (first) and %d (last): not resumed from a checkpoint", tick2, tick0, tick1)
	}
}

type countWriter struct {
	w io.Writer
	n int
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += n
	return n, err
}
