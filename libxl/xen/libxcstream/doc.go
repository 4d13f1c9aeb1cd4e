// Package libxcstream reads and writes Xen's migration streams: the libxc
// domain image format (docs/specs/libxc-migration-stream.pandoc, version
// 3 as Xen 4.17 writes it) and the libxl stream that wraps it
// (libxl-migration-stream.pandoc, version 2). It is pure Go and builds
// without the xen tag, so everything route (a) does to a stream is tested
// without Xen.
//
// Route (a) of the Xen backend (see package xen) lets libxenguest's
// xc_domain_save capture a PV guest in a checkpointed (REMUS) stream,
// because only libxc knows how to canonicalise a PV guest's page tables
// and vCPU state. This package is the seam between that stream and the
// engine's contract:
//
//   - On the primary, a [Reader] parses the pipe xc_domain_save writes,
//     and a [Capture] gathers records up to each CHECKPOINT: PAGE_DATA
//     records become (pfn, type, page) entries, latest copy wins, which the
//     engine reads as ordinary pages (so zero-page, XOR-delta and codec
//     compression apply); every other record (X86_PV_INFO, P2M_FRAMES,
//     vCPU contexts, SHARED_INFO, TSC_INFO...) becomes an opaque
//     libxl.State blob holding the framed record, plus three private
//     blobs: the stream headers, where the pages go, and the pages' types.
//   - On the standby, an [Encoder] turns each committed checkpoint (pages
//     and blobs) back into a valid libxl+libxc stream for
//     libxl_domain_create_restore with checkpointed_stream=REMUS.
//
// Walk-through:
//
//	r := libxcstream.NewReader(pipe)
//	hdr, _ := r.ReadHeader()
//	c := libxcstream.NewCapture()
//	c.SetHeader(hdr)                  // first capture of the stream only
//	for {
//		rec, _ := r.Next()
//		if done, _ := c.Add(rec); done { break } // CHECKPOINT
//	}
//	pfns := c.AppendPFNs(nil)         // what the engine ships as pages
//	states := c.AppendStates(nil)     // what it ships as state blobs
//	// ... on the standby, once the epoch is committed:
//	var enc libxcstream.Encoder
//	out, _ := enc.AppendCheckpoint(nil, pfns, pages, states)
//	restoreFD.Write(out)
package libxcstream
