package host

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	f, err := ParseConfig(strings.NewReader("# c\nCONFIG_IFB=m\nCONFIG_VETH=y\n# CONFIG_NET_SCH_PLUG is not set\nCONFIG_X=\"s\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.Missing("CONFIG_IFB", "CONFIG_NET_SCH_PLUG", "CONFIG_VETH", "CONFIG_X"), []string{"CONFIG_NET_SCH_PLUG", "CONFIG_X"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Missing = %v, want %v", got, want)
	}
}

func TestRunErrorNamesCommand(t *testing.T) {
	_, err := Run("", "false", "--flag")
	if !errors.Is(err, ErrCommand) || !strings.Contains(err.Error(), "false --flag") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Run(""); !errors.Is(err, ErrCommand) {
		t.Fatalf("empty argv: %v", err)
	}
}

func TestMissingTools(t *testing.T) {
	if got := MissingTools("sh", "no-such-tool-xlk"); !reflect.DeepEqual(got, []string{"no-such-tool-xlk"}) {
		t.Fatalf("got %v", got)
	}
}
