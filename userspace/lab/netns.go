package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// onFreshThread runs fn on a goroutine locked to its own OS thread and waits
// for it. The goroutine exits without unlocking, so the Go runtime throws the
// thread away instead of returning it to its pool: whatever fn does to the
// thread (setns, unshare) can never leak into other goroutines.
func onFreshThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("lab: panic in namespace thread: %v", r)
			}
		}()
		errc <- fn()
	}()
	return <-errc
}

// inNS runs fn on a fresh OS thread that has joined ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	return onFreshThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("lab: setns: %w", err)
		}
		return fn()
	})
}

// Run runs fn on an OS thread locked into the network namespace of the named
// host and returns its error. Sockets fn creates belong to that namespace and
// may be used from any goroutine afterwards; goroutines fn starts run in the
// caller's (original) namespace, not the host's.
func (l *Lab) Run(hostName string, fn func() error) error {
	h, err := l.host(hostName)
	if err != nil {
		return err
	}
	if l.isClosed() {
		return errors.New("lab: closed")
	}
	return inNS(h.ns, fn)
}

func (h *host) run(fn func() error) error { return inNS(h.ns, fn) }

var netnsDirMu sync.Mutex

// ensureNetnsDir makes /run/netns a shared mount point, as `ip netns add`
// does the first time it runs. Without it, an `ip netns add` run by anyone
// while a lab exists bind-mounts /run/netns over itself and hides the lab's
// namespace mounts, which then can no longer be unmounted (they leak until
// reboot). If /run/netns is a plain directory that already holds namespace
// mounts (made by a tool that does not do this), it is left alone, since a
// bind mount over it would hide those.
func ensureNetnsDir() error {
	netnsDirMu.Lock()
	defer netnsDirMu.Unlock()
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil || !errors.Is(err, unix.EINVAL) {
		return err // nil: already a mount point, now shared
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], NetnsDir+"/") {
			return nil
		}
	}
	if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("lab: bind %s: %w", NetnsDir, err)
	}
	if err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("lab: make %s shared: %w", NetnsDir, err)
	}
	return nil
}

// createNamedNS creates a network namespace bind-mounted at /run/netns/name.
func createNamedNS(name string) (netns.NsHandle, error) {
	if err := ensureNetnsDir(); err != nil {
		return netns.None(), err
	}
	var ns netns.NsHandle
	err := onFreshThread(func() error {
		var err error
		ns, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		// NewNamed leaves the file behind when the bind mount fails.
		_ = os.Remove(filepath.Join(NetnsDir, name))
		return netns.None(), fmt.Errorf("lab: create netns %s: %w", name, err)
	}
	return ns, nil
}

// deleteNamedNS unmounts and removes /run/netns/name; a missing name is fine.
func deleteNamedNS(name string) error {
	p := filepath.Join(NetnsDir, name)
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lab: unmount netns %s: %w", name, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("lab: remove netns %s: %w (its mount is hidden under a later mount on %s, "+
				"e.g. by `ip netns add`, and cannot be removed until that is unmounted)", name, err, NetnsDir)
		}
		return fmt.Errorf("lab: remove netns %s: %w", name, err)
	}
	return nil
}

// sysctl writes /proc/sys/<key> (key with '/' or '.' separators). It must run
// on a thread inside the target namespace: /proc/sys/net follows the network
// namespace of the thread that opens it.
func sysctl(key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("lab: sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

func sysctlRead(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/")))
	return strings.TrimSpace(string(b)), err
}
