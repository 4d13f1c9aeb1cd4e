package plug

import (
	"math/rand/v2"
	"testing"
)

// fakePlug models sch_plug's enqueue, dequeue and change (net/sched/
// sch_plug.c) closely enough to check the epoch mapping against it.
type fakePlug struct {
	q                        []frame
	current, last, toRelease int
	indefinite, throttled    bool
	out                      []frame
	torn                     bool
}

type frame struct{ epoch uint64 }

func newFake() *fakePlug { return &fakePlug{throttled: true} }

func (f *fakePlug) enqueue(fr frame) {
	if !f.indefinite {
		f.current++
	}
	f.q = append(f.q, fr)
	f.dequeue()
}

func (f *fakePlug) dequeue() {
	for len(f.q) > 0 && !f.throttled {
		if !f.indefinite {
			if f.toRelease == 0 {
				f.throttled = true
				return
			}
			f.toRelease--
		}
		f.out = append(f.out, f.q[0])
		f.q = f.q[1:]
	}
}

func (f *fakePlug) Plug(a int32) error {
	switch a {
	case TCQPlugBuffer:
		f.last, f.current = f.current, 0
		if f.indefinite {
			f.throttled = true
		}
		f.indefinite = false
	case TCQPlugReleaseOne:
		f.toRelease += f.last
		f.last = 0
		f.throttled = false
	case TCQPlugReleaseIndefinite:
		f.indefinite = true
		f.toRelease, f.last, f.current = 0, 0, 0
		f.throttled = false
	}
	f.dequeue()
	return nil
}

func (f *fakePlug) Reset() error {
	*f = fakePlug{throttled: true, out: f.out}
	return nil
}

func (f *fakePlug) Counters() (counters, error) {
	return counters{held: uint64(len(f.q)), released: uint64(len(f.out))}, nil
}

func (f *fakePlug) Teardown() error { f.torn, f.q = true, nil; return nil }

// TestEpochMappingAgainstModel drives random schedules (pipeline depth 1
// to 3, unprotected spells) and checks output commit after every step: a
// protected frame leaves only once its epoch is released. With depth 1
// every released epoch must also be out at once.
func TestEpochMappingAgainstModel(t *testing.T) {
	for seed := uint64(1); seed <= 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		f := newFake()
		b := newBuffer(f)
		depth := 1 + rng.IntN(3)
		var barrier, released uint64
		unprot := false
		seen := 0
		check := func(step int) {
			for _, fr := range f.out[seen:] {
				if fr.epoch != 0 && fr.epoch > released {
					t.Fatalf("seed %d step %d: frame of epoch %d out, released through %d", seed, step, fr.epoch, released)
				}
			}
			seen = len(f.out)
			if depth == 1 && !unprot {
				for _, fr := range f.q {
					if fr.epoch != 0 && fr.epoch <= released {
						t.Fatalf("seed %d step %d: frame of released epoch %d still held", seed, step, fr.epoch)
					}
				}
			}
		}
		for step := 0; step < 400; step++ {
			switch r := rng.IntN(20); {
			case r < 10:
				e := barrier + 1
				if unprot {
					e = 0 // passes unheld
				}
				f.enqueue(frame{epoch: e})
			case r < 14 && barrier-released < uint64(depth):
				barrier++
				if err := b.Barrier(barrier); err != nil {
					t.Fatal(err)
				}
			case r < 18 && released < barrier:
				released++
				if err := b.Release(released); err != nil {
					t.Fatal(err)
				}
			case r == 18 && !unprot:
				unprot = true
				for i := range f.q {
					f.q[i].epoch = 0 // Unprotect may let out everything held
				}
				if err := b.Unprotect(); err != nil {
					t.Fatal(err)
				}
				if len(f.q) != 0 {
					t.Fatalf("seed %d: Unprotect left %d frames held", seed, len(f.q))
				}
			case r == 19 && unprot:
				unprot = false
				if err := b.Protect(); err != nil {
					t.Fatal(err)
				}
			}
			check(step)
		}
	}
}

func TestDiscardAndClose(t *testing.T) {
	f := newFake()
	b := newBuffer(f)
	f.enqueue(frame{1})
	if err := b.Barrier(1); err != nil {
		t.Fatal(err)
	}
	if err := b.Discard(); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(1); err != nil {
		t.Fatal(err)
	}
	if len(f.out) != 0 {
		t.Fatalf("discarded frames released: %v", f.out)
	}
	f.enqueue(frame{2})
	if err := b.Barrier(2); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(2); err != nil {
		t.Fatal(err)
	}
	if len(f.out) != 1 {
		t.Fatalf("after Discard, epoch 2 not released: %v", f.out)
	}
	f.enqueue(frame{3})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if !f.torn || len(f.out) != 1 {
		t.Fatalf("Close: torn=%v out=%v", f.torn, f.out)
	}
	if err := b.Barrier(3); err == nil {
		t.Fatal("Barrier after Close succeeded")
	}
}
