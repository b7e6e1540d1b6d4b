package node

import (
	"errors"
	"fmt"
	"strings"

	"redrain/adminauth"
	"redrain/campaign"
)

// realBackends names what makes a node more than the embedded single-node
// demo: a real broker, store or Redis, or cluster members ("" for none).
func realBackends(cfg Config) string {
	var on []string
	if len(cfg.Kafka) > 0 {
		on = append(on, "--kafka")
	}
	if len(cfg.PD) > 0 {
		on = append(on, "--pd")
	}
	if cfg.Redis != "" {
		on = append(on, "--redis")
	}
	if len(cfg.Seeds) > 0 || len(cfg.Etcd) > 0 {
		on = append(on, "cluster membership")
	}
	return strings.Join(on, ", ")
}

// ErrPublicKeys is the error of a node on real backends whose config holds
// keys anyone can read.
var ErrPublicKeys = errors.New("node: public keys on real backends")

// ErrOpsPlane is the error of a node on real backends whose operations
// routes would share the API's listener.
var ErrOpsPlane = errors.New("node: no operations listener on real backends")

// checkOpsPlane refuses a node on real backends without --admin-http: the
// admin API, /metrics and /debug/pprof/ must not be reachable where the
// apps' traffic arrives.
func (n *Node) checkOpsPlane() error {
	if on := realBackends(n.cfg); on != "" && n.cfg.AdminHTTP == "" {
		return fmt.Errorf("%w: this node uses %s; give the admin API, /metrics and /debug/pprof/ a listener of their own with --admin-http (for example 127.0.0.1:8081, or an address only operators reach)", ErrOpsPlane, on)
	}
	return nil
}

// checkKeys refuses public keys on a node that uses real backends: no
// admin_keys (the node would accept the public development key), the
// development key itself, no app_keys (unsigned client requests), or a
// public token key (the demo campaign's,
// which a node without --config uses, or an example file's). Whoever holds
// the admin key runs the admin API; whoever holds a token key seals tokens
// that redeem books. On embedded defaults it only logs that the keys are
// public.
func (n *Node) checkKeys(c *campaign.Config) error {
	var problems []string
	if len(c.AdminKeys) == 0 {
		problems = append(problems, "no admin_keys (the node would accept the public development key)")
	}
	for i, s := range c.AdminKeys {
		if k, err := adminauth.ParseKey(s); err == nil && adminauth.IsDevKey(k) {
			problems = append(problems, fmt.Sprintf("admin_keys[%d] (id %s) is the public development key", i, k.ID))
		}
	}
	if len(c.AppKeys) == 0 {
		problems = append(problems, "no app_keys (/v1 would accept unsigned requests, any client acting for any app)")
	}
	for _, k := range c.PublicTokenKeys() {
		problems = append(problems, k+" is a public token key (the demo campaign's or an example file's)")
	}
	if len(problems) == 0 {
		return nil
	}
	on := realBackends(n.cfg)
	if on == "" {
		n.log.Warn("embedded single-node mode with public keys: fine for trying redrain, never for production (a node on real backends refuses them)",
			"problems", strings.Join(problems, "; "))
		return nil
	}
	file := "the built-in demo campaign (no --config)"
	if n.cfg.ConfigFile != "" {
		file = n.cfg.ConfigFile
	}
	return fmt.Errorf("%w: this node uses %s, and %s has %s; put secrets of your own in the config file (`redrain keygen` prints one)",
		ErrPublicKeys, on, file, strings.Join(problems, "; "))
}
