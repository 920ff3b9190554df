package testutil

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// NSThread is a private network namespace owned by one OS thread: every
// job runs on that thread. The thread is never unlocked, so the Go runtime
// destroys it when Close ends the loop, and the namespace (with every link
// in it) goes with it, even if the test dies half-way.
type NSThread struct {
	jobs chan func()
	done chan struct{}
}

// NewNSThread starts the thread in a new namespace. It needs root.
func NewNSThread() (*NSThread, error) {
	t := &NSThread{jobs: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the namespace
		defer close(t.done)
		ns, err := netns.New()
		if err != nil {
			ready <- fmt.Errorf("new network namespace: %w", err)
			return
		}
		defer ns.Close()
		ready <- nil
		for job := range t.jobs {
			job()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

// Do runs fn on the namespace's thread and returns its error; a panic in
// fn is returned as an error, and the thread goes on.
func (t *NSThread) Do(fn func() error) error {
	errc := make(chan error, 1)
	t.jobs <- func() {
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("panic in namespace thread: %v", r)
			}
		}()
		errc <- fn()
	}
	return <-errc
}

// Close ends the thread, and with it the namespace. A nil or closed
// NSThread is left alone.
func (t *NSThread) Close() {
	if t == nil || t.jobs == nil {
		return
	}
	close(t.jobs)
	t.jobs = nil
	<-t.done
}

// InThread runs fn on a locked OS thread, and puts the thread back in its
// namespace afterwards, so fn may switch namespaces. A thread that cannot
// go back stays locked, so the runtime discards it.
func InThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // the locked thread ends with the goroutine
		}
		defer orig.Close()
		err = fn()
		if serr := netns.Set(orig); serr != nil {
			errc <- errors.Join(err, serr)
			return // leave the thread locked: it is discarded
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// InNetns runs fn on a locked OS thread in ns (see InThread); sockets fn
// opens stay in ns.
func InNetns(ns netns.NsHandle, fn func() error) error {
	return InThread(func() error {
		if err := netns.Set(ns); err != nil {
			return err
		}
		return fn()
	})
}
