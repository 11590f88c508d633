package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vigil-project/vigil/protocol"
)

// KeySize is the cluster key's length in bytes (the wire format's). On disk
// it is stored as 2*KeySize hex digits and a newline.
const KeySize = protocol.KeySize

// minKeyBytes is the fewest distinct byte values a key may have. 32 random
// bytes have 30 on average and fewer than 16 with a probability of 3e-17,
// so a key below it was typed or zero-filled, not generated.
const minKeyBytes = 16

// Sentinel errors of ReadKeyFile, for errors.Is.
var (
	// ErrKeyFormat: the file is not 64 hex digits and a newline.
	ErrKeyFormat = errors.New("config: malformed key file")
	// ErrKeyPermissions: the file is open to group or others, or owned
	// by another user. Like ssh with a private key, Vigil refuses it: a
	// key others could read authenticates nothing.
	ErrKeyPermissions = errors.New("config: unsafe key file permissions")
	// ErrKeyWeak: the key is well-formed but not random: all zero bytes,
	// one byte repeated, or a short pattern (minKeyBytes).
	ErrKeyWeak = errors.New("config: weak key")
)

// GenerateKey returns KeySize random bytes from the kernel's CSPRNG.
func GenerateKey() ([]byte, error) {
	k := make([]byte, KeySize)
	if _, err := io.ReadFull(rand.Reader, k); err != nil {
		return nil, fmt.Errorf("config: generate key: %w", err)
	}
	return k, nil
}

// WriteKeyFile writes a new random key to path with mode 0600. It never
// replaces an existing file (the error wraps fs.ErrExist): replacing the
// key of a running cluster cuts this node off from its peers. File and
// directory are fsynced so that a crash cannot leave an empty key.
func WriteKeyFile(path string) error {
	key, err := GenerateKey()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("config: write key file: %w", err)
	}
	data := []byte(hex.EncodeToString(key) + "\n")
	werr := func() error {
		// The umask cannot add bits, but a restrictive creation mode is
		// what we depend on: make it explicit.
		if err := f.Chmod(0o600); err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			return err
		}
		return f.Sync()
	}()
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return fmt.Errorf("config: write key file %s: %w", path, werr)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("config: write key file %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadKeyFile reads and checks a key written by WriteKeyFile: a regular
// file, not accessible to group or others, owned by this user or root,
// holding 64 hex digits and a newline.
func ReadKeyFile(path string) ([]byte, error) {
	// O_NONBLOCK so that a FIFO at path cannot block the start; it is
	// rejected below as not a regular file.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("config: key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s: not a regular file", ErrKeyFormat, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s: mode %#o is open to group or others (chmod 600 %s)", ErrKeyPermissions, path, perm, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		if uid := int(sys.Uid); uid != 0 && uid != os.Geteuid() {
			return nil, fmt.Errorf("%w: %s: owned by uid %d, not by root or this user", ErrKeyPermissions, path, uid)
		}
	}
	want := 2*KeySize + 1
	buf := make([]byte, want+1) // one more, to see a file that is too long
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: key file %s: %w", path, err)
	}
	buf = buf[:n]
	if n != want || buf[want-1] != '\n' {
		return nil, fmt.Errorf("%w: %s: want %d hex digits and a newline (%d bytes), got %d bytes; write one with vigil keygen", ErrKeyFormat, path, 2*KeySize, want, sizeOf(st.Size(), n))
	}
	key := make([]byte, KeySize)
	if _, err := hex.Decode(key, buf[:want-1]); err != nil {
		return nil, fmt.Errorf("%w: %s: not hex digits; write one with vigil keygen", ErrKeyFormat, path)
	}
	if why := weakKey(key); why != "" {
		return nil, fmt.Errorf("%w: %s: %s; write a random one with vigil keygen", ErrKeyWeak, path, why)
	}
	return key, nil
}

// weakKey says why key cannot have come from vigil keygen, or returns "".
func weakKey(key []byte) string {
	var seen [256]bool
	distinct := 0
	for _, b := range key {
		if !seen[b] {
			seen[b] = true
			distinct++
		}
	}
	switch {
	case distinct == 1 && key[0] == 0:
		return "every byte is zero"
	case distinct == 1:
		return fmt.Sprintf("every byte is %#02x", key[0])
	case distinct < minKeyBytes:
		return fmt.Sprintf("only %d distinct byte values (a random key has about 30)", distinct)
	}
	return ""
}

// sizeOf reports the file's size, or what was read if stat knows better.
func sizeOf(statSize int64, read int) int64 {
	if statSize > int64(read) {
		return statSize
	}
	return int64(read)
}
