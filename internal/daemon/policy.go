package daemon

import (
	"fmt"
	"time"

	"github.com/mxguard/mxguard/internal/event"
	"github.com/mxguard/mxguard/internal/greylist"
	"github.com/mxguard/mxguard/internal/policy"
	"github.com/mxguard/mxguard/internal/smtpcheck"
)

// sharedFrontDoorDeps opens what the guard and the policy service share
// when both run: the one greylist store (a bbolt file can be opened once
// per process) and one caching resolver.
func (d *Daemon) sharedFrontDoorDeps() (*greylist.Store, smtpcheck.Resolver, error) {
	if d.guardCfg == nil || d.policyCfg == nil {
		return nil, nil, nil
	}
	g, p := d.guardCfg, d.policyCfg
	var grey *greylist.Store
	if g.Greylist.Enabled && p.Greylist.Enabled && g.Greylist.DB == p.Greylist.DB {
		var err error
		if grey, err = greylist.Open(g.Greylist, d.log.With("component", "greylist"), nil); err != nil {
			return nil, nil, &ConfigError{fmt.Errorf("guard.%w", err)}
		}
	}
	var res smtpcheck.Resolver
	guardDNS := len(g.DNSBL.Sites) > 0 || g.Checks.FCrDNS != "off" || g.Checks.SenderDomainDNS != "off"
	policyDNS := len(p.DNSBL.Sites) > 0 && p.Checks.DNSBL != policy.Off || p.Checks.FCrDNS != policy.Off
	// One resolver (one cache) only when both would build the same one:
	// a policy.resolver or policy.dnsbl.cache_ttl of its own must not be
	// ignored for the guard's.
	gAddr := g.Resolver
	if gAddr == "" {
		gAddr = smtpcheck.DefaultResolverAddr()
	}
	if guardDNS && policyDNS && policyResolverAddr(g.Resolver, p.Resolver) == gAddr &&
		g.DNSBL.CacheTTL == p.DNSBL.CacheTTL && g.DNSBL.Timeout == p.DNSBL.Timeout {
		res = smtpcheck.NewResolver(gAddr, g.DNSBL.Timeout.D(), g.DNSBL.CacheTTL.D())
	}
	return grey, res, nil
}

// policyResolverAddr is the policy service's DNS server: policy.resolver,
// else the guard's resolver, else resolv.conf's.
func policyResolverAddr(guard, policy string) string {
	switch {
	case policy != "":
		return policy
	case guard != "":
		return guard
	}
	return smtpcheck.DefaultResolverAddr()
}

// buildPolicy makes the policy service; its events go through the
// daemon's pipeline, its block list is the Manager's ban index.
func (d *Daemon) buildPolicy(grey *greylist.Store, res smtpcheck.Resolver) error {
	cfg := *d.policyCfg
	if cfg.Resolver == "" && d.guardCfg != nil { // the guard's, as documented
		cfg.Resolver = d.guardCfg.Resolver
	}
	p, err := policy.New(cfg, policy.Deps{
		Logger:    d.log.With("component", "policy"),
		Sink:      func(ev event.Event) { d.pipe.HandleEvent(d.runCtx, ev) },
		Blocklist: d.mgr,
		Greylist:  grey,
		Resolver:  res,
	})
	if err != nil {
		return &ConfigError{err}
	}
	d.policy = p
	return nil
}

// startPolicy listens on policy.listen and serves until runCtx is done.
func (d *Daemon) startPolicy() error {
	l, err := d.policy.Listen()
	if err != nil {
		return err
	}
	d.policyServing = true
	d.policyErr = d.serve("policy service", d.policy, l, 10*time.Second)
	return nil
}
