package e2e

import "testing"

// The explain matchers take the events they list in either log format,
// and nothing else (an event name that merely starts like one included).
func TestExplainMatchers(t *testing.T) {
	for _, c := range []struct {
		line string
		want bool
	}{
		{`time=2026-12-05T05:00:24.163Z level=INFO msg="became standby" component=nodemanager event=role role=standby`, true},
		{`time=2026-12-05T05:00:24.163Z level=WARN msg=x event=switchover_refused from=b`, true},
		{`time=2026-12-05T05:00:24.163Z level=INFO msg=x event=exit`, true},
		{`time=2026-12-05T05:00:24.163Z level=INFO msg=x event=hook hook=active`, false},
		{`time=2026-12-05T05:00:24.163Z level=INFO msg=x event=roles`, false},
	} {
		if got := explainRE.MatchString(c.line); got != c.want {
			t.Errorf("text %q: matched %v, want %v", c.line, got, c.want)
		}
	}
	for _, c := range []struct {
		line string
		want bool
	}{
		{`{"time":"2026-12-05T05:00:24.163Z","level":"WARN","msg":"x","event":"fence","process":"nodemanager"}`, true},
		{`{"time":"2026-12-05T05:00:24.163Z","level":"WARN","msg":"x","event":"loop_slow"}`, true},
		{`{"time":"2026-12-05T05:00:24.163Z","level":"INFO","msg":"x","event":"hook"}`, false},
		{`{"time":"2026-12-05T05:00:24.163Z","level":"INFO","msg":"x","event":"fence_check"}`, false},
	} {
		if got := ExplainJSON.MatchString(c.line); got != c.want {
			t.Errorf("json %q: matched %v, want %v", c.line, got, c.want)
		}
	}
}
