package bench

import (
	"bufio"
	"context"
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
	"time"

	"github.com/limpet-lb/limpet/userspace/lab"
)

// Part 4: the L7 proxy against HAProxy and Caddy.
//
// Everything runs on the loopback of a lab namespace: three members (small
// Go HTTP servers, one worker each), one proxy at a time, and wrk. The
// proxies are pinned to the same CPU set with the same worker count (one
// thread / GOMAXPROCS=1); wrk and the members share the other CPU. Direct to
// a member is the ceiling: wrk against one member pinned where the proxies
// run. New sessions are requests without a cookie (the proxy balances and
// sets one); existing sessions carry a valid cookie (the proxy opens it and
// sends the request to its member).

// L7 targets.
const (
	L7Direct  = "direct to a member (ceiling)"
	L7Limpet  = "limpet l7"
	L7HAProxy = "HAProxy"
	L7Caddy   = "Caddy"
)

// L7Targets in report order.
var L7Targets = []string{L7Direct, L7Limpet, L7HAProxy, L7Caddy}

// L7Key is one row of part 4.
type L7Key struct {
	Target   string
	Existing bool // requests carry a valid persistence cookie
}

// L7Row holds per run requests/s, latency percentiles (ms) and peak RSS (MiB).
type L7Row struct {
	Key      L7Key
	RPS      Series
	P50, P99 Series
	RSS      Series
}

// L7Options size part 4.
type L7Options struct {
	Duration    time.Duration // per wrk run
	Connections int
	ProxyCPUs   string // taskset list for the proxies (and the ceiling's member)
	LoadCPUs    string // taskset list for wrk and the members
	Workers     int
	Runs        int
	MemberExe   string // a binary that serves as a member when LIMPET_BENCH_MEMBER is set
}

// L7Result is part 4.
type L7Result struct {
	Rows     []*L7Row
	Opts     L7Options
	Versions map[string]string
}

// Row returns a row.
func (r *L7Result) Row(target string, existing bool) *L7Row {
	for _, row := range r.Rows {
		if row.Key == (L7Key{target, existing}) {
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
	l7Addr        = "127.0.0.1"
	l7LimpetPort  = 18080
	l7HAProxyPort = 18090
	l7CaddyPort   = 18100
	l7DirectPort  = 18084
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
	l, err := lab.New(ctx, lab.Spec{MemberCount: 1})
	if err != nil {
		return nil, err
	}
	recordLab(l)
	res, err := runL7(ctx, env, l, o)
	return res, errors.Join(err, l.Close())
}

func runL7(ctx context.Context, env Env, l *lab.Lab, o L7Options) (*L7Result, error) {
	res := &L7Result{Opts: o, Versions: map[string]string{}}
	rows := map[L7Key]*L7Row{}
	for _, t := range L7Targets {
		for _, existing := range []bool{false, true} {
			if t == L7Direct && existing {
				continue
			}
			k := L7Key{t, existing}
			rows[k] = &L7Row{Key: k}
			res.Rows = append(res.Rows, rows[k])
		}
	}
	dir := l.RunDir()
	members := []l7Member{{"m1", l7Addr, 18081}, {"m2", l7Addr, 18082}, {"m3", l7Addr, 18083}}

	// start runs a command in the lab's balancer namespace, pinned to cpus.
	start := func(cpus string, extraEnv []string, path string, args ...string) (*lab.Process, error) {
		cmd := exec.Command("taskset", append([]string{"-c", cpus, path}, args...)...)
		cmd.Env = append(os.Environ(), extraEnv...)
		cmd.Dir = dir
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
		p, err := start(o.LoadCPUs, []string{gomax, EnvMember + "=" + fmt.Sprintf("%s:%d,%s", m.Addr, m.Port, m.Name)}, o.MemberExe)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	ceiling, err := start(o.ProxyCPUs, []string{gomax, EnvMember + "=" + fmt.Sprintf("%s:%d,direct", l7Addr, l7DirectPort)}, o.MemberExe)
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
	limpetCfg := filepath.Join(dir, "l7.yaml")
	if err := env.render("limpet-l7.yaml.tmpl", limpetCfg, map[string]any{"KeyFile": keyFile, "Addr": l7Addr, "Port": l7LimpetPort, "Members": members}); err != nil {
		return nil, err
	}
	if out, err := exec.Command(env.LimpetBin, "config", "check", limpetCfg).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("limpet config check: %v\n%s", err, out)
	}
	haproxyCfg := filepath.Join(dir, "haproxy.cfg")
	if err := env.render("haproxy.cfg.tmpl", haproxyCfg, map[string]any{"Workers": o.Workers, "Addr": l7Addr, "Port": l7HAProxyPort, "Members": members}); err != nil {
		return nil, err
	}
	caddyDir := filepath.Join(dir, "caddy")
	if err := os.MkdirAll(caddyDir, 0o700); err != nil {
		return nil, err
	}
	caddyCfg := filepath.Join(dir, "Caddyfile")
	if err := env.render("Caddyfile.tmpl", caddyCfg, map[string]any{"Dir": caddyDir, "Addr": l7Addr, "Port": l7CaddyPort, "Members": members, "Secret": "limpet-bench"}); err != nil {
		return nil, err
	}
	caddyEnv := []string{gomax, "HOME=" + caddyDir, "XDG_DATA_HOME=" + caddyDir, "XDG_CONFIG_HOME=" + caddyDir}

	type proxy struct {
		target string
		port   int
		cookie string // name of the persistence cookie ("" = any Set-Cookie)
		run    func() (*lab.Process, error)
	}
	proxies := []proxy{
		{L7Limpet, l7LimpetPort, "", func() (*lab.Process, error) {
			return start(o.ProxyCPUs, []string{gomax}, env.LimpetBin, "l7", "-c", limpetCfg)
		}},
		{L7HAProxy, l7HAProxyPort, "SRV", func() (*lab.Process, error) {
			return start(o.ProxyCPUs, nil, "haproxy", "-f", haproxyCfg, "-db")
		}},
		{L7Caddy, l7CaddyPort, "lb", func() (*lab.Process, error) {
			return start(o.ProxyCPUs, caddyEnv, "caddy", "run", "--config", caddyCfg, "--adapter", "caddyfile")
		}},
	}
	res.Versions = toolVersions()

	// Every proxy runs for the whole part (an idle one costs nothing), so
	// that the measurements compared within a run follow one another
	// closely; the order rotates from run to run.
	type running struct {
		proxy
		p      *lab.Process
		url    string
		cookie string
	}
	var live []running
	for _, px := range proxies {
		p, err := px.run()
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		url := fmt.Sprintf("http://%s:%d/", l7Addr, px.port)
		if err := waitHTTP(ctx, l, url); err != nil {
			return nil, fmt.Errorf("%s not answering: %w\n%s", px.target, err, p.Output())
		}
		cookie, err := sessionCookie(l, url, px.cookie)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", px.target, err)
		}
		// Warm up: connections to the members, caches, the Go heap.
		if _, err := runWrk(ctx, l, L7Options{Duration: time.Second, Connections: o.Connections, LoadCPUs: o.LoadCPUs}, url, cookie); err != nil {
			return nil, fmt.Errorf("%s: %w", px.target, err)
		}
		live = append(live, running{px, p, url, cookie})
	}
	record := func(k L7Key, w wrkResult, pid int) {
		r := rows[k]
		r.RPS.Add(w.rps)
		r.P50.Add(w.p50)
		r.P99.Add(w.p99)
		r.RSS.Add(rssMiB(pid))
	}
	for run := 0; run < o.Runs; run++ {
		t0 := time.Now()
		w, err := runWrk(ctx, l, o, fmt.Sprintf("http://%s:%d/", l7Addr, l7DirectPort), "")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", L7Direct, err)
		}
		record(L7Key{L7Direct, false}, w, ceiling.Pid)
		for _, existing := range []bool{false, true} {
			for i := range live {
				px := live[(i+run)%len(live)]
				if !px.p.Running() {
					return nil, fmt.Errorf("%s exited:\n%s", px.target, px.p.Output())
				}
				c := ""
				if existing {
					c = px.cookie
				}
				w, err := runWrk(ctx, l, o, px.url, c)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", px.target, err)
				}
				record(L7Key{px.target, existing}, w, px.p.Pid)
			}
		}
		env.logf("L7: run %d/%d done in %.1fs", run+1, o.Runs, time.Since(t0).Seconds())
	}
	return res, nil
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

// labGet makes one request from the balancer namespace and returns the
// answering member and the response's cookies.
func labGet(l *lab.Lab, url, cookie string) (member string, cookies []*http.Cookie, err error) {
	var conn net.Conn
	host := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/")
	err = l.Run(lab.HostBalancer, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", host, 2*time.Second)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil }, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
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
func runWrk(ctx context.Context, l *lab.Lab, o L7Options, url, cookie string) (wrkResult, error) {
	args := []string{"-c", o.LoadCPUs, "wrk", "-t1", "-c", strconv.Itoa(o.Connections),
		"-d", fmt.Sprintf("%.0fs", max(o.Duration.Seconds(), 1)), "--latency"}
	if cookie != "" {
		args = append(args, "-H", "Cookie: "+cookie)
	}
	args = append(args, url)
	cctx, cancel := context.WithTimeout(ctx, o.Duration+30*time.Second)
	defer cancel()
	out, err := l.RunCommand(cctx, lab.HostBalancer, "taskset", args...)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	var r wrkResult
	text := string(out)
	if m := wrkErrors.FindStringSubmatch(text); m != nil {
		return r, fmt.Errorf("%w: wrk %s: %s", errSanity, url, m[0])
	}
	if m := wrkNon2xx.FindStringSubmatch(text); m != nil {
		return r, fmt.Errorf("%w: wrk %s: %s", errSanity, url, m[0])
	}
	m := wrkRPS.FindStringSubmatch(text)
	if m == nil || wrkCounted.FindStringSubmatch(text) == nil {
		return r, fmt.Errorf("wrk output not understood:\n%s", text)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
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
