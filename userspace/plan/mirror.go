package plan

import (
	"fmt"

	"github.com/limpet-lb/limpet/userspace/config"
	"github.com/limpet-lb/limpet/userspace/ids"
	"github.com/limpet-lb/limpet/userspace/mirror"
)

// MirrorConfig turns a validated ha_mirroring section into a mirror.Config,
// reading the key or certificate files. Scope is left nil; see MirrorScope.
func MirrorConfig(h *config.HAMirroring) (mirror.Config, error) {
	mode, err := mirror.ParseMode(h.Mode)
	if err != nil {
		return mirror.Config{}, err
	}
	c := mirror.Config{
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
			return mirror.Config{}, fmt.Errorf("ha_mirroring.auth.psk_file: %w", err)
		}
	case h.Auth.TLS != nil:
		ca, cert, err := h.Auth.TLS.Load()
		if err != nil {
			return mirror.Config{}, fmt.Errorf("ha_mirroring.auth.tls: %w", err)
		}
		c.TLS = &mirror.TLSAuth{CA: ca, Certificate: cert}
	default:
		return mirror.Config{}, fmt.Errorf("ha_mirroring.auth: set psk_file or tls")
	}
	return c, nil
}

// MirrorScope returns the scope of cfg: the tables of profiles with
// ha_mirroring: true, by table key (ids.TableKey's stored form, as peers
// send it). The daemon calls SetScope with it after every reload.
func MirrorScope(cfg *config.Config) func(table string) bool {
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
