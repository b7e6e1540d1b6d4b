package tikvdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"
)

const (
	// tsoWindowMs is how far past the last timestamp the saved limit runs,
	// as in PD: the file is written about once per window instead of once
	// per timestamp, and a restart starts above the limit.
	tsoWindowMs = 3000
	// logicalBits is the width of a timestamp's logical part (oracle's
	// physical<<18 | logical).
	logicalBits = 18
)

// tsoAllocator hands out strictly increasing timestamps that never go
// backwards across restarts, even if the wall clock does: the test
// cluster's own pd.Client reads the wall clock alone.
type tsoAllocator struct {
	mu   sync.Mutex
	path string
	// physical (ms) and logical are the last timestamp handed out.
	physical, logical int64
	// limit is durable in path. Invariant: physical < limit once a
	// timestamp has been handed out.
	limit int64
}

func openTSO(path string) (*tsoAllocator, error) {
	a := &tsoAllocator{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("tikvdev: %w", err)
	case len(b) != 8:
		return nil, fmt.Errorf("tikvdev: %s holds %d bytes, want 8", path, len(b))
	default:
		// Every timestamp of an earlier run is below (limit, 0).
		a.limit = int64(binary.BigEndian.Uint64(b))
		a.physical = a.limit
	}
	return a, nil
}

// next reserves count timestamps and returns the largest, as PD's Tso
// stream does (the client counts back count-1 from its logical part).
func (a *tsoAllocator) next(count uint32) (physical, logical int64, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now := time.Now().UnixMilli(); now > a.physical {
		a.physical, a.logical = now, 0
	}
	if a.logical+int64(count) >= 1<<logicalBits {
		a.physical, a.logical = a.physical+1, 0
	}
	if a.physical >= a.limit {
		if err := a.save(a.physical + tsoWindowMs); err != nil {
			return 0, 0, err
		}
	}
	a.logical += int64(count)
	return a.physical, a.logical, nil
}

// save makes limit durable before any timestamp below it is handed out. A
// crash leaves either the old file or the new one (rename is atomic).
func (a *tsoAllocator) save(limit int64) error {
	tmp := a.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("tikvdev: save tso limit: %w", err)
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(limit))
	_, err = f.Write(b[:])
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, a.path)
	}
	if err != nil {
		return fmt.Errorf("tikvdev: save tso limit: %w", err)
	}
	a.limit = limit
	return nil
}
