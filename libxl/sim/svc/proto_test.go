package svc

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	reqs := []Request{
		{Client: 1, Seq: 1, Op: OpIncr},
		{Client: 1<<64 - 1, Seq: 1<<64 - 1, Op: OpGet},
		{Client: 2, Seq: 3, Op: OpPut, Key: 4, Value: 5},
		{Client: 2, Seq: 4, Op: OpGetKey, Key: 4},
	}
	for _, r := range reqs {
		b, err := EncodeRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeRequest(b)
		if err != nil || got != r {
			t.Errorf("request %+v: round trip %+v, %v", r, got, err)
		}
	}
	rep := Reply{Client: 9, Seq: 8, Status: StatusNotFound, Value: 7}
	b, err := EncodeReply(rep)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeReply(b); err != nil || got != rep {
		t.Errorf("reply round trip %+v, %v", got, err)
	}
}

// TestGolden pins the byte layout.
func TestGolden(t *testing.T) {
	b, _ := EncodeRequest(Request{Client: 0x0102, Seq: 3, Op: OpPut, Key: 4, Value: 5})
	want := "4b535101" + "03000000" + "0000000000000102" + "0000000000000003" + "0000000000000004" + "0000000000000005"
	if hex.EncodeToString(b) != want {
		t.Errorf("request bytes %x, want %s", b, want)
	}
	b, _ = EncodeReply(Reply{Client: 1, Seq: 2, Status: StatusOK, Value: 3})
	want = "4b535201" + "01000000" + "0000000000000001" + "0000000000000002" + "0000000000000003"
	if hex.EncodeToString(b) != want {
		t.Errorf("reply bytes %x, want %s", b, want)
	}
}

func TestMalformed(t *testing.T) {
	good, _ := EncodeRequest(Request{Client: 1, Seq: 1, Op: OpIncr})
	mod := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	cases := map[string][]byte{
		"empty":       nil,
		"short":       good[:39],
		"long":        append(bytes.Clone(good), 0),
		"magic":       mod(func(b []byte) { b[0] = 0 }),
		"reply magic": mod(func(b []byte) { b[3] = 0x52 }),
		"reserved":    mod(func(b []byte) { b[6] = 1 }),
		"op 0":        mod(func(b []byte) { b[4] = 0 }),
		"op 9":        mod(func(b []byte) { b[4] = 9 }),
		"seq 0":       mod(func(b []byte) { b[23] = 0 }),
		"incr key":    mod(func(b []byte) { b[31] = 1 }),
		"incr value":  mod(func(b []byte) { b[39] = 1 }),
		"getk value":  mod(func(b []byte) { b[4] = byte(OpGetKey); b[39] = 1 }),
	}
	for name, b := range cases {
		if _, err := DecodeRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeRequest = %v", name, err)
		}
	}
	rep, _ := EncodeReply(Reply{Client: 1, Seq: 1, Status: StatusOK})
	for name, b := range map[string][]byte{
		"short":    rep[:31],
		"status 0": append(append(bytes.Clone(rep[:4]), 0), rep[5:]...),
		"status 9": append(append(bytes.Clone(rep[:4]), 9), rep[5:]...),
		"request":  good,
	} {
		if _, err := DecodeReply(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeReply = %v", name, err)
		}
	}
	if _, err := EncodeRequest(Request{Seq: 1, Op: 77}); !errors.Is(err, ErrMalformed) {
		t.Errorf("EncodeRequest(bad op) = %v", err)
	}
	if _, err := EncodeReply(Reply{Seq: 0, Status: StatusOK}); !errors.Is(err, ErrMalformed) {
		t.Errorf("EncodeReply(seq 0) = %v", err)
	}
}

// FuzzDecode: decoding never panics, and whatever decodes re-encodes to
// the same bytes.
func FuzzDecode(f *testing.F) {
	r, _ := EncodeRequest(Request{Client: 1, Seq: 2, Op: OpPut, Key: 3, Value: 4})
	p, _ := EncodeReply(Reply{Client: 1, Seq: 2, Status: StatusOK, Value: 4})
	f.Add(r)
	f.Add(p)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if req, err := DecodeRequest(b); err == nil {
			if out, err := EncodeRequest(req); err != nil || !bytes.Equal(out, b) {
				t.Errorf("request %x decoded to %+v, re-encoded to %x (%v)", b, req, out, err)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeRequest error %v does not wrap ErrMalformed", err)
		}
		if rep, err := DecodeReply(b); err == nil {
			if out, err := EncodeReply(rep); err != nil || !bytes.Equal(out, b) {
				t.Errorf("reply %x decoded to %+v, re-encoded to %x (%v)", b, rep, out, err)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeReply error %v does not wrap ErrMalformed", err)
		}
	})
}
