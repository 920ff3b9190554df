package config

// L7Options are the options of http_cookie, app_cookie and generic profiles.
// The L7 proxy owns their meaning; they live here so one file configures both layers.
type L7Options struct{}

// HTTPOptions are the listener options of an http virtual server.
type HTTPOptions struct{}

func (p *Profile) applyL7Defaults()                                                   {}
func (v *VirtualServer) applyHTTPDefaults()                                           {}
func (p *Profile) hasL7Options() bool                                                 { return false }
func (v *VirtualServer) hasHTTPOptions() bool                                         { return false }
func (p *Profile) validateL7(v *validator, field string)                              {}
func (c *Config) validateHTTPVirtualServer(v *validator, vs *VirtualServer, f string) {}
func (p *Profile) l7Warnings() []string                                               { return nil }
