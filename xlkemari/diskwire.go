package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xl-kemari/xl-kemari/diskbuf"
	"github.com/xl-kemari/xl-kemari/diskbuf/nbd"
	"github.com/xl-kemari/xl-kemari/libxl"
	"github.com/xl-kemari/xl-kemari/libxl/sim"
)

// leasedDisks is start's side of a domain's disk fronts: each front's
// device, leased and served here by an NBD server over one disk of a
// replicate-mode diskbuf.Primary, which the engine drives (Barrier
// quiesces every server, Open resumes them) and whose writes it ships
// with each epoch.
type leasedDisks struct {
	prim     *diskbuf.Primary
	sectors  []uint64 // per disk of the domain; 0 for disks not served by a front
	leases   []*frontLease
	srvs     []*nbd.Server
	files    []*os.File
	closeDev func()
}

// multiGate quiesces several servers as one gate.
type multiGate []*nbd.Server

func (g multiGate) Quiesce(ctx context.Context) (uint64, error) {
	var e uint64
	for i, s := range g {
		var err error
		if e, err = s.Quiesce(ctx); err != nil {
			for _, q := range g[:i] {
				q.Resume()
			}
			return 0, err
		}
	}
	return e, nil
}

func (g multiGate) Resume() {
	for _, s := range g {
		s.Resume()
	}
}

// leaseDisks leases the front of every writable block-kemari disk in
// disks (the domain's, in order) and serves its device from a Primary
// over the front's store. Disks without a front get an empty store (the
// engine copies nothing of them). On error every lease taken is given
// back.
func leaseDisks(runDir string, disks []libxl.Disk, openDev func() (nbd.Device, func(), error), acfg nbd.AttachConfig) (_ *leasedDisks, err error) {
	l := &leasedDisks{sectors: make([]uint64, len(disks))}
	defer func() {
		if err != nil {
			l.end()
		}
	}()
	stores := make([]diskbuf.Store, len(disks))
	type served struct {
		i     int
		lease *frontLease
	}
	var todo []served
	for i, d := range disks {
		stores[i] = diskbuf.NewMemStore(0)
		if !d.Writable || !frontDisk(d) {
			continue
		}
		name, err := frontName(d.Target)
		if err != nil {
			return nil, err
		}
		fl, err := leaseFront(runDir, name)
		if err != nil {
			return nil, err
		}
		l.leases = append(l.leases, fl)
		f, err := os.OpenFile(fl.Resp.Store, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("disk %s: store: %w", name, err)
		}
		l.files = append(l.files, f)
		if fl.Resp.Size <= 0 || fl.Resp.Size%diskbuf.SectorSize != 0 {
			return nil, fmt.Errorf("disk %s: the front's store %s is %d bytes", name, fl.Resp.Store, fl.Resp.Size)
		}
		stores[i] = f
		l.sectors[i] = uint64(fl.Resp.Size / diskbuf.SectorSize)
		todo = append(todo, served{i, fl})
	}
	l.prim = diskbuf.NewPrimary(diskbuf.Replicate, stores)
	for _, s := range todo {
		srv, err := nbd.NewServer(nbd.Config{Name: s.lease.name, IOFlusher: true,
			Backend: nbd.StoreBackend{S: l.prim.Device(s.i), Bytes: s.lease.Resp.Size}})
		if err != nil {
			return nil, err
		}
		l.srvs = append(l.srvs, srv)
	}
	l.prim.SetGate(multiGate(l.srvs))
	dev, closeDev, err := openDev()
	if err != nil {
		return nil, err
	}
	l.closeDev = closeDev
	for k, s := range todo {
		cfg := acfg
		cfg.BackendID = frontBackendID(s.lease.name)
		if err := s.lease.Serve(dev, l.srvs[k], cfg); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// end drains this process's servers and gives every device back to its
// front.
func (l *leasedDisks) end() error {
	if l == nil {
		return nil
	}
	var errs []error
	for _, s := range l.srvs {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s.Quiesce(ctx) // answer what was admitted before the sockets go
		cancel()
	}
	for _, fl := range l.leases {
		errs = append(errs, fl.End())
	}
	for _, f := range l.files {
		errs = append(errs, f.Close())
	}
	l.leases, l.files, l.srvs = nil, nil, nil
	if l.closeDev != nil {
		l.closeDev()
		l.closeDev = nil
	}
	return errors.Join(errs...)
}

// standbyDisks opens this host's copy of each disk of a replica, for a
// standby on a real hypervisor: a writable disk served by the NBD front
// (its target a disk name) has its copy at diskDir/NAME, a file (made if
// missing) or a block device (a symlink to one), of the primary's size;
// it is zeroed, since the initial copy skips the primary's zero ranges.
// Other disks get an empty store. The replica's block-kemari serves the
// same file once libxl restores the replica.
func standbyDisks(diskDir string) func(libxl.DomainInfo) ([]diskbuf.Store, error) {
	return func(info libxl.DomainInfo) ([]diskbuf.Store, error) {
		var out []diskbuf.Store
		fail := func(err error) ([]diskbuf.Store, error) {
			for _, s := range out {
				if f, ok := s.(*os.File); ok {
					f.Close()
				}
			}
			return nil, err
		}
		for _, d := range info.Disks {
			name, nerr := frontName(d.Target)
			if !d.Writable || d.Sectors == 0 || nerr != nil {
				out = append(out, diskbuf.NewMemStore(int64(d.Sectors)*diskbuf.SectorSize))
				continue
			}
			f, err := openCopy(filepath.Join(diskDir, name), int64(d.Sectors)*diskbuf.SectorSize)
			if err != nil {
				return fail(fmt.Errorf("disk %s: %w", name, err))
			}
			out = append(out, f)
		}
		return out, nil
	}
}

// standbyDisksOn is standbyDisks on a real hypervisor, nil (fresh memory
// stores per replica) on the simulator.
func standbyDisksOn(hv libxl.Hypervisor, diskDir string) func(libxl.DomainInfo) ([]diskbuf.Store, error) {
	if hv.Name() == sim.BackendName {
		return nil
	}
	return standbyDisks(diskDir)
}

// openCopy opens (or creates) the standby's copy at path, checks its size
// against size and zeroes it.
func openCopy(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the standby's copy: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode().IsRegular() {
		if st.Size() == 0 {
			if err := f.Truncate(size); err != nil {
				f.Close()
				return nil, fmt.Errorf("the standby's copy %s: %w", path, err)
			}
		} else if st.Size() != size {
			f.Close()
			return nil, fmt.Errorf("the standby's copy %s is %d bytes, the primary's disk %d", path, st.Size(), size)
		}
		// Zero it, keeping the size (the replica's front may have it open).
		if err := zeroCopy(f, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, size); err != nil {
			f.Close()
			return nil, fmt.Errorf("the standby's copy %s: zero: %w", path, err)
		}
		return f, nil
	}
	if st.Mode()&os.ModeDevice == 0 {
		f.Close()
		return nil, fmt.Errorf("the standby's copy %s is neither a file nor a block device", path)
	}
	n, err := f.Seek(0, 2)
	if err != nil || n != size {
		f.Close()
		return nil, fmt.Errorf("the standby's copy %s is %d bytes (%v), the primary's disk %d", path, n, err, size)
	}
	if err := zeroCopy(f, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, size); err != nil {
		f.Close()
		return nil, fmt.Errorf("the standby's copy %s: zero: %w", path, err)
	}
	return f, nil
}

// zeroCopy zeroes f's first size bytes with fallocate(mode), else by
// writing zeroes.
func zeroCopy(f *os.File, mode uint32, size int64) error {
	err := unix.Fallocate(int(f.Fd()), mode, 0, size)
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
		return err
	}
	z := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(z)) {
		if _, err := f.WriteAt(z[:min(int64(len(z)), size-off)], off); err != nil {
			return err
		}
	}
	return nil
}
