package statefile

import (
	"log/slog"
	"time"
)

// Writer saves one process's state file and tells the operator about
// failed writes once per episode (a full or read-only disk fails every
// attempt; a line per attempt would flood the journal): event=persist_error
// at the first failure, event=persist_recovered when a write succeeds
// again. The caller retries at its own pace (every tick) and must send
// nothing that depends on the state while Save fails.
type Writer struct {
	Path  string
	Owner Owner
	What  string // for the log: "locator state", "node state"
	Log   *slog.Logger

	failing  bool
	since    time.Time
	attempts uint64 // failed attempts in this episode
	errors   uint64 // failed attempts since start
	lastErr  string
}

// Save writes v durably (Save) and logs the start and the end of a failure
// episode.
func (w *Writer) Save(v any) error {
	err := Save(w.Path, w.Owner, v)
	if err != nil {
		w.errors++
		w.attempts++
		w.lastErr = err.Error()
		if !w.failing {
			w.failing, w.since = true, time.Now()
			w.Log.Error("cannot persist "+w.What+"; sending nothing that depends on it until it is on disk, retrying",
				"event", "persist_error", "path", w.Path, "err", err)
		}
		return err
	}
	if w.failing {
		w.Log.Warn(w.What+" persisted again; sending resumes", "event", "persist_recovered", "path", w.Path,
			"failed_ms", time.Since(w.since).Milliseconds(), "failed_attempts", w.attempts)
		w.failing, w.attempts, w.lastErr = false, 0, ""
	}
	return nil
}

// Status is the writer's state for reports: whether the last write failed,
// failed writes since start, and the last error while failing.
func (w *Writer) Status() (failing bool, errors uint64, lastErr string) {
	return w.failing, w.errors, w.lastErr
}
