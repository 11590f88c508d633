// Package statefile persists small pieces of protocol state (epochs,
// incarnations, grants) so that a restart never reuses them: write to a
// temporary file, fsync it, rename it over the old one, fsync the directory.
// A crash at any point leaves either the old or the new state, never a mix.
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Save writes v as JSON to path durably.
func Save(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("statefile: encode %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("statefile: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("statefile: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("statefile: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("statefile: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("statefile: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("statefile: rename to %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("statefile: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("statefile: fsync %s: %w", dir, err)
	}
	return nil
}

// Load reads path into v. A missing file leaves v untouched and returns
// (false, nil): a first start. A file that does not parse is an error: the
// caller must not guess an epoch.
func Load(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("statefile: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("statefile: %s is corrupt (%v); refusing to guess the protocol state: move it away only if every node of the cluster is stopped", path, err)
	}
	return true, nil
}
