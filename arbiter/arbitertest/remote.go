package arbitertest

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xl-kemari/xl-kemari/arbiter"
)

// The remote protocol: one request per line, "ID OP ARGS...", answered
// (in any order) by "ID ok RESULT" or "ID err KIND MESSAGE", KIND one of
// held, denied, deadline, canceled, other. Durations are nanoseconds; a
// timeout of 0 means none.
//
//	acquire SESSION ROLE TIMEOUT      → true|false
//	hold SESSION ROLE TTL TIMEOUT     → LEASE
//	wait SESSION ROLE TIMEOUT         → -
//	release LEASE TIMEOUT             → -
//	valid LEASE OFFSET                → true|false: Valid at Hold's return + OFFSET

// Serve answers requests from r on w with a, until r ends. It is the
// body of a helper process (see Remote).
func Serve(a arbiter.Leaser, r io.Reader, w io.Writer) error {
	var (
		wmu    sync.Mutex
		lmu    sync.Mutex
		leases = map[string]servedLease{}
		n      int
		wg     sync.WaitGroup
	)
	reply := func(id, s string) {
		wmu.Lock()
		defer wmu.Unlock()
		fmt.Fprintf(w, "%s %s\n", id, s)
	}
	answer := func(id string, res string, err error) {
		if err == nil {
			reply(id, "ok "+res)
			return
		}
		kind := "other"
		switch {
		case errors.Is(err, arbiter.ErrHeld):
			kind = "held"
		case errors.Is(err, arbiter.ErrDenied):
			kind = "denied"
		case errors.Is(err, context.DeadlineExceeded):
			kind = "deadline"
		case errors.Is(err, context.Canceled):
			kind = "canceled"
		}
		reply(id, "err "+kind+" "+strings.ReplaceAll(err.Error(), "\n", " "))
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		id, op, args := f[0], f[1], f[2:]
		wg.Add(1)
		go func() {
			defer wg.Done()
			num := func(i int) time.Duration {
				if i >= len(args) {
					return 0
				}
				v, _ := strconv.ParseInt(args[i], 10, 64)
				return time.Duration(v)
			}
			ctxFor := func(i int) (context.Context, context.CancelFunc) {
				if d := num(i); d > 0 {
					return context.WithTimeout(context.Background(), d)
				}
				return context.WithCancel(context.Background())
			}
			var s [16]byte
			if len(args) > 0 {
				hex.Decode(s[:], []byte(args[0]))
			}
			role := func() arbiter.Role {
				if len(args) > 1 {
					return arbiter.Role(args[1])
				}
				return ""
			}
			switch op {
			case "acquire":
				ctx, cancel := ctxFor(2)
				defer cancel()
				ok, err := a.Acquire(ctx, s, role())
				answer(id, strconv.FormatBool(ok), err)
			case "hold":
				ctx, cancel := ctxFor(3)
				defer cancel()
				l, err := a.Hold(ctx, s, role(), num(2))
				if err != nil {
					answer(id, "", err)
					return
				}
				lmu.Lock()
				n++
				name := "L" + strconv.Itoa(n)
				leases[name] = servedLease{l, time.Now()}
				lmu.Unlock()
				answer(id, name, nil)
			case "wait":
				ctx, cancel := ctxFor(2)
				defer cancel()
				answer(id, "-", a.WaitLapsed(ctx, s, role()))
			case "release", "valid":
				lmu.Lock()
				sl, ok := leases[args[0]]
				lmu.Unlock()
				if !ok {
					answer(id, "", fmt.Errorf("no lease %q", args[0]))
					return
				}
				if op == "valid" {
					answer(id, strconv.FormatBool(sl.l.Valid(sl.at.Add(num(1)))), nil)
					return
				}
				ctx, cancel := ctxFor(1)
				defer cancel()
				answer(id, "-", sl.l.Release(ctx))
			default:
				answer(id, "", fmt.Errorf("unknown op %q", op))
			}
		}()
	}
	wg.Wait()
	return sc.Err()
}

type servedLease struct {
	l  arbiter.Lease
	at time.Time // when Hold returned, by the serving process's clock
}

// Remote is an arbiter.Leaser served by Serve at the other end of a pair
// of pipes (a helper process's stdin and stdout). It supports what the
// contract suite asks of Pair.S: its leases' Valid is evaluated by the
// serving process at the same offset from its Hold's return (which came
// before the Remote's), Until is not known (the zero time), and Done
// closes only on Release.
type Remote struct {
	w io.Writer

	mu sync.Mutex
	// Protected by mu.
	next    int
	pending map[string]chan string
	err     error
}

var _ arbiter.Leaser = (*Remote)(nil)

// NewRemote talks to Serve over w (its input) and r (its output).
func NewRemote(w io.Writer, r io.Reader) *Remote {
	rm := &Remote{w: w, pending: map[string]chan string{}}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			id, rest, _ := strings.Cut(sc.Text(), " ")
			rm.mu.Lock()
			ch := rm.pending[id]
			delete(rm.pending, id)
			rm.mu.Unlock()
			if ch != nil {
				ch <- rest
			}
		}
		rm.mu.Lock()
		rm.err = fmt.Errorf("arbitertest: remote ended: %v", sc.Err())
		for id, ch := range rm.pending {
			close(ch)
			delete(rm.pending, id)
		}
		rm.mu.Unlock()
	}()
	return rm
}

func timeoutOf(ctx context.Context) string {
	if d, ok := ctx.Deadline(); ok {
		return strconv.FormatInt(max(int64(time.Until(d)), 1), 10)
	}
	return "0"
}

func (rm *Remote) call(ctx context.Context, op string, args ...string) (string, error) {
	rm.mu.Lock()
	if rm.err != nil {
		rm.mu.Unlock()
		return "", rm.err
	}
	rm.next++
	id := strconv.Itoa(rm.next)
	ch := make(chan string, 1)
	rm.pending[id] = ch
	_, err := fmt.Fprintf(rm.w, "%s %s %s\n", id, op, strings.Join(args, " "))
	rm.mu.Unlock()
	if err != nil {
		return "", err
	}
	var line string
	select {
	case l, ok := <-ch:
		if !ok {
			return "", errors.New("arbitertest: remote ended")
		}
		line = l
	case <-ctx.Done():
		return "", fmt.Errorf("arbitertest: remote %s: %w", op, ctx.Err())
	}
	status, rest, _ := strings.Cut(line, " ")
	if status == "ok" {
		return rest, nil
	}
	kind, msg, _ := strings.Cut(rest, " ")
	want := map[string]error{"held": arbiter.ErrHeld, "denied": arbiter.ErrDenied,
		"deadline": context.DeadlineExceeded, "canceled": context.Canceled}[kind]
	if want == nil {
		return "", fmt.Errorf("remote: %s", msg)
	}
	return "", fmt.Errorf("%w: remote: %s", want, msg)
}

// Configured implements arbiter.Arbiter.
func (*Remote) Configured() bool { return true }

// Acquire implements arbiter.Arbiter.
func (rm *Remote) Acquire(ctx context.Context, s [16]byte, r arbiter.Role) (bool, error) {
	res, err := rm.call(ctx, "acquire", hex.EncodeToString(s[:]), string(r), timeoutOf(ctx))
	return res == "true", err
}

// Hold implements arbiter.Leaser.
func (rm *Remote) Hold(ctx context.Context, s [16]byte, r arbiter.Role, ttl time.Duration) (arbiter.Lease, error) {
	res, err := rm.call(ctx, "hold", hex.EncodeToString(s[:]), string(r), strconv.FormatInt(int64(ttl), 10), timeoutOf(ctx))
	if err != nil {
		return nil, err
	}
	return &remoteLease{rm: rm, name: res, at: time.Now(), done: make(chan struct{})}, nil
}

// WaitLapsed implements arbiter.Leaser.
func (rm *Remote) WaitLapsed(ctx context.Context, s [16]byte, r arbiter.Role) error {
	_, err := rm.call(ctx, "wait", hex.EncodeToString(s[:]), string(r), timeoutOf(ctx))
	return err
}

type remoteLease struct {
	rm   *Remote
	name string
	at   time.Time
	once sync.Once
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func (l *remoteLease) Valid(now time.Time) bool {
	res, err := l.rm.call(context.Background(), "valid", l.name, strconv.FormatInt(int64(now.Sub(l.at)), 10))
	return err == nil && res == "true"
}

func (l *remoteLease) Until() time.Time      { return time.Time{} }
func (l *remoteLease) Done() <-chan struct{} { return l.done }

func (l *remoteLease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *remoteLease) Release(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		_, err = l.rm.call(ctx, "release", l.name, timeoutOf(ctx))
		l.mu.Lock()
		l.err = arbiter.ErrReleased
		l.mu.Unlock()
		close(l.done)
	})
	return err
}
