package nfqueue

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/xl-kemari/xl-kemari/netbuf/auto/host"
)

// CleanupStale removes what a crashed run of this backend left in the
// network namespace at netnsPath ("" = this one): tagged iptables and
// ip6tables rules, XLK- ebtables chains and their jumps, and xlki/xlko
// veths, for every queue number that no live process has bound. Setups
// of running holders (their queue is bound) are left alone.
func CleanupStale(netnsPath string) error {
	bound, err := boundQueues(netnsPath)
	if err != nil {
		return err
	}
	stale := func(num string) bool {
		n, err := strconv.Atoi(num)
		return err == nil && !bound[n]
	}
	var errs []error
	run := func(argv ...string) {
		if _, err := host.Run(netnsPath, argv...); err != nil {
			errs = append(errs, err)
		}
	}
	for _, tool := range []string{"iptables", "ip6tables"} {
		if len(host.MissingTools(tool)) > 0 {
			continue // never installed: this backend cannot have used it
		}
		// filter: where earlier builds put their rules (FORWARD, INPUT).
		for _, table := range []string{ruleTable, "filter"} {
			out, err := host.Run(netnsPath, tool, "-w", "-t", table, "-S")
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for _, line := range strings.Split(string(out), "\n") {
				f := strings.Fields(line)
				if len(f) < 2 || f[0] != "-A" {
					continue
				}
				num, ok := taggedQueue(f)
				if !ok || !stale(num) {
					continue
				}
				for i := range f {
					f[i] = strings.Trim(f[i], `"`)
				}
				run(append([]string{tool, "-w", "-t", table, "-D"}, f[1:]...)...)
			}
		}
	}
	// Without ebtables installed, no chain of ours can exist.
	out, err := []byte(nil), error(nil)
	if len(host.MissingTools("ebtables")) == 0 {
		out, err = host.Run(netnsPath, "ebtables", "-L")
	}
	if err != nil {
		errs = append(errs, err)
	} else {
		chain := ""
		var chains []string
		for _, line := range strings.Split(string(out), "\n") {
			if c, ok := strings.CutPrefix(line, "Bridge chain: "); ok {
				chain, _, _ = strings.Cut(c, ",")
				if n, ok := strings.CutPrefix(chain, chainPrefix); ok && stale(n) {
					chains = append(chains, chain)
				}
				continue
			}
			f := strings.Fields(line)
			if len(f) == 0 || !strings.HasPrefix(line, "-") {
				continue
			}
			if strings.HasPrefix(chain, chainPrefix) {
				continue // flushed with the chain
			}
			if staleEbRule(f, stale) {
				run(append([]string{"ebtables", "-D", chain}, f...)...)
			}
		}
		for _, c := range chains {
			run("ebtables", "-F", c)
			run("ebtables", "-X", c)
		}
	}
	out, err = host.Run(netnsPath, "ip", "-o", "link", "show")
	if err != nil {
		errs = append(errs, err)
	} else {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if n, ok := strings.CutPrefix(name, injOutPrefix); ok && stale(n) {
				run("ip", "link", "del", name) // takes its xlki peer along
			}
		}
	}
	return errors.Join(errs...)
}

// taggedQueue returns the queue number in an iptables -S rule carrying
// this backend's comment tag.
func taggedQueue(f []string) (string, bool) {
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "--comment" {
			c := strings.Trim(f[i+1], `"`)
			if rest, ok := strings.CutPrefix(c, Tag+"q"); ok {
				num, _, _ := strings.Cut(rest, ":")
				return num, true
			}
		}
	}
	return "", false
}

// staleEbRule reports whether an ebtables -L rule jumps to a stale XLK-
// chain or names a stale xlki port.
func staleEbRule(f []string, stale func(string) bool) bool {
	for i := 0; i+1 < len(f); i++ {
		switch f[i] {
		case "-j":
			if n, ok := strings.CutPrefix(f[i+1], chainPrefix); ok && stale(n) {
				return true
			}
		case "-i", "-o":
			if n, ok := strings.CutPrefix(f[i+1], injInPrefix); ok && stale(n) {
				return true
			}
		}
	}
	return false
}

// boundQueues lists the queue numbers bound in the namespace.
func boundQueues(netnsPath string) (map[int]bool, error) {
	out := map[int]bool{}
	err := host.InNetNS(netnsPath, func() error {
		b, err := readFileIfExists("/proc/thread-self/net/netfilter/nfnetlink_queue")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					out[n] = true
				}
			}
		}
		return nil
	})
	return out, err
}

func readFileIfExists(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}
