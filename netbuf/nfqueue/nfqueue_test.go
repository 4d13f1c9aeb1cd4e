package nfqueue

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/xl-kemari/xl-kemari/netbuf"
	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
	"github.com/xl-kemari/xl-kemari/netbuf/netbuftest"
)

type harness struct{}

func (harness) Setup(t *testing.T, n int) []netbuftest.Port {
	topo := netbuftest.NewTopology(t, n)
	b := New(Config{NetNS: topo.Dom0Path()})
	if err := b.Probe(); err != nil {
		t.Skip(err)
	}
	var ports []netbuftest.Port
	for i := 0; i < n; i++ {
		buf, err := b.Open(netbuf.Device{Name: topo.Vifs[i], Bridge: topo.Bridge})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := buf.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		ports = append(ports, netbuftest.Port{Buffer: buf, Link: topo.Link(t, i)})
	}
	return ports
}

func TestContractNfqueue(t *testing.T) {
	netbuftest.RequireRoot(t)
	netbuftest.Run(t, harness{})
}

// TestCloseRemovesSetup checks that nothing of the setup is left.
func TestCloseRemovesSetup(t *testing.T) {
	topo := netbuftest.NewTopology(t, 1)
	ns := topo.Dom0Path()
	before := ruleDump(t, ns)
	b := New(Config{NetNS: ns})
	buf, err := b.Open(netbuf.Device{Name: topo.Vifs[0]})
	if err != nil {
		t.Fatal(err)
	}
	if d := ruleDump(t, ns); !strings.Contains(d, Tag) || !strings.Contains(d, chainPrefix) {
		t.Fatalf("rules not installed:\n%s", d)
	}
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	if after := ruleDump(t, ns); after != before {
		t.Fatalf("setup left behind:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func ruleDump(t *testing.T, ns string) string {
	t.Helper()
	var sb strings.Builder
	for _, argv := range [][]string{{"iptables", "-w", "-S"}, {"ip6tables", "-w", "-S"}, {"ebtables", "-L"}, {"ip", "-o", "link", "show"}} {
		out, err := host.Run(ns, argv...)
		if err != nil {
			t.Fatal(err)
		}
		if argv[0] == "ip" {
			// Names only: carrier flags change on their own.
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); len(f) > 1 {
					sb.WriteString(f[1] + "\n")
				}
			}
			continue
		}
		sb.Write(out)
	}
	return sb.String()
}

func TestOpenBadDevice(t *testing.T) {
	b := New(Config{})
	for _, name := range []string{"", "a/b", "0123456789abcdefg", "x y"} {
		if _, err := b.Open(netbuf.Device{Name: name}); !errors.Is(err, ErrDevice) {
			t.Errorf("Open(%q): %v, want ErrDevice", name, err)
		}
	}
}

func TestParseQueueDrops(t *testing.T) {
	text := "    0  12345     3 1     0  0  0    10 1\n27392  999     0 1     0  7  4   200 1\n"
	if d, ok := parseQueueDrops(text, 27392); !ok || d != 11 {
		t.Fatalf("got %d, %v", d, ok)
	}
	if _, ok := parseQueueDrops(text, 5); ok {
		t.Fatal("absent queue found")
	}
}

func TestAfterWraps(t *testing.T) {
	if !after(1, 0xffffffff) || after(0xffffffff, 1) || after(5, 5) {
		t.Fatal("serial comparison wrong")
	}
}

// TestHolderDeathDropsHeld: a child process holds frames and is killed;
// none of them may reach the client, now or after its rules are cleaned.
func TestHolderDeathDropsHeld(t *testing.T) {
	if os.Getenv("XLK_HOLDER_CHILD") != "" {
		t.Skip("child")
	}
	topo := netbuftest.NewTopology(t, 1)
	link := topo.Link(t, 0)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHolder$", "-test.v")
	cmd.Env = append(os.Environ(), "XLK_HOLDER_CHILD=1", "XLK_NS="+topo.Dom0Path(), "XLK_DEV="+topo.Vifs[0])
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	expect := func(word string) {
		t.Helper()
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), word) {
				return
			}
		}
		t.Fatalf("child ended before %q: %v", word, sc.Err())
	}
	expect("ready")
	var tags []netbuftest.Tag
	for i, p := range netbuftest.AllProtos {
		for j := uint32(0); j < 3; j++ {
			n := uint32(i*10) + j
			if err := link.Send(p, n); err != nil {
				t.Fatal(err)
			}
			tags = append(tags, netbuftest.Tag{Proto: p, N: n})
		}
	}
	fmt.Fprintf(stdin, "%d\n", len(tags))
	expect("held")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	link.Flush(t)
	if got := link.Captured(); len(got) != 0 {
		t.Fatalf("frames released by a dead holder: %v", got)
	}
	// The next run's cleanup removes the dead holder's rules; still
	// nothing of what it held may appear.
	if err := CleanupStale(topo.Dom0Path()); err != nil {
		t.Fatal(err)
	}
	if d := ruleDump(t, topo.Dom0Path()); strings.Contains(d, Tag) || strings.Contains(d, chainPrefix) || strings.Contains(d, injInPrefix) {
		t.Fatalf("stale setup survived CleanupStale:\n%s", d)
	}
	if err := link.Send(netbuftest.UDP4, 999); err != nil {
		t.Fatal(err)
	}
	link.WaitCaptured(t, func(g []netbuftest.Tag) bool {
		for _, x := range g {
			if x.N == 999 {
				return true
			}
		}
		return false
	})
	if got := link.Captured(); len(got) != 1 {
		t.Fatalf("after cleanup the client got %v, want only the new frame", got)
	}
}

// TestHelperHolder is the child of TestHolderDeathDropsHeld.
func TestHelperHolder(t *testing.T) {
	if os.Getenv("XLK_HOLDER_CHILD") == "" {
		t.Skip("helper process for TestHolderDeathDropsHeld")
	}
	buf, err := New(Config{NetNS: os.Getenv("XLK_NS")}).Open(netbuf.Device{Name: os.Getenv("XLK_DEV")})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	var n uint64
	if _, err := fmt.Scan(&n); err != nil {
		t.Fatal(err)
	}
	netbuftest.WaitHeld(t, buf, n)
	if err := buf.Barrier(1); err != nil {
		t.Fatal(err)
	}
	fmt.Println("held")
	select {} // killed here
}
