package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/limpet-lb/limpet/test/testutil"
	"github.com/limpet-lb/limpet/userspace/lab"
)

// Part 4: the L7 proxy against HAProxy and Caddy.
//
// Everything runs on the loopback of a lab namespace: three members (small
// Go HTTP servers, one worker each), the proxies, and wrk. The proxies are
// pinned to the same CPU set with the same worker count (one thread /
// GOMAXPROCS=1); wrk and the members share the other CPU. Direct to a member
// is the ceiling: wrk against one member pinned where the proxies run. New
// sessions are requests without a cookie (the proxy balances and sets one);
// existing sessions carry a valid cookie (the proxy opens it and sends the
// request to its member).
//
// Besides the plain case (HTTP, wrk -c32, no access log), limpet and HAProxy
// are measured with the same settings in three more: an access log of JSON
// lines written to a file, HTTPS (TLS 1.3), and 1,000 concurrent keep-alive
// clients. Every proxy process serves every case (one listener each) for the
// whole part, so the measurements compared within a run follow one another
// closely; the order of the proxies rotates from run to run.

// L7 targets.
const (
	L7Direct   = "direct to a member (ceiling)"
	L7Limpet   = "limpet l7"
	L7Baseline = "limpet l7, baseline build"
	L7HAProxy  = "HAProxy"
	L7Caddy    = "Caddy"
)

// L7Targets in report order.
var L7Targets = []string{L7Direct, L7Limpet, L7Baseline, L7HAProxy, L7Caddy}

// L7Case is one configuration measured.
type L7Case string

// L7 cases, in report order.
const (
	L7Plain L7Case = "plain"         // HTTP, the harness's connection count, no access log
	L7Log   L7Case = "access log on" // JSON lines appended to a file
	L7TLS   L7Case = "HTTPS"         // TLS 1.3, session resumption on
	L7Many  L7Case = "many clients"  // ManyConnections keep-alive clients
)

// L7Cases in report order.
var L7Cases = []L7Case{L7Plain, L7Log, L7TLS, L7Many}

// L7Key is one row of part 4.
type L7Key struct {
	Target   string
	Case     L7Case
	Existing bool // requests carry a valid persistence cookie
}

// L7Row holds per run requests/s, latency percentiles (ms), peak RSS (MiB)
// and the proxy's CPU time per request (µs: user and system, from
// /proc/PID/stat), which depends much less than requests/s on what else
// the machine runs.
type L7Row struct {
	Key      L7Key
	RPS      Series
	P50, P99 Series
	RSS      Series
	CPU      Series
}

// L7Options size part 4.
type L7Options struct {
	Duration        time.Duration // per wrk run
	Connections     int           // wrk -c of every case but L7Many
	ManyConnections int           // wrk -c of L7Many
	ProxyCPUs       string        // taskset list for the proxies (and the ceiling's member)
	LoadCPUs        string        // taskset list for wrk and the members
	Workers         int
	Runs            int
	MemberExe       string // a binary that serves as a member when LIMPET_BENCH_MEMBER is set
	// Profile, when positive, takes a CPU and an allocation profile of
	// limpet l7 (pprof) for this long under each kind of session, after
	// the measured runs.
	Profile time.Duration
	// GoTool is the go command that summarises the profiles (go tool pprof).
	GoTool string
	// ProfileDir keeps the raw profiles when set.
	ProfileDir string
	// Baseline is another limpet binary (an earlier build) measured in
	// every case next to this one, so that a change is measured before
	// and after in the same run; "" for none.
	Baseline string
}

// L7Profile is the top of limpet's profiles under one kind of session.
type L7Profile struct {
	Existing bool
	Requests float64 // requests served while profiling (wrk's rate × the profile's length)
	CPU      string  // go tool pprof -top
	CPUCum   string  // go tool pprof -top -cum
	Allocs   string  // go tool pprof -sample_index=alloc_space -top
	// Allocations per request: objects and bytes.
	ObjectsPerRequest, BytesPerRequest float64
	Err                                string
}

// L7Result is part 4.
type L7Result struct {
	Rows     []*L7Row
	Opts     L7Options
	Versions map[string]string
	Profiles []L7Profile
}

// Row returns a row.
func (r *L7Result) Row(target string, c L7Case, existing bool) *L7Row {
	for _, row := range r.Rows {
		if row.Key == (L7Key{target, c, existing}) {
			return row
		}
	}
	return nil
}

// EnvMember makes a binary that calls MaybeServeMember serve as a member:
// its value is LISTEN-ADDRESS,NAME.
const EnvMember = "LIMPET_BENCH_MEMBER"

// MaybeServeMember serves as an HTTP member and never returns when
// EnvMember is set; otherwise it returns at once. Members answer every
// request with a short body naming themselves.
func MaybeServeMember() {
	v := os.Getenv(EnvMember)
	if v == "" {
		return
	}
	addr, name, _ := strings.Cut(v, ",")
	body := []byte("member=" + name + "\n")
	srv := &http.Server{
		Addr:              addr,
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("X-Member", name)
			_, _ = w.Write(body)
		}),
	}
	fmt.Fprintln(os.Stderr, srv.ListenAndServe())
	os.Exit(1)
}

type l7Member struct {
	Name string
	Addr string
	Port int
}

const (
	l7Addr       = "127.0.0.1"
	l7DirectPort = 18084
	l7PprofPort  = 18060
)

// l7Ports are each proxy's listeners, one per case (L7Many uses the plain one).
type l7Ports struct{ Plain, Log, TLS int }

var (
	l7LimpetPorts   = l7Ports{18080, 18085, 18086}
	l7BaselinePorts = l7Ports{18070, 18075, 18076}
	l7HAProxyPorts  = l7Ports{18090, 18095, 18096}
	l7CaddyPorts    = l7Ports{Plain: 18100}
)

// RunL7 runs part 4 in a lab of its own.
func RunL7(ctx context.Context, env Env, o L7Options) (*L7Result, error) {
	env, err := env.resolved()
	if err != nil {
		return nil, err
	}
	if o.MemberExe, err = filepath.Abs(o.MemberExe); err != nil {
		return nil, err
	}
	if o.Baseline != "" {
		if err := absFile(&o.Baseline, "baseline limpet"); err != nil {
			return nil, err
		}
	}
	l, err := lab.New(ctx, lab.Spec{MemberCount: 1})
	if err != nil {
		return nil, err
	}
	recordLab(l)
	res, err := runL7(ctx, env, l, o)
	return res, errors.Join(err, l.Close())
}

// l7Endpoint is one proxy serving one case.
type l7Endpoint struct {
	target string
	c      L7Case
	url    string
	cookie string // a valid session cookie (NAME=VALUE)
	p      *lab.Process
}

func runL7(ctx context.Context, env Env, l *lab.Lab, o L7Options) (*L7Result, error) {
	if o.ManyConnections == 0 {
		o.ManyConnections = 1000
	}
	res := &L7Result{Opts: o, Versions: map[string]string{}}
	rows := map[L7Key]*L7Row{}
	addRow := func(k L7Key) {
		rows[k] = &L7Row{Key: k}
		res.Rows = append(res.Rows, rows[k])
	}
	addRow(L7Key{L7Direct, L7Plain, false})
	for _, c := range L7Cases {
		for _, t := range L7Targets {
			if t == L7Direct || (t == L7Caddy && c != L7Plain) || (t == L7Baseline && o.Baseline == "") {
				continue
			}
			for _, existing := range []bool{false, true} {
				addRow(L7Key{t, c, existing})
			}
		}
	}
	dir := l.RunDir()
	members := []l7Member{{"m1", l7Addr, 18081}, {"m2", l7Addr, 18082}, {"m3", l7Addr, 18083}}

	// start runs a command in the lab's balancer namespace, pinned to cpus.
	start := func(cpus string, extraEnv []string, stdout io.Writer, path string, args ...string) (*lab.Process, error) {
		cmd := exec.Command("taskset", append([]string{"-c", cpus, path}, args...)...)
		cmd.Env = append(os.Environ(), extraEnv...)
		cmd.Dir = dir
		cmd.Stdout = stdout
		return l.StartCommand(lab.HostBalancer, cmd)
	}
	gomax := fmt.Sprintf("GOMAXPROCS=%d", o.Workers)
	var procs []*lab.Process
	defer func() {
		for _, p := range procs {
			_ = p.Stop(5 * time.Second)
		}
	}()
	for _, m := range members {
		p, err := start(o.LoadCPUs, []string{gomax, EnvMember + "=" + fmt.Sprintf("%s:%d,%s", m.Addr, m.Port, m.Name)}, nil, o.MemberExe)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	ceiling, err := start(o.ProxyCPUs, []string{gomax, EnvMember + "=" + fmt.Sprintf("%s:%d,direct", l7Addr, l7DirectPort)}, nil, o.MemberExe)
	if err != nil {
		return nil, err
	}
	procs = append(procs, ceiling)
	for _, port := range []int{18081, 18082, 18083, l7DirectPort} {
		if err := waitHTTP(ctx, l, fmt.Sprintf("http://%s:%d/", l7Addr, port)); err != nil {
			return nil, fmt.Errorf("member on port %d: %w", port, err)
		}
	}

	// Configurations.
	keyFile := filepath.Join(dir, "cookie.key")
	if out, err := exec.Command(env.LimpetBin, "cookie", "keygen").Output(); err != nil {
		return nil, fmt.Errorf("limpet cookie keygen: %w", err)
	} else if err := os.WriteFile(keyFile, out, 0o600); err != nil {
		return nil, err
	}
	certFile, keyPEM, bothPEM, err := writeBenchCert(dir)
	if err != nil {
		return nil, err
	}
	// This tree's limpet and the baseline's run the same L7 config on
	// ports and access logs of their own.
	renderL7 := func(cfg, accessLog string, ports l7Ports) error {
		return env.render("limpet-l7.yaml.tmpl", cfg, map[string]any{
			"KeyFile": keyFile, "Addr": l7Addr, "Ports": ports, "Members": members,
			"AccessLog": accessLog, "CertFile": certFile, "CertKeyFile": keyPEM,
		})
	}
	limpetLog := filepath.Join(dir, "limpet-access.log")
	limpetCfg := filepath.Join(dir, "l7.yaml")
	if err := renderL7(limpetCfg, limpetLog, l7LimpetPorts); err != nil {
		return nil, err
	}
	if out, err := exec.Command(env.LimpetBin, "config", "check", limpetCfg).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("limpet config check: %v\n%s", err, out)
	}
	baselineLog := filepath.Join(dir, "baseline-access.log")
	baselineCfg := filepath.Join(dir, "l7-baseline.yaml")
	if err := renderL7(baselineCfg, baselineLog, l7BaselinePorts); err != nil {
		return nil, err
	}
	haproxyCfg := filepath.Join(dir, "haproxy.cfg")
	if err := env.render("haproxy.cfg.tmpl", haproxyCfg, map[string]any{
		"Workers": o.Workers, "Addr": l7Addr, "Ports": l7HAProxyPorts, "Members": members, "PEM": bothPEM,
	}); err != nil {
		return nil, err
	}
	if out, err := exec.Command("haproxy", "-c", "-q", "-f", haproxyCfg).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("haproxy -c: %v\n%s", err, out)
	}
	// HAProxy writes its access log to stdout (log stdout), one write per
	// line, as it does to a pipe or a file: the harness appends it to a file.
	haproxyLog, err := os.OpenFile(filepath.Join(dir, "haproxy-access.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer haproxyLog.Close()
	caddyDir := filepath.Join(dir, "caddy")
	if err := os.MkdirAll(caddyDir, 0o700); err != nil {
		return nil, err
	}
	caddyCfg := filepath.Join(dir, "Caddyfile")
	if err := env.render("Caddyfile.tmpl", caddyCfg, map[string]any{"Dir": caddyDir, "Addr": l7Addr, "Port": l7CaddyPorts.Plain, "Members": members, "Secret": "limpet-bench"}); err != nil {
		return nil, err
	}
	caddyEnv := []string{gomax, "HOME=" + caddyDir, "XDG_DATA_HOME=" + caddyDir, "XDG_CONFIG_HOME=" + caddyDir}

	limpetArgs := []string{"l7", "-c", limpetCfg}
	if o.Profile > 0 {
		limpetArgs = append(limpetArgs, "--pprof-listen", fmt.Sprintf("%s:%d", l7Addr, l7PprofPort))
	}
	type proxy struct {
		target string
		ports  l7Ports
		cookie string // name of the persistence cookie ("" = any Set-Cookie)
		run    func() (*lab.Process, error)
	}
	proxies := []proxy{
		{L7Limpet, l7LimpetPorts, "", func() (*lab.Process, error) {
			return start(o.ProxyCPUs, []string{gomax}, nil, env.LimpetBin, limpetArgs...)
		}},
		{L7Baseline, l7BaselinePorts, "", func() (*lab.Process, error) {
			return start(o.ProxyCPUs, []string{gomax}, nil, o.Baseline, "l7", "-c", baselineCfg)
		}},
		{L7HAProxy, l7HAProxyPorts, "SRV", func() (*lab.Process, error) {
			return start(o.ProxyCPUs, nil, haproxyLog, "haproxy", "-f", haproxyCfg, "-db")
		}},
		{L7Caddy, l7CaddyPorts, "lb", func() (*lab.Process, error) {
			return start(o.ProxyCPUs, caddyEnv, nil, "caddy", "run", "--config", caddyCfg, "--adapter", "caddyfile")
		}},
	}
	res.Versions = toolVersions()
	if o.Baseline != "" {
		b, _ := exec.Command(o.Baseline, "version").CombinedOutput()
		res.Versions["baseline"] = strings.TrimSpace(string(b))
	}

	// endpoints[case] lists the proxies serving the case.
	endpoints := map[L7Case][]*l7Endpoint{}
	for _, px := range proxies {
		if px.target == L7Baseline && o.Baseline == "" {
			continue
		}
		p, err := px.run()
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		for _, c := range L7Cases {
			port := px.ports.Plain
			scheme := "http"
			switch c {
			case L7Log:
				port = px.ports.Log
			case L7TLS:
				port, scheme = px.ports.TLS, "https"
			}
			if port == 0 || (px.target == L7Caddy && c != L7Plain) {
				continue
			}
			url := fmt.Sprintf("%s://%s:%d/", scheme, l7Addr, port)
			if err := waitHTTP(ctx, l, url); err != nil {
				return nil, fmt.Errorf("%s not answering on %s: %w\n%s", px.target, url, err, p.Output())
			}
			cookie, err := sessionCookie(l, url, px.cookie)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", px.target, err)
			}
			conns := o.Connections
			if c == L7Many {
				conns = o.ManyConnections
			}
			// Warm up: connections to the members, caches, the Go heap.
			if _, err := runWrk(ctx, l, wrkRun{o.LoadCPUs, time.Second, conns, url, cookie}); err != nil {
				return nil, fmt.Errorf("%s: %w", px.target, err)
			}
			endpoints[c] = append(endpoints[c], &l7Endpoint{px.target, c, url, cookie, p})
		}
	}
	record := func(k L7Key, w wrkResult, rss float64) {
		r := rows[k]
		r.RPS.Add(w.rps)
		r.P50.Add(w.p50)
		r.P99.Add(w.p99)
		r.RSS.Add(rss)
		r.CPU.Add(w.cpuPerReq)
	}
	// measure runs wrk against url and returns its result (with pid's CPU
	// time per request) and the peak RSS of pid during the run: the peak
	// is reset just before (clear_refs 5).
	measure := func(pid int, wr wrkRun) (wrkResult, float64, error) {
		resetPeakRSS(pid)
		c0 := cpuTime(pid)
		w, err := runWrk(ctx, l, wr)
		if c1 := cpuTime(pid); err == nil && w.requests > 0 && c1 > c0 {
			w.cpuPerReq = (c1 - c0).Seconds() * 1e6 / w.requests
		}
		return w, rssMiB(pid), err
	}
	logOffset := map[string]int64{}
	for _, f := range []string{limpetLog, baselineLog, haproxyLog.Name()} {
		if fi, err := os.Stat(f); err == nil {
			logOffset[f] = fi.Size() // the warm-up's lines
		}
	}
	for run := 0; run < o.Runs; run++ {
		t0 := time.Now()
		w, rss, err := measure(ceiling.Pid, wrkRun{o.LoadCPUs, o.Duration, o.Connections, fmt.Sprintf("http://%s:%d/", l7Addr, l7DirectPort), ""})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", L7Direct, err)
		}
		record(L7Key{L7Direct, L7Plain, false}, w, rss)
		for _, c := range L7Cases {
			conns := o.Connections
			if c == L7Many {
				conns = o.ManyConnections
			}
			eps := endpoints[c]
			for _, existing := range []bool{false, true} {
				for i := range eps {
					ep := eps[(i+run)%len(eps)]
					if !ep.p.Running() {
						return nil, fmt.Errorf("%s exited:\n%s", ep.target, ep.p.Output())
					}
					ck := ""
					if existing {
						ck = ep.cookie
					}
					w, rss, err := measure(ep.p.Pid, wrkRun{o.LoadCPUs, o.Duration, conns, ep.url, ck})
					if err != nil {
						return nil, fmt.Errorf("%s (%s): %w", ep.target, c, err)
					}
					record(L7Key{ep.target, c, existing}, w, rss)
					if c == L7Log {
						// The row means nothing unless the proxy did log.
						// (HAProxy drops O_APPEND from its stdout, so the
						// files cannot be truncated between runs.)
						f := map[string]string{L7Limpet: limpetLog, L7Baseline: baselineLog, L7HAProxy: haproxyLog.Name()}[ep.target]
						if err := checkAccessLog(f, logOffset[f]); err != nil {
							return nil, err
						}
						if fi, err := os.Stat(f); err == nil {
							logOffset[f] = fi.Size()
						}
					}
				}
			}
		}
		env.logf("L7: run %d/%d done in %.1fs", run+1, o.Runs, time.Since(t0).Seconds())
	}
	if o.Profile > 0 {
		for _, ep := range endpoints[L7Plain] {
			if ep.target != L7Limpet {
				continue
			}
			for _, existing := range []bool{false, true} {
				res.Profiles = append(res.Profiles, profileL7(ctx, l, o, ep, existing))
			}
		}
	}
	return res, nil
}

// checkAccessLog checks that an access log file has, from offset on, a
// JSON line of a request answered 200.
func checkAccessLog(f string, offset int64) error {
	fh, err := os.Open(f)
	if err != nil {
		return fmt.Errorf("%w: access log: %v", errSanity, err)
	}
	defer fh.Close()
	if _, err := fh.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	br := bufio.NewReader(fh)
	var line string
	for range 10000 {
		if line, err = br.ReadString('\n'); err != nil {
			break
		}
		if strings.HasPrefix(line, "{") && strings.Contains(line, `"status":200`) {
			return nil
		}
	}
	return fmt.Errorf("%w: access log %s: no JSON line of a 200 (last %q, %v)", errSanity, f, line, err)
}

// profileL7 takes CPU and allocation profiles of limpet while wrk loads it.
func profileL7(ctx context.Context, l *lab.Lab, o L7Options, ep *l7Endpoint, existing bool) L7Profile {
	pr := L7Profile{Existing: existing}
	ck := ""
	if existing {
		ck = ep.cookie
	}
	secs := max(int(o.Profile.Seconds()), 1)
	type wrkOut struct {
		w   wrkResult
		err error
	}
	wc := make(chan wrkOut, 1)
	go func() {
		w, err := runWrk(ctx, l, wrkRun{o.LoadCPUs, time.Duration(secs+2) * time.Second, o.Connections, ep.url, ck})
		wc <- wrkOut{w, err}
	}()
	time.Sleep(time.Second)
	base := fmt.Sprintf("http://%s:%d/debug/pprof/", l7Addr, l7PprofPort)
	var cpu, allocs []byte
	var cpuErr, allocErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		cpu, cpuErr = labFetch(l, fmt.Sprintf("%sprofile?seconds=%d", base, secs), time.Duration(secs+10)*time.Second)
	})
	wg.Go(func() {
		allocs, allocErr = labFetch(l, fmt.Sprintf("%sallocs?seconds=%d", base, secs), time.Duration(secs+10)*time.Second)
	})
	wg.Wait()
	w := <-wc
	if err := errors.Join(cpuErr, allocErr, w.err); err != nil {
		pr.Err = err.Error()
		return pr
	}
	pr.Requests = w.w.rps * float64(secs)
	dir := o.ProfileDir
	if dir == "" {
		dir = l.RunDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		pr.Err = err.Error()
		return pr
	}
	sess := "new"
	if existing {
		sess = "existing"
	}
	cpuFile := filepath.Join(dir, "l7-cpu-"+sess+".pb.gz")
	allocFile := filepath.Join(dir, "l7-allocs-"+sess+".pb.gz")
	if err := errors.Join(os.WriteFile(cpuFile, cpu, 0o644), os.WriteFile(allocFile, allocs, 0o644)); err != nil {
		pr.Err = err.Error()
		return pr
	}
	gotool := o.GoTool
	if gotool == "" {
		gotool = "go"
	}
	top := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, gotool, append([]string{"tool", "pprof", "-top", "-nodecount=15"}, args...)...).Output()
		if err != nil {
			return "", fmt.Errorf("go tool pprof: %w", err)
		}
		return trimPprof(string(out)), nil
	}
	var err error
	if pr.CPU, err = top(cpuFile); err != nil {
		pr.Err = err.Error()
		return pr
	}
	if pr.CPUCum, err = top("-cum", cpuFile); err != nil {
		pr.Err = err.Error()
		return pr
	}
	if pr.Allocs, err = top("-sample_index=alloc_space", allocFile); err != nil {
		pr.Err = err.Error()
		return pr
	}
	objs, err := exec.CommandContext(ctx, gotool, "tool", "pprof", "-top", "-nodecount=1", "-sample_index=alloc_objects", allocFile).Output()
	if err == nil {
		pr.ObjectsPerRequest = pprofTotal(string(objs)) / pr.Requests
	}
	bytes, err := exec.CommandContext(ctx, gotool, "tool", "pprof", "-top", "-nodecount=1", "-unit=B", "-sample_index=alloc_space", allocFile).Output()
	if err == nil {
		pr.BytesPerRequest = pprofTotal(string(bytes)) / pr.Requests
	}
	return pr
}

var pprofTotalRe = regexp.MustCompile(`of ([0-9.]+)(B|kB|MB|GB)? total`)

// pprofTotal reads the total of a go tool pprof -top header.
func pprofTotal(out string) float64 {
	m := pprofTotalRe.FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "kB":
		v *= 1 << 10
	case "MB":
		v *= 1 << 20
	case "GB":
		v *= 1 << 30
	}
	return v
}

// trimPprof keeps the lines of a -top listing worth reading: the totals
// and the table (no file name, build id or time).
func trimPprof(out string) string {
	var keep []string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if strings.HasPrefix(line, "File:") || strings.HasPrefix(line, "Build ID:") || strings.HasPrefix(line, "Time:") ||
			strings.HasPrefix(line, "Dropped") || strings.HasPrefix(line, "Showing top") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "\n")
}

// writeBenchCert writes a self-signed ECDSA P-256 certificate for the
// loopback address: cert and key PEM files (limpet), and both in one file
// (HAProxy).
func writeBenchCert(dir string) (cert, key, both string, err error) {
	c, err := testutil.MintSelfSigned("limpet bench", l7Addr)
	if err != nil {
		return "", "", "", err
	}
	cp, kp, err := testutil.EncodePEM(c)
	if err != nil {
		return "", "", "", err
	}
	cert, key, both = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "both.pem")
	err = errors.Join(os.WriteFile(cert, cp, 0o600), os.WriteFile(key, kp, 0o600), os.WriteFile(both, append(cp, kp...), 0o600))
	return cert, key, both, err
}

// waitHTTP waits until url answers 200 from inside the lab's balancer.
func waitHTTP(ctx context.Context, l *lab.Lab, url string) error {
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		_, _, last = labGet(l, url, "")
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return last
}

// labClient is an HTTP client whose connections are made in the lab's
// balancer namespace.
func labClient(l *lab.Lab, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := l.Run(lab.HostBalancer, func() error {
				var err error
				conn, err = net.DialTimeout(network, addr, 2*time.Second)
				return err
			})
			return conn, err
		},
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// labGet makes one request from the balancer namespace and returns the
// answering member and the response's cookies.
func labGet(l *lab.Lab, url, cookie string) (member string, cookies []*http.Cookie, err error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := labClient(l, 5*time.Second).Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", nil, fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return strings.TrimSpace(strings.TrimPrefix(string(body), "member=")), resp.Cookies(), nil
}

// labFetch GETs url from the balancer namespace and returns the body.
func labFetch(l *lab.Lab, url string, timeout time.Duration) ([]byte, error) {
	resp, err := labClient(l, timeout).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("%s: status %d: %s", url, resp.StatusCode, b)
	}
	return b, err
}

// sessionCookie opens a session and checks that the proxy honours it: the
// first answer sets the persistence cookie; with it, requests stay on one
// member and get no new cookie.
func sessionCookie(l *lab.Lab, url, name string) (string, error) {
	first, cookies, err := labGet(l, url, "")
	if err != nil {
		return "", err
	}
	var c *http.Cookie
	for _, ck := range cookies {
		if name == "" || ck.Name == name {
			c = ck
			break
		}
	}
	if c == nil {
		return "", fmt.Errorf("%w: %s set no persistence cookie (%d cookies)", errSanity, url, len(cookies))
	}
	header := c.Name + "=" + c.Value
	for range 6 {
		m, again, err := labGet(l, url, header)
		if err != nil {
			return "", err
		}
		if m != first {
			return "", fmt.Errorf("%w: %s: a request with %s went to %s, not %s", errSanity, url, c.Name, m, first)
		}
		for _, ck := range again {
			if ck.Name == c.Name {
				return "", fmt.Errorf("%w: %s: a request with a valid cookie got a new one", errSanity, url)
			}
		}
	}
	return header, nil
}

type wrkResult struct {
	rps, p50, p99 float64
	requests      float64 // completed
	cpuPerReq     float64 // µs of the proxy's CPU per request, when measured
}

// wrkRun is one wrk invocation.
type wrkRun struct {
	cpus     string
	duration time.Duration
	conns    int
	url      string
	cookie   string // sent as a Cookie header when set
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct     = regexp.MustCompile(`^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkErrors  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkCounted = regexp.MustCompile(`(\d+) requests in`)
)

// runWrk runs wrk (one thread, pinned to the load CPUs) in the balancer
// namespace and parses its report; any socket error or non-2xx answer fails.
func runWrk(ctx context.Context, l *lab.Lab, wr wrkRun) (wrkResult, error) {
	// A 10 s request timeout (wrk's default is 2 s): 1,000 clients on a
	// loaded machine may wait that long for a slow proxy, which shows in
	// its latency rather than failing the run.
	args := []string{"-c", wr.cpus, "wrk", "-t1", "-c", strconv.Itoa(wr.conns),
		"-d", fmt.Sprintf("%.0fs", max(wr.duration.Seconds(), 1)), "--latency", "--timeout", "10s"}
	if wr.cookie != "" {
		args = append(args, "-H", "Cookie: "+wr.cookie)
	}
	args = append(args, wr.url)
	cctx, cancel := context.WithTimeout(ctx, wr.duration+30*time.Second)
	defer cancel()
	out, err := l.RunCommand(cctx, lab.HostBalancer, "taskset", args...)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	var r wrkResult
	text := string(out)
	if m := wrkErrors.FindStringSubmatch(text); m != nil {
		return r, fmt.Errorf("%w: wrk %s: %s", errSanity, wr.url, m[0])
	}
	if m := wrkNon2xx.FindStringSubmatch(text); m != nil {
		return r, fmt.Errorf("%w: wrk %s: %s", errSanity, wr.url, m[0])
	}
	m := wrkRPS.FindStringSubmatch(text)
	mc := wrkCounted.FindStringSubmatch(text)
	if m == nil || mc == nil {
		return r, fmt.Errorf("wrk output not understood:\n%s", text)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	r.requests, _ = strconv.ParseFloat(mc[1], 64)
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		pm := wrkPct.FindStringSubmatch(sc.Text())
		if pm == nil {
			continue
		}
		v, _ := strconv.ParseFloat(pm[2], 64)
		switch pm[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if pm[1] == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if r.rps == 0 || r.p50 == 0 || r.p99 == 0 {
		return r, fmt.Errorf("wrk output not understood:\n%s", text)
	}
	return r, nil
}

// cpuTime is the CPU time (user and system) a process has used.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from after it.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	// utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return time.Duration((u + st) * float64(time.Second) / 100)
}

// resetPeakRSS resets a process's peak resident set (VmHWM) to its current
// one, so that the next reading is the peak of what follows.
func resetPeakRSS(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// rssMiB is a process's peak resident set (VmHWM) in MiB.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// toolVersions names the peers' versions for the report.
func toolVersions() map[string]string {
	out := map[string]string{}
	for name, args := range map[string][]string{
		"haproxy": {"haproxy", "-v"}, "caddy": {"caddy", "version"}, "wrk": {"wrk", "-v"}, "nft": {"nft", "-v"},
	} {
		b, _ := exec.Command(args[0], args[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		out[name] = strings.TrimSpace(line)
	}
	return out
}
