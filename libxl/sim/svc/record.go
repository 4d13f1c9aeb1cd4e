package svc

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"
)

// Record is one finished Do: the request, and its reply if it was
// acknowledged.
type Record struct {
	Req   Request
	Reply Reply // zero unless Acked
	Acked bool
	Tries int
	Sent  time.Time // first try
	Done  time.Time // reply received, or given up
	Err   string    `json:",omitempty"`
}

// Recorder keeps the records of one or more clients, in memory and
// optionally as JSON lines on a writer (one record per line, so a log cut
// short by a crash still parses up to its last whole line).
//
// Concurrency: safe for concurrent use.
type Recorder struct {
	mu sync.Mutex
	// Protected by mu.
	recs []Record
	enc  *json.Encoder
}

// NewRecorder returns a recorder that also writes each record to w (nil:
// memory only).
func NewRecorder(w io.Writer) *Recorder {
	r := &Recorder{}
	if w != nil {
		r.enc = json.NewEncoder(w)
	}
	return r
}

// Add appends rec; the error is the writer's.
func (r *Recorder) Add(rec Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	if r.enc != nil {
		if err := r.enc.Encode(rec); err != nil {
			return fmt.Errorf("svc: recorder: %w", err)
		}
	}
	return nil
}

// Records returns a copy of the records so far, in the order added.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// ReadRecords parses a JSON-lines log written by a Recorder. A torn last
// line (the writer was killed mid-record) is ignored; any other bad line is
// an error naming its line number.
func ReadRecords(rd io.Reader) ([]Record, error) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []Record
	var pending error
	for line := 1; sc.Scan(); line++ {
		if pending != nil {
			return nil, pending
		}
		if len(sc.Bytes()) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			pending = fmt.Errorf("%w: record log line %d: %w", ErrMalformed, line, err)
			continue
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("svc: reading records: %w", err)
	}
	return out, nil
}

// Summary counts what Check saw.
type Summary struct {
	Acked, Unacked int
	Clients        int
	MaxCounter     uint64 // highest counter value acknowledged by INCR or GET
}

// Check verifies a history of records (of any number of clients, e.g. all
// clients of one run) against the service's guarantees, and returns every
// violation found, each wrapping ErrViolation:
//
//   - a reply answers its request (same client and seq);
//   - a request acknowledged twice got the same reply both times;
//   - no INCR value is acknowledged twice (that would be an increment lost
//     and re-applied, i.e. state rolled back behind an acknowledgement);
//   - per client, INCR values strictly increase with seq, and when only one
//     client increments, two INCRs seq a < b differ by at least 1 and at
//     most b-a (each seq applies at most once), so consecutive ones differ
//     by exactly 1: after a failover the next INCR returns max acked + 1;
//   - an INCR or GET sent after another request's reply was received sees
//     at least the counter value that reply carried (no rollback);
//   - a GETK of a key PUT only by its own client returns the value of that
//     client's last PUT before it (or of a later unacknowledged PUT, which
//     may have been applied).
func Check(recs []Record) (Summary, error) {
	var s Summary
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrViolation}, args...)...))
	}
	type key struct{ client, seq uint64 }
	first := map[key]Record{}
	clients := map[uint64]bool{}
	var acked []Record
	for _, r := range recs {
		clients[r.Req.Client] = true
		if !r.Acked {
			s.Unacked++
			continue
		}
		s.Acked++
		if r.Reply.Client != r.Req.Client || r.Reply.Seq != r.Req.Seq {
			bad("client %d seq %d answered as client %d seq %d", r.Req.Client, r.Req.Seq, r.Reply.Client, r.Reply.Seq)
			continue
		}
		k := key{r.Req.Client, r.Req.Seq}
		if p, dup := first[k]; dup {
			if p.Req != r.Req || p.Reply != r.Reply {
				bad("client %d seq %d acknowledged twice differently: %+v then %+v", k.client, k.seq, p.Reply, r.Reply)
			}
			continue
		}
		first[k] = r
		acked = append(acked, r)
	}
	s.Clients = len(clients)

	isCounter := func(r Record) bool {
		return (r.Req.Op == OpIncr || r.Req.Op == OpGet) && r.Reply.Status == StatusOK
	}
	incrBy := map[uint64]Record{}
	incrClients := map[uint64]bool{}
	for _, r := range recs {
		if r.Req.Op == OpIncr {
			incrClients[r.Req.Client] = true
		}
	}
	perClient := map[uint64][]Record{}
	for _, r := range acked {
		perClient[r.Req.Client] = append(perClient[r.Req.Client], r)
		if isCounter(r) {
			s.MaxCounter = max(s.MaxCounter, r.Reply.Value)
		}
		if r.Req.Op != OpIncr || r.Reply.Status != StatusOK {
			continue
		}
		if p, dup := incrBy[r.Reply.Value]; dup {
			bad("INCR value %d acknowledged to client %d seq %d and to client %d seq %d (increment lost)",
				r.Reply.Value, p.Req.Client, p.Req.Seq, r.Req.Client, r.Req.Seq)
			continue
		}
		incrBy[r.Reply.Value] = r
	}

	for c, rs := range perClient {
		slices.SortFunc(rs, func(a, b Record) int { return cmp.Compare(a.Req.Seq, b.Req.Seq) })
		var last *Record
		for i := range rs {
			r := &rs[i]
			if r.Req.Op != OpIncr || r.Reply.Status != StatusOK {
				continue
			}
			if last != nil {
				d := int64(r.Reply.Value - last.Reply.Value)
				if r.Reply.Value <= last.Reply.Value {
					bad("client %d: INCR seq %d returned %d after seq %d returned %d", c, r.Req.Seq, r.Reply.Value, last.Req.Seq, last.Reply.Value)
				} else if len(incrClients) == 1 && uint64(d) > r.Req.Seq-last.Req.Seq {
					bad("client %d: INCR seq %d returned %d, more than %d above seq %d's %d", c, r.Req.Seq, r.Reply.Value, r.Req.Seq-last.Req.Seq, last.Req.Seq, last.Reply.Value)
				}
			}
			last = r
		}
	}

	// Real-time order: a counter read that starts after some reply was
	// received must not see less than that reply showed.
	counter := slices.DeleteFunc(slices.Clone(acked), func(r Record) bool { return !isCounter(r) })
	byDone := slices.Clone(counter)
	slices.SortFunc(byDone, func(a, b Record) int { return a.Done.Compare(b.Done) })
	bySent := slices.Clone(counter)
	slices.SortFunc(bySent, func(a, b Record) int { return a.Sent.Compare(b.Sent) })
	var seen uint64
	var seenBy Record
	j := 0
	for _, r := range bySent {
		for j < len(byDone) && byDone[j].Done.Before(r.Sent) {
			if byDone[j].Reply.Value >= seen {
				seen, seenBy = byDone[j].Reply.Value, byDone[j]
			}
			j++
		}
		if r.Reply.Value < seen || (r.Req.Op == OpIncr && r.Reply.Value == seen && seen != 0) {
			bad("client %d %v seq %d returned %d, but client %d seq %d had already been answered %d (rollback)",
				r.Req.Client, r.Req.Op, r.Req.Seq, r.Reply.Value, seenBy.Req.Client, seenBy.Req.Seq, seen)
		}
	}

	checkKeys(recs, bad)
	return s, errors.Join(errs...)
}

// checkKeys checks GETK against single-writer PUT histories.
func checkKeys(recs []Record, bad func(string, ...any)) {
	writers := map[uint64]map[uint64]bool{}
	for _, r := range recs {
		if r.Req.Op == OpPut {
			if writers[r.Req.Key] == nil {
				writers[r.Req.Key] = map[uint64]bool{}
			}
			writers[r.Req.Key][r.Req.Client] = true
		}
	}
	type ck struct{ client, key uint64 }
	hist := map[ck][]Record{}
	for _, r := range recs {
		if r.Req.Op != OpPut && r.Req.Op != OpGetKey {
			continue
		}
		w := writers[r.Req.Key]
		if len(w) > 1 || (len(w) == 1 && !w[r.Req.Client]) {
			continue
		}
		k := ck{r.Req.Client, r.Req.Key}
		hist[k] = append(hist[k], r)
	}
	for k, rs := range hist {
		slices.SortStableFunc(rs, func(a, b Record) int { return cmp.Compare(a.Req.Seq, b.Req.Seq) })
		// allowed: the values the key may hold; found: whether any PUT
		// before was acknowledged (else NotFound is allowed too).
		var allowed []uint64
		acked := false
		for _, r := range rs {
			if r.Req.Op == OpPut {
				if r.Acked && r.Reply.Status == StatusOK {
					allowed, acked = []uint64{r.Req.Value}, true
				} else if !r.Acked {
					allowed = append(allowed, r.Req.Value)
				}
				continue
			}
			if !r.Acked {
				continue
			}
			switch r.Reply.Status {
			case StatusNotFound:
				if acked {
					bad("client %d GETK %d seq %d: not found after an acknowledged PUT", k.client, k.key, r.Req.Seq)
				}
			case StatusOK:
				if len(allowed) > 0 && !slices.Contains(allowed, r.Reply.Value) {
					bad("client %d GETK %d seq %d returned %d, want one of %v", k.client, k.key, r.Req.Seq, r.Reply.Value, allowed)
				}
			}
		}
	}
}
