package mirror

import (
	"fmt"
	"time"

	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/ids"
)

// FromConfig turns a validated ha_mirroring section into a Config, reading
// the key or certificate files. Scope is left nil; see ScopeFromConfig.
func FromConfig(h *config.HAMirroring) (Config, error) {
	mode, err := ParseMode(h.Mode)
	if err != nil {
		return Config{}, err
	}
	secs := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	c := Config{
		Listen:            h.Listen,
		Advertise:         h.Advertise,
		Peers:             h.Peers,
		Mode:              mode,
		QueueSize:         h.QueueSize,
		ReconnectMin:      secs(h.ReconnectBackoff.Initial),
		ReconnectMax:      secs(h.ReconnectBackoff.Max),
		HeartbeatInterval: secs(h.HeartbeatInterval),
		HeartbeatTimeout:  secs(h.HeartbeatTimeout),
	}
	switch {
	case h.Auth.PSKFile != "":
		if c.PSK, err = config.LoadMirrorPSK(h.Auth.PSKFile); err != nil {
			return Config{}, fmt.Errorf("ha_mirroring.auth.psk_file: %w", err)
		}
	case h.Auth.TLS != nil:
		ca, cert, err := h.Auth.TLS.Load()
		if err != nil {
			return Config{}, fmt.Errorf("ha_mirroring.auth.tls: %w", err)
		}
		c.TLS = &TLSAuth{CA: ca, Certificate: cert}
	default:
		return Config{}, fmt.Errorf("ha_mirroring.auth: set psk_file or tls")
	}
	return c, nil
}

// ScopeFromConfig returns the scope of cfg: the tables of profiles with
// ha_mirroring: true, by table key (ids.TableKey's stored form). The daemon
// calls SetScope with it after every reload.
func ScopeFromConfig(cfg *config.Config) func(table string) bool {
	mirrored := map[string]bool{}
	for _, p := range cfg.Profiles {
		if p.HAMirroring {
			mirrored[p.Name] = true
		}
	}
	return func(table string) bool {
		k, err := ids.ParseTableKey(table)
		return err == nil && mirrored[k.Profile]
	}
}
