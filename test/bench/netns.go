package bench

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// nsThread is a private network namespace owned by one OS thread: every job
// runs on that thread. The thread is never unlocked, so the Go runtime
// destroys it when close ends the loop, and the namespace (with every link
// in it) goes with it.
type nsThread struct {
	jobs chan func()
	done chan struct{}
}

func newNSThread() (*nsThread, error) {
	t := &nsThread{jobs: make(chan func()), done: make(chan struct{})}
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

// do runs fn on the namespace's thread.
func (t *nsThread) do(fn func() error) error {
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

func (t *nsThread) close() {
	if t == nil {
		return
	}
	close(t.jobs)
	<-t.done
}

var errSanity = errors.New("sanity check failed")
