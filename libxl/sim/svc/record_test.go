package svc

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// hist builds a history: each entry is client, seq, op, reply value, in
// time order, each request answered before the next one starts.
type ev struct {
	client, seq uint64
	op          Op
	key, val    uint64 // PUT/GETK key and PUT value
	reply       uint64
	status      Status // 0: StatusOK
	unacked     bool
}

func hist(evs ...ev) []Record {
	var out []Record
	for i, e := range evs {
		st := e.status
		if st == 0 {
			st = StatusOK
		}
		r := Record{
			Req:  Request{Client: e.client, Seq: e.seq, Op: e.op, Key: e.key, Value: e.val},
			Sent: t0.Add(time.Duration(2*i) * time.Millisecond), Done: t0.Add(time.Duration(2*i+1) * time.Millisecond),
			Tries: 1,
		}
		if !e.unacked {
			r.Acked = true
			r.Reply = Reply{Client: e.client, Seq: e.seq, Status: st, Value: e.reply}
		}
		out = append(out, r)
	}
	return out
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		h    []Record
		bad  string // substring of the violation; "" = no violation
	}{
		{"good single client", hist(
			ev{client: 1, seq: 1, op: OpIncr, reply: 1},
			ev{client: 1, seq: 2, op: OpIncr, reply: 2},
			ev{client: 1, seq: 3, op: OpGet, reply: 2},
			ev{client: 1, seq: 4, op: OpIncr, unacked: true},
			ev{client: 1, seq: 5, op: OpIncr, reply: 4}, // seq 4 was applied
		), ""},
		{"good two clients", hist(
			ev{client: 1, seq: 1, op: OpIncr, reply: 1},
			ev{client: 2, seq: 1, op: OpIncr, reply: 2},
			ev{client: 1, seq: 2, op: OpIncr, reply: 3},
			ev{client: 2, seq: 2, op: OpGet, reply: 3},
		), ""},
		{"lost increment after failover", hist(
			ev{client: 1, seq: 1, op: OpIncr, reply: 1},
			ev{client: 1, seq: 2, op: OpIncr, reply: 2},
			ev{client: 1, seq: 3, op: OpIncr, reply: 2},
		), "lost"},
		{"skipped value", hist(
			ev{client: 1, seq: 1, op: OpIncr, reply: 1},
			ev{client: 1, seq: 2, op: OpIncr, reply: 3},
		), "more than 1 above"},
		{"rollback seen by another client", hist(
			ev{client: 1, seq: 1, op: OpIncr, reply: 1},
			ev{client: 1, seq: 2, op: OpIncr, reply: 2},
			ev{client: 2, seq: 1, op: OpGet, reply: 1},
		), "rollback"},
		{"retry answered differently", append(hist(
			ev{client: 1, seq: 1, op: OpIncr, reply: 1}),
			hist(ev{client: 1, seq: 1, op: OpIncr, reply: 2})...,
		), "twice differently"},
		{"wrong reply", func() []Record {
			h := hist(ev{client: 1, seq: 1, op: OpIncr, reply: 1})
			h[0].Reply.Seq = 2
			return h
		}(), "answered as"},
		{"kv good", hist(
			ev{client: 1, seq: 1, op: OpGetKey, key: 9, status: StatusNotFound},
			ev{client: 1, seq: 2, op: OpPut, key: 9, val: 90, reply: 90},
			ev{client: 1, seq: 3, op: OpGetKey, key: 9, reply: 90},
			ev{client: 1, seq: 4, op: OpPut, key: 9, val: 91, unacked: true},
			ev{client: 1, seq: 5, op: OpGetKey, key: 9, reply: 91},
		), ""},
		{"kv lost put", hist(
			ev{client: 1, seq: 1, op: OpPut, key: 9, val: 90, reply: 90},
			ev{client: 1, seq: 2, op: OpGetKey, key: 9, status: StatusNotFound},
		), "not found after"},
		{"kv old value", hist(
			ev{client: 1, seq: 1, op: OpPut, key: 9, val: 90, reply: 90},
			ev{client: 1, seq: 2, op: OpPut, key: 9, val: 91, reply: 91},
			ev{client: 1, seq: 3, op: OpGetKey, key: 9, reply: 90},
		), "returned 90"},
	}
	for _, tc := range cases {
		_, err := Check(tc.h)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%s: unexpected violation: %v", tc.name, err)
		case tc.bad != "" && (!errors.Is(err, ErrViolation) || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%s: got %v, want a violation mentioning %q", tc.name, err, tc.bad)
		}
	}
	sum, _ := Check(cases[0].h)
	if sum.Acked != 4 || sum.Unacked != 1 || sum.Clients != 1 || sum.MaxCounter != 4 {
		t.Errorf("summary %+v", sum)
	}
}

func TestRecorderLog(t *testing.T) {
	var buf bytes.Buffer
	r := NewRecorder(&buf)
	for _, rec := range hist(ev{client: 1, seq: 1, op: OpIncr, reply: 1}, ev{client: 1, seq: 2, op: OpGet, unacked: true}) {
		if err := r.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	// A writer killed mid-record leaves a torn last line.
	log := buf.String() + `{"Req":{"Cli`
	got, err := ReadRecords(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Reply.Value != 1 || got[1].Acked || !got[0].Sent.Equal(t0) {
		t.Errorf("ReadRecords = %+v", got)
	}
	if _, err := ReadRecords(strings.NewReader("garbage\n" + buf.String())); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad line in the middle: %v", err)
	}
	if len(r.Records()) != 2 {
		t.Errorf("Records() = %d", len(r.Records()))
	}
}
