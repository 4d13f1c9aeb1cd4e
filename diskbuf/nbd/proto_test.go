package nbd

import (
	"testing"
)

// Golden protocol vectors, written by hand from the NBD protocol
// specification (doc/proto.md: "Newstyle negotiation", "Fixed newstyle
// negotiation", "Option types", "Request message", "Simple reply
// message", and the INFO extension's NBD_OPT_GO / NBD_REP_INFO layout).
// The export is "disk" (64 69 73 6b), 1 MiB (00100000), with
// transmission flags HAS_FLAGS|SEND_FLUSH|SEND_FUA|SEND_TRIM|
// SEND_WRITE_ZEROES|CAN_MULTI_CONN = 0x016d.

const greeting = `4e42444d41474943 49484156454f5054 0003` // NBDMAGIC IHAVEOPT FIXED_NEWSTYLE|NO_ZEROES

func TestGoldenGoAndTransmission(t *testing.T) {
	srv := newServer(t, Config{})
	if srv.Flags() != 0x016d {
		t.Fatalf("flags %#x, want 0x016d", srv.Flags())
	}
	s := serveOn(t, srv, true)
	expect(t, s.c, hx(greeting), "greeting")
	s.c.Write(hx(`00000003`)) // C_FIXED_NEWSTYLE|C_NO_ZEROES
	// NBD_OPT_GO (7), 12 bytes: name length 4, "disk", 1 request: NBD_INFO_BLOCK_SIZE (3)
	s.c.Write(hx(`49484156454f5054 00000007 0000000c 00000004 6469736b 0001 0003`))
	expect(t, s.c, hx(`
		0003e889045565a9 00000007 00000003 0000000c  0000 0000000000100000 016d
		0003e889045565a9 00000007 00000003 0000000e  0003 00000001 00001000 02000000
		0003e889045565a9 00000007 00000001 00000000`), "NBD_OPT_GO replies: INFO_EXPORT, INFO_BLOCK_SIZE, ACK")

	// WRITE|FUA handle 1 offset 0x200 length 4 "abcd"
	s.c.Write(hx(`25609513 0001 0001 0000000000000001 0000000000000200 00000004 61626364`))
	expect(t, s.c, hx(`67446698 00000000 0000000000000001`), "WRITE reply")
	// READ handle 2 offset 0x200 length 4
	s.c.Write(hx(`25609513 0000 0000 0000000000000002 0000000000000200 00000004`))
	expect(t, s.c, hx(`67446698 00000000 0000000000000002 61626364`), "READ reply")
	// READ past the end: EINVAL (22 = 0x16), no payload
	s.c.Write(hx(`25609513 0000 0000 0000000000000003 0000000000100000 00000001`))
	expect(t, s.c, hx(`67446698 00000016 0000000000000003`), "READ past end")
	// WRITE past the end: ENOSPC (28 = 0x1c); its payload is consumed
	s.c.Write(hx(`25609513 0000 0001 0000000000000004 00000000000ffffe 00000004 61626364`))
	expect(t, s.c, hx(`67446698 0000001c 0000000000000004`), "WRITE past end")
	// FLUSH handle 5
	s.c.Write(hx(`25609513 0000 0003 0000000000000005 0000000000000000 00000000`))
	expect(t, s.c, hx(`67446698 00000000 0000000000000005`), "FLUSH")
	// FLUSH with a length: EINVAL
	s.c.Write(hx(`25609513 0000 0003 0000000000000006 0000000000000000 00000001`))
	expect(t, s.c, hx(`67446698 00000016 0000000000000006`), "FLUSH with length")
	// TRIM handle 7 offset 0x200 length 0x200, then the data reads zero
	s.c.Write(hx(`25609513 0000 0004 0000000000000007 0000000000000200 00000200`))
	expect(t, s.c, hx(`67446698 00000000 0000000000000007`), "TRIM")
	s.c.Write(hx(`25609513 0000 0000 0000000000000008 0000000000000200 00000004`))
	expect(t, s.c, hx(`67446698 00000000 0000000000000008 00000000`), "READ after TRIM")
	// WRITE_ZEROES|NO_HOLE|FUA handle 9
	s.c.Write(hx(`25609513 0003 0006 0000000000000009 0000000000000000 00001000`))
	expect(t, s.c, hx(`67446698 00000000 0000000000000009`), "WRITE_ZEROES")
	// Unknown command 0x42: EINVAL
	s.c.Write(hx(`25609513 0000 0042 000000000000000a 0000000000000000 00000000`))
	expect(t, s.c, hx(`67446698 00000016 000000000000000a`), "unknown command")
	// READ with a flag not negotiated (DF): EINVAL
	s.c.Write(hx(`25609513 0004 0000 000000000000000b 0000000000000000 00000004`))
	expect(t, s.c, hx(`67446698 00000016 000000000000000b`), "READ with DF")
	// READ longer than 32 MiB: EOVERFLOW (75 = 0x4b)
	s.c.Write(hx(`25609513 0000 0000 000000000000000c 0000000000000000 02000001`))
	expect(t, s.c, hx(`67446698 0000004b 000000000000000c`), "READ too long")
	// DISC: no reply, the server closes
	s.c.Write(hx(`25609513 0000 0002 0000000000000000 0000000000000000 00000000`))
	expectEOF(t, s.c, "after DISC")
	if err := s.wait(); err != nil {
		t.Fatalf("server: %v", err)
	}
}

func TestGoldenExportNameWithZeroes(t *testing.T) {
	s := serveOn(t, newServer(t, Config{}), true)
	expect(t, s.c, hx(greeting), "greeting")
	s.c.Write(hx(`00000001`)) // C_FIXED_NEWSTYLE only: the 124 zero bytes follow
	s.c.Write(hx(`49484156454f5054 00000001 00000004 6469736b`))
	want := append(hx(`0000000000100000 016d`), make([]byte, 124)...)
	expect(t, s.c, want, "NBD_OPT_EXPORT_NAME reply")
	s.c.Write(hx(`25609513 0000 0000 0000000000000001 0000000000000000 00000002`))
	expect(t, s.c, hx(`67446698 00000000 0000000000000001 0000`), "READ")
}

func TestGoldenExportNameNoZeroes(t *testing.T) {
	s := serveOn(t, newServer(t, Config{}), true)
	expect(t, s.c, hx(greeting), "greeting")
	s.c.Write(hx(`00000003`))
	s.c.Write(hx(`49484156454f5054 00000001 00000000`)) // default export ""
	expect(t, s.c, hx(`0000000000100000 016d`), "NBD_OPT_EXPORT_NAME reply, no zeroes")
}

func TestGoldenExportNameUnknownCloses(t *testing.T) {
	s := serveOn(t, newServer(t, Config{}), true)
	expect(t, s.c, hx(greeting), "greeting")
	s.c.Write(hx(`00000003 49484156454f5054 00000001 00000004 6e6f7065`)) // "nope"
	expectEOF(t, s.c, "unknown export by NBD_OPT_EXPORT_NAME")
	if err := s.wait(); err == nil {
		t.Fatal("server returned nil for an unknown export")
	}
}

func TestGoldenOptionHaggling(t *testing.T) {
	s := serveOn(t, newServer(t, Config{}), true)
	expect(t, s.c, hx(greeting), "greeting")
	s.c.Write(hx(`00000003`))
	// Unknown option 0x2a: NBD_REP_ERR_UNSUP (2^31+1), no data.
	s.c.Write(hx(`49484156454f5054 0000002a 00000000`))
	expect(t, s.c, hx(`0003e889045565a9 0000002a 80000001 00000000`), "unknown option")
	// NBD_OPT_STRUCTURED_REPLY (8) is not supported: simple replies only.
	s.c.Write(hx(`49484156454f5054 00000008 00000000`))
	expect(t, s.c, hx(`0003e889045565a9 00000008 80000001 00000000`), "NBD_OPT_STRUCTURED_REPLY")
	// NBD_OPT_STARTTLS (5): no TLS.
	s.c.Write(hx(`49484156454f5054 00000005 00000000`))
	expect(t, s.c, hx(`0003e889045565a9 00000005 80000001 00000000`), "NBD_OPT_STARTTLS")
	// Unknown option with data: the data is skipped.
	s.c.Write(hx(`49484156454f5054 00000063 00000003 010203`))
	expect(t, s.c, hx(`0003e889045565a9 00000063 80000001 00000000`), "unknown option with data")
	// NBD_OPT_LIST: one NBD_REP_SERVER "disk", then ACK.
	s.c.Write(hx(`49484156454f5054 00000003 00000000`))
	expect(t, s.c, hx(`
		0003e889045565a9 00000003 00000002 00000008 00000004 6469736b
		0003e889045565a9 00000003 00000001 00000000`), "NBD_OPT_LIST")
	// NBD_OPT_LIST with data: NBD_REP_ERR_INVALID (2^31+3) and a message.
	s.c.Write(hx(`49484156454f5054 00000003 00000001 00`))
	msg := "NBD_OPT_LIST takes no data"
	expect(t, s.c, append(hx(`0003e889045565a9 00000003 80000003 0000001a`), msg...), "NBD_OPT_LIST with data")
	// NBD_OPT_INFO (6) for "nope": NBD_REP_ERR_UNKNOWN (2^31+6).
	s.c.Write(hx(`49484156454f5054 00000006 0000000a 00000004 6e6f7065 0000`))
	expect(t, s.c, append(hx(`0003e889045565a9 00000006 80000006 0000000e`), "no such export"...), "NBD_OPT_INFO unknown export")
	// NBD_OPT_INFO whose request count disagrees with its length: INVALID.
	s.c.Write(hx(`49484156454f5054 00000006 0000000a 00000004 6469736b 0001`))
	m2 := "information request count does not match option length"
	expect(t, s.c, append(hx(`0003e889045565a9 00000006 80000003 00000036`), m2...), "NBD_OPT_INFO bad count")
	// NBD_OPT_INFO for the default export asking NAME (1): EXPORT, NAME,
	// BLOCK_SIZE, ACK; haggling goes on.
	s.c.Write(hx(`49484156454f5054 00000006 00000008 00000000 0001 0001`))
	expect(t, s.c, hx(`
		0003e889045565a9 00000006 00000003 0000000c  0000 0000000000100000 016d
		0003e889045565a9 00000006 00000003 00000006  0001 6469736b
		0003e889045565a9 00000006 00000003 0000000e  0003 00000001 00001000 02000000
		0003e889045565a9 00000006 00000001 00000000`), "NBD_OPT_INFO")
	// NBD_OPT_ABORT: ACK, then the server closes.
	s.c.Write(hx(`49484156454f5054 00000002 00000000`))
	expect(t, s.c, hx(`0003e889045565a9 00000002 00000001 00000000`), "NBD_OPT_ABORT")
	expectEOF(t, s.c, "after NBD_OPT_ABORT")
	if err := s.wait(); err != nil {
		t.Fatalf("server after abort: %v", err)
	}
}

func TestGoldenBadClientFlagsClose(t *testing.T) {
	s := serveOn(t, newServer(t, Config{}), true)
	expect(t, s.c, hx(greeting), "greeting")
	s.c.Write(hx(`00000004`))
	expectEOF(t, s.c, "unknown client flag")
}

func TestGoldenBadRequestMagicCloses(t *testing.T) {
	s := serveOn(t, newServer(t, Config{}), false)
	s.c.Write(hx(`25609514 0000 0000 0000000000000001 0000000000000000 00000001`))
	expectEOF(t, s.c, "bad request magic")
	if err := s.wait(); err == nil {
		t.Fatal("server returned nil for a bad magic")
	}
}

func TestGoldenOversizedOption(t *testing.T) {
	s := serveOn(t, newServer(t, Config{}), true)
	expect(t, s.c, hx(greeting), "greeting")
	// An option declaring 4 GiB of data is never allocated: hard disconnect.
	s.c.Write(hx(`00000003 49484156454f5054 00000007 ffffffff`))
	expectEOF(t, s.c, "4 GiB option")
}

func TestFrameRoundTrip(t *testing.T) {
	r := Request{Flags: CmdFlagFUA, Type: CmdWrite, Handle: 0x0102030405060708, Offset: 0x1122334455667788, Length: 0x99aabbcc}
	b := AppendRequest(nil, r)
	if want := hx(`25609513 0001 0001 0102030405060708 1122334455667788 99aabbcc`); string(b) != string(want) {
		t.Fatalf("request % x, want % x", b, want)
	}
	if got, err := ParseRequest(b); err != nil || got != r {
		t.Fatalf("ParseRequest = %+v, %v", got, err)
	}
	rep := AppendReply(nil, Reply{Error: EIO, Handle: 7})
	if want := hx(`67446698 00000005 0000000000000007`); string(rep) != string(want) {
		t.Fatalf("reply % x, want % x", rep, want)
	}
	if _, err := ParseReply(hx(`668e33ef 0001 0000 0000000000000007`)); err == nil {
		t.Fatal("structured reply magic accepted as a simple reply")
	}
	if _, err := ParseRequest(b[:27]); err == nil {
		t.Fatal("short request accepted")
	}
}

func TestGoldenLongOptionSkipped(t *testing.T) {
	s := serveOn(t, newServer(t, Config{}), true)
	expect(t, s.c, hx(greeting), "greeting")
	// 8 KiB of option data (over the 4 KiB bound, under the 1 MiB
	// disconnect): skipped unallocated, NBD_REP_ERR_TOO_BIG (2^31+9).
	s.c.Write(hx(`00000003 49484156454f5054 00000006 00002000`))
	s.c.Write(make([]byte, 0x2000))
	expect(t, s.c, append(hx(`0003e889045565a9 00000006 80000009 00000014`), "option data too long"...), "long option")
	// Haggling goes on.
	s.c.Write(hx(`49484156454f5054 0000002a 00000000`))
	expect(t, s.c, hx(`0003e889045565a9 0000002a 80000001 00000000`), "next option")
}

func TestTooManyOptionsClose(t *testing.T) {
	s := serveOn(t, newServer(t, Config{}), true)
	expect(t, s.c, hx(greeting), "greeting")
	s.c.Write(hx(`00000003`))
	go func() {
		for i := 0; i <= maxOptions; i++ {
			s.c.Write(hx(`49484156454f5054 0000002a 00000000`))
		}
	}()
	for i := 0; i < maxOptions; i++ {
		expect(t, s.c, hx(`0003e889045565a9 0000002a 80000001 00000000`), "option")
	}
	expectEOF(t, s.c, "option past the bound")
}
