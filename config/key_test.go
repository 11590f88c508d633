package config

import (
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteKeyFile(t *testing.T) {
	// A permissive umask must not widen the file's mode.
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })

	path := filepath.Join(t.TempDir(), "cluster.key")
	if err := WriteKeyFile(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode() != 0o600 {
		t.Errorf("mode %v, want -rw-------", st.Mode())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 65 || data[64] != '\n' {
		t.Fatalf("file is %q, want 64 hex digits and a newline", data)
	}
	key, err := ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(key) != string(data[:64]) {
		t.Errorf("ReadKeyFile = %x, file holds %s", key, data[:64])
	}

	// O_EXCL: an existing key is never replaced, and stays as it was.
	err = WriteKeyFile(path)
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteKeyFile: %v, want fs.ErrExist", err)
	}
	again, _ := os.ReadFile(path)
	if string(again) != string(data) {
		t.Error("the existing key was changed")
	}

	// Two keys differ: the generator is not constant.
	other := filepath.Join(t.TempDir(), "other.key")
	if err := WriteKeyFile(other); err != nil {
		t.Fatal(err)
	}
	k2, err := ReadKeyFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if string(k2) == string(key) {
		t.Error("two generated keys are equal")
	}
}

func TestWriteKeyFileMissingDir(t *testing.T) {
	err := WriteKeyFile(filepath.Join(t.TempDir(), "no", "such", "dir", "k"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want ErrNotExist", err)
	}
}

func TestReadKeyFileRejects(t *testing.T) {
	dir := t.TempDir()
	// 32 distinct bytes, 00 01 .. 1f: not random, but no weaker than a random key looks.
	var seq []byte
	for i := range KeySize {
		seq = append(seq, byte(i))
	}
	good := hex.EncodeToString(seq) + "\n"
	cases := []struct {
		name     string
		content  string
		mode     os.FileMode
		sentinel error
		msg      string
	}{
		{"too short", "abcd\n", 0o600, ErrKeyFormat, "got 5 bytes"},
		{"too long", good + "00", 0o600, ErrKeyFormat, "got 67 bytes"},
		{"no newline", strings.Repeat("ab", 32) + "a", 0o600, ErrKeyFormat, "got 65 bytes"},
		{"not hex", strings.Repeat("zz", 32) + "\n", 0o600, ErrKeyFormat, "not hex digits"},
		{"empty", "", 0o600, ErrKeyFormat, "got 0 bytes"},
		{"group readable", good, 0o640, ErrKeyPermissions, "mode 0640"},
		{"world readable", good, 0o604, ErrKeyPermissions, "mode 0604"},
		{"group writable", good, 0o620, ErrKeyPermissions, "mode 0620"},
		{"all zero", strings.Repeat("00", 32) + "\n", 0o600, ErrKeyWeak, "every byte is zero"},
		{"one byte repeated", strings.Repeat("ab", 32) + "\n", 0o600, ErrKeyWeak, "every byte is 0xab"},
		{"short pattern", strings.Repeat("0011223344556677", 4) + "\n", 0o600, ErrKeyWeak, "only 8 distinct byte values"},
		{"15 distinct bytes", hex.EncodeToString(seq[:15]) + strings.Repeat("00", 17) + "\n", 0o600, ErrKeyWeak, "only 15 distinct"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := ReadKeyFile(path)
			if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), path) {
				t.Errorf("got %v, want %v mentioning %q and the path", err, tc.sentinel, tc.msg)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		path := filepath.Join(dir, "good")
		if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
			t.Fatal(err)
		}
		key, err := ReadKeyFile(path)
		if err != nil || len(key) != KeySize || key[31] != 0x1f {
			t.Errorf("got %x, %v", key, err)
		}
	})
	t.Run("16 distinct bytes", func(t *testing.T) {
		path := filepath.Join(dir, "sixteen")
		data := hex.EncodeToString(seq[:16]) + hex.EncodeToString(seq[:16]) + "\n"
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadKeyFile(path); err != nil {
			t.Errorf("a key with 16 distinct byte values: %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := ReadKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		sub := filepath.Join(dir, "sub")
		if err := os.Mkdir(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadKeyFile(sub); !errors.Is(err, ErrKeyFormat) {
			t.Errorf("got %v, want ErrKeyFormat", err)
		}
	})
	t.Run("fifo does not block", func(t *testing.T) {
		fifo := filepath.Join(dir, "fifo")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadKeyFile(fifo); !errors.Is(err, ErrKeyFormat) {
			t.Errorf("got %v, want ErrKeyFormat", err)
		}
	})
	t.Run("owned by another user", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to chown a file to another user")
		}
		path := filepath.Join(dir, "foreign")
		if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		// Root's own files pass; a file owned by nobody does not, even for root.
		if _, err := ReadKeyFile(path); !errors.Is(err, ErrKeyPermissions) {
			t.Errorf("got %v, want ErrKeyPermissions", err)
		}
	})
}
