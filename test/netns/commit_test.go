package netns

import (
	"errors"
	"testing"
	"time"
)

func TestCheckCommit(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	commits := []time.Time{ms(100), ms(200), ms(300)}
	for _, tc := range []struct {
		name string
		x    Exchange
		bad  bool
	}{
		{"held until the next commit", Exchange{"udp/1", ms(50), ms(101)}, false},
		{"held across two commits", Exchange{"arp/1", ms(150), ms(301)}, false},
		{"leaked within an epoch", Exchange{"icmp/1", ms(110), ms(111)}, true},
		{"released at the commit instant", Exchange{"icmp/2", ms(150), ms(200)}, true},
		{"request at the commit instant", Exchange{"icmp/3", ms(200), ms(250)}, true},
		{"after the last commit", Exchange{"tcp/1", ms(310), ms(320)}, true},
		{"never answered", Exchange{"icmp6/1", ms(10), time.Time{}}, true},
	} {
		err := CheckCommit([]Exchange{tc.x}, commits)
		if (err != nil) != tc.bad {
			t.Errorf("%s: %v, want violation %v", tc.name, err, tc.bad)
		}
		if err != nil && !errors.Is(err, ErrCommit) {
			t.Errorf("%s: %v does not wrap ErrCommit", tc.name, err)
		}
	}
}
