package supervisor

import (
	"fmt"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"

	"github.com/vigil-project/vigil/config"
	"github.com/vigil-project/vigil/internal/ctlmsg"
	"github.com/vigil-project/vigil/internal/execshim"
)

// credentials are a process's configured user and group as numbers.
type credentials struct {
	uid, gid *uint32
	groups   []uint32
}

// lookupCredentials resolves the user and group of p through NSS. It may
// block (LDAP, sssd): the supervisor calls it off its loop.
func lookupCredentials(p *config.Process) (*credentials, error) {
	c := &credentials{}
	if p.User != "" {
		u, err := user.Lookup(p.User)
		if err != nil {
			return nil, fmt.Errorf("supervisor: process %s: user %q: %w", p.Name, p.User, err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		uid32, gid32 := uint32(uid), uint32(gid)
		c.uid, c.gid = &uid32, &gid32
		gids, err := u.GroupIds()
		if err == nil {
			for _, g := range gids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					c.groups = append(c.groups, uint32(n))
				}
			}
		}
	}
	if p.Group != "" {
		g, err := user.LookupGroup(p.Group)
		if err != nil {
			return nil, fmt.Errorf("supervisor: process %s: group %q: %w", p.Name, p.Group, err)
		}
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		gid32 := uint32(gid)
		c.gid = &gid32
	}
	return c, nil
}

// buildSpec resolves the path of a process and takes its user and group
// from c (looked up before, off the loop; nil for neither).
func buildSpec(p *config.Process, c *credentials) (*execshim.Spec, error) {
	if (p.User != "" || p.Group != "") && c == nil {
		return nil, fmt.Errorf("supervisor: process %s: user/group not resolved", p.Name)
	}
	path, err := execshim.LookPath(p.Command[0])
	if err != nil {
		return nil, err
	}
	s := &execshim.Spec{Path: path, Argv: p.Command, Rlimits: p.Rlimits, StopSignal: int(signalNumber(p.StopSignal))}
	if c != nil {
		s.UID, s.GID, s.Groups = c.uid, c.gid, c.groups
	}
	return s, nil
}

// processEnv is the environment of a supervised process: the supervisor's
// own minus Vigil's and systemd's private variables, plus the configured env.
func processEnv(p *config.Process, spec string) []string {
	drop := func(kv string) bool {
		// HooksCgroupEnv and each service's HooksCgroupEnv_<slot>.
		for _, pfx := range []string{"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=", "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", "INVOCATION_ID=", execshim.SpecEnv + "=", execshim.HooksCgroupEnv + "=", execshim.HooksCgroupEnv + "_", ctlmsg.EnvAllServices + "=", ctlmsg.EnvLeaveOut + "="} {
			if strings.HasPrefix(kv, pfx) {
				return true
			}
		}
		return false
	}
	env := make([]string, 0, len(os.Environ())+len(p.Env)+2)
	override := make(map[string]bool, len(p.Env))
	for _, kv := range p.Env {
		k, _, _ := strings.Cut(kv, "=")
		override[k] = true
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if drop(kv) || override[k] {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, p.Env...)
	env = append(env, "VIGIL_PROCESS="+p.Name)
	sort.Strings(env)
	return append(env, execshim.SpecEnv+"="+spec)
}
