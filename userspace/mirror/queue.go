package mirror

import (
	"sync"
	"time"
)

// queue is one connection's bounded FIFO of entries to send. An entry whose
// key is already queued replaces the queued version in place (it keeps its
// place and its enqueue time), so a burst of changes to one client costs one
// slot and one send. When the queue holds max distinct keys, push drops.
type queue struct {
	mu    sync.Mutex
	max   int
	items []slot // items[head:] are queued
	head  int
	base  int // absolute position of items[0]
	index map[EntryKey]int
}

type slot struct {
	e  Entry
	at time.Time
}

func newQueue(max int) *queue {
	return &queue{max: max, index: make(map[EntryKey]int)}
}

// push queues e, reporting false when the queue is full and e was dropped.
func (q *queue) push(e *Entry, now time.Time) bool {
	k := e.ID()
	q.mu.Lock()
	defer q.mu.Unlock()
	if pos, ok := q.index[k]; ok {
		q.items[pos-q.base].e = *e
		return true
	}
	if len(q.index) >= q.max {
		return false
	}
	if q.head > 0 && q.head >= len(q.items)/2 && len(q.items) == cap(q.items) {
		// Reuse the consumed front instead of growing.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.base += q.head
		q.head = 0
	}
	q.index[k] = q.base + len(q.items)
	q.items = append(q.items, slot{e: *e, at: now})
	return true
}

// pop moves up to max queued entries to dst, oldest first.
func (q *queue) pop(dst []Entry, max int) []Entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head < len(q.items) && max > 0 {
		s := &q.items[q.head]
		delete(q.index, s.e.ID())
		dst = append(dst, s.e)
		*s = slot{}
		q.head++
		max--
	}
	if q.head == len(q.items) {
		q.base += q.head
		q.items = q.items[:0]
		q.head = 0
	}
	return dst
}

// stats returns the queue's length and the enqueue time of its oldest entry.
func (q *queue) stats() (int, time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.items) {
		return 0, time.Time{}
	}
	return len(q.items) - q.head, q.items[q.head].at
}
