package conf

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// fuzzInput decodes a file of the go fuzz corpus format ("go test fuzz v1"
// followed by one []byte(...) or string(...) line) into its input.
//
//lint:ignore U1000 used by the libxlutil conformance test (build tag xen)
func fuzzInput(t testing.TB, b []byte) []byte {
	t.Helper()
	lines := strings.SplitN(string(b), "\n", 3)
	if len(lines) < 2 || lines[0] != "go test fuzz v1" {
		t.Fatalf("not a fuzz corpus file: %q", b)
	}
	arg := strings.TrimSpace(lines[1])
	for _, prefix := range []string{"[]byte(", "string("} {
		if strings.HasPrefix(arg, prefix) && strings.HasSuffix(arg, ")") {
			s, err := strconv.Unquote(arg[len(prefix) : len(arg)-1])
			if err != nil {
				t.Fatalf("corpus file: %v", err)
			}
			return []byte(s)
		}
	}
	t.Fatalf("corpus file: unsupported value %q", arg)
	return nil
}

// dump renders a value compactly, strings quoted Go-style.
func dump(v *Value) string {
	if v == nil {
		return "<unset>"
	}
	if v.Kind == KindString {
		return fmt.Sprintf("%q", v.Str)
	}
	parts := make([]string, len(v.List))
	for i, e := range v.List {
		parts[i] = dump(e)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
