// Package wire implements the xl-kemari replication protocol specified in
// docs/protocol.md: the stream header, the framed and checksummed records a
// primary and a standby exchange, the epoch frames that carry one checkpoint
// each, and the page codec (zero pages, XOR against the last sent copy,
// LZ4 or zstd) that keeps a checkpoint small on the link.
//
// The package does no I/O of its own beyond the io.Writer and io.Reader it is
// given, keeps no clock and starts no goroutines; the drivers in package
// checkpoint own connections, timers and the epoch state machine.
//
// # Walk-through
//
// The primary writes its direction like this:
//
//	w := wire.NewWriter(conn)
//	w.WriteHeader(0)
//	w.Write(&wire.Hello{Version: wire.Version, Role: wire.RolePrimary, ...})
//	enc := wire.NewPageEncoder(wire.DefaultCodec, 64<<20)
//	w.Write(&wire.EpochBegin{Epoch: k})
//	for each batch of up to 1024 dirty pages {
//		p, err := enc.Encode(pfns, data)
//		w.Write(p)
//	}
//	w.Write(&wire.State{Kind: kind, Data: blob})
//	w.Write(&wire.EpochEnd{Epoch: k}) // the Writer fills counts and digest
//	w.Flush()
//
// and the standby reads it:
//
//	r := wire.NewReader(conn, wire.DefaultLimits())
//	for {
//		rec, err := r.Next()
//		switch rec := rec.(type) {
//		case *wire.Pages:
//			pfns, err := wire.DecodePages(rec, replica.Latest, staging)
//		case *wire.EpochEnd:
//			// counts and digest already verified: commit, then Ack
//		}
//	}
//
// Next returns errors as *FrameError, which names the record and its offset
// and wraps one of the sentinels (ErrCRC, ErrSequence, ...). Epoch errors
// (EpochError reports them) condemn only the open epoch; every other error
// ends the stream.
//
// Records that Next returns, and their byte slices, alias the Reader's
// buffers until the following call. PAGES records built by a PageEncoder
// alias its buffers (or the caller's page data) until its next Encode.
package wire
