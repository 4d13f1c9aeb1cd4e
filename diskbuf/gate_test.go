package diskbuf

import (
	"context"
	"errors"
	"testing"
)

type fakeGate struct {
	err               error
	quiesces, resumes int
}

func (g *fakeGate) Quiesce(context.Context) (uint64, error) {
	g.quiesces++
	return 0, g.err
}

func (g *fakeGate) Resume() { g.resumes++ }

// TestGateBarrierOpen: every Barrier quiesces the gate once and Open
// resumes it once; Open without a Barrier, or after a Quiesce that failed
// (a gate someone else holds quiesced), resumes nothing.
func TestGateBarrierOpen(t *testing.T) {
	g := &fakeGate{}
	p := NewPrimary(Replicate, []Store{NewMemStore(1 << 16)})
	p.SetGate(g)
	p.Open()
	if g.resumes != 0 {
		t.Fatalf("Open before any Barrier resumed the gate %d times", g.resumes)
	}
	for e := uint64(1); e <= 3; e++ {
		p.Barrier(e)
		if g.quiesces != int(e) || g.resumes != int(e-1) {
			t.Fatalf("after Barrier(%d): %d quiesces, %d resumes", e, g.quiesces, g.resumes)
		}
		p.Open()
		p.Open()
		if g.resumes != int(e) {
			t.Fatalf("after Open of epoch %d (twice): %d resumes, want %d", e, g.resumes, e)
		}
	}
	g.err = errors.New("already quiesced")
	p.Barrier(4)
	p.Open()
	if g.resumes != 3 {
		t.Fatalf("Open after a failed Quiesce resumed the gate (%d resumes, want 3)", g.resumes)
	}
}
