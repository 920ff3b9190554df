package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// Process is a program started inside a lab host by StartProcess.
type Process struct {
	Host    string
	Path    string
	Args    []string
	Pid     int
	LogPath string // stdout and stderr, interleaved (removed by Lab.Close)

	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, valid after done is closed

	mu   sync.Mutex
	kept []byte // output saved by Lab.Close before the log is removed
}

// noPdeathsig is set by tests that simulate a crashed lab owner.
var noPdeathsig bool

// StartProcess starts path with args inside the named host's network
// namespace (typically HostBalancer, e.g. the limpet binary), with stdout
// and stderr going to p.LogPath. The process gets its own process group,
// SIGKILL when the lab's process dies, and is stopped by Close; its pid is
// recorded so that Clean can find it after a crash.
//
// How it gets into the namespace: a network namespace belongs to a thread,
// and fork/clone copies the namespaces of the calling thread. os/exec forks on
// the goroutine that calls Start, so Start runs on a goroutine locked to an
// OS thread that has done setns into the host; the child inherits that
// namespace and keeps it across execve. That goroutine then stays locked and
// waits for the child: Pdeathsig fires when the parent *thread* exits, so the
// thread must outlive the child.
func (l *Lab) StartProcess(hostName, path string, args ...string) (*Process, error) {
	return l.StartCommand(hostName, exec.Command(path, args...))
}

// StartCommand is StartProcess for a prepared command (Env, Dir, Stdin...).
// If cmd.Stdout or cmd.Stderr is nil it goes to the log file.
func (l *Lab) StartCommand(hostName string, cmd *exec.Cmd) (*Process, error) {
	h, err := l.host(hostName)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab: closed")
	}
	l.procSeq++
	seq := l.procSeq
	l.mu.Unlock()

	logPath := filepath.Join(l.runDir, fmt.Sprintf("%s-%s-%d.log", hostName, filepath.Base(cmd.Path), seq))
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	if cmd.Stdout == nil {
		cmd.Stdout = logf
	}
	if cmd.Stderr == nil {
		cmd.Stderr = logf
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if !noPdeathsig {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	cmd.WaitDelay = 2 * time.Second
	p := &Process{
		Host: hostName, Path: cmd.Path, Args: cmd.Args, LogPath: logPath,
		cmd: cmd, done: make(chan struct{}),
	}
	started := make(chan error, 1)
	go func() {
		// Locked and never unlocked: the thread is discarded when this
		// goroutine ends, after the child has been reaped.
		runtime.LockOSThread()
		if err := netns.Set(h.ns); err != nil {
			started <- fmt.Errorf("lab: setns %s: %w", h.netns, err)
			return
		}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("lab: start %s in %s: %w", cmd.Path, hostName, err)
			return
		}
		p.Pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	err = <-started
	logf.Close() // the child has its own copy
	if err != nil {
		return nil, err
	}
	if err := recordPid(l.runDir, p.Pid, hostName, cmd.Path); err != nil {
		_ = p.Kill()
		<-p.done
		return nil, err
	}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	closed := l.closed
	l.mu.Unlock()
	if closed { // Close ran meanwhile and did not see p
		_ = p.Stop(time.Second)
		return nil, errors.New("lab: closed")
	}
	return p, nil
}

// RunCommand runs path with args in a host to completion and returns its
// combined output (for CLI commands such as `limpet stats`).
func (l *Lab) RunCommand(ctx context.Context, hostName, path string, args ...string) ([]byte, error) {
	var out syncBuffer
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	p, err := l.StartCommand(hostName, cmd)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = p.Stop(time.Second)
		return out.Bytes(), ctx.Err()
	}
	return out.Bytes(), p.err
}

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b...)
}

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Wait waits for the process to exit (or ctx) and returns its exit error
// (nil for status 0; an *exec.ExitError otherwise).
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Signal sends sig to the process's group (the process and its children).
func (p *Process) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return nil
	}
	if err := syscall.Kill(-p.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// Kill sends SIGKILL to the process group.
func (p *Process) Kill() error { return p.Signal(syscall.SIGKILL) }

// Stop sends SIGTERM, waits up to timeout, then SIGKILLs, and waits for the
// process to be reaped. It returns an error only if the process could not
// be stopped; its exit status is p.Wait's business.
func (p *Process) Stop(timeout time.Duration) error {
	if !p.Running() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	if err := p.Kill(); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("lab: pid %d (%s) did not die", p.Pid, p.Path)
	}
}

// Output returns what the process wrote to its log so far (kept in memory
// once the lab is closed).
func (p *Process) Output() string {
	p.mu.Lock()
	kept := p.kept
	p.mu.Unlock()
	if kept != nil {
		return string(kept)
	}
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

func (p *Process) keepOutput() {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.kept = append([]byte{}, b...)
	p.mu.Unlock()
}
