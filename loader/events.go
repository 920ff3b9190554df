package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/limpet-lb/limpet/userspace/enum"
)

// EventType says what happened to a mirrored persistence entry.
type EventType uint8

// Event types, as the datapath's enum event_type numbers them.
const (
	EventCreated = EventType(limpetEventTypeEVENT_CREATED)
	EventMoved   = EventType(limpetEventTypeEVENT_MOVED)
	EventExpired = EventType(limpetEventTypeEVENT_EXPIRED)
)

var eventTypeNames = enum.Names[EventType]{
	EventCreated: "created",
	EventMoved:   "moved",
	EventExpired: "expired",
}

func (t EventType) String() string { return eventTypeNames.Name(t, "event-%d") }

// Event is a change of an entry of a table with Mirror set.
type Event struct {
	Type    EventType
	TableID TableID
	Client  netip.Addr
	Server  netip.AddrPort
	Time    time.Duration // datapath clock
}

// EventReader reads persistence events from the datapath's ring buffer.
type EventReader struct{ r *ringbuf.Reader }

// Events opens the event ring buffer. Only one reader should run.
func (d *Datapath) Events() (*EventReader, error) {
	r, err := ringbuf.NewReader(d.objs.PersistEvents)
	if err != nil {
		return nil, fmt.Errorf("open persistence event ring buffer: %w", err)
	}
	return &EventReader{r: r}, nil
}

// ErrClosed is returned by Read after Close.
var ErrClosed = os.ErrClosed

// Read blocks until the next event, or until Close.
func (e *EventReader) Read() (Event, error) {
	rec, err := e.r.Read()
	if err != nil {
		if errors.Is(err, ringbuf.ErrClosed) {
			return Event{}, ErrClosed
		}
		return Event{}, err
	}
	b := rec.RawSample
	if len(b) < int(eventSize) {
		return Event{}, fmt.Errorf("persistence event of %d bytes, want %d", len(b), eventSize)
	}
	fam := b[evFamily]
	return Event{
		Type:    EventType(b[evType]),
		TableID: TableID(le.Uint32(b[evTableID:])),
		Client:  addrFrom(b[evClient:evClient+addrLen], fam),
		Server:  netip.AddrPortFrom(addrFrom(b[evServer:evServer+addrLen], fam), port(b[evServerPort:])),
		Time:    time.Duration(le.Uint64(b[evTime:])),
	}, nil
}

// SetDeadline makes Read give up at t (zero: never).
func (e *EventReader) SetDeadline(t time.Time) { e.r.SetDeadline(t) }

// Close stops the reader; a blocked Read returns ErrClosed.
func (e *EventReader) Close() error { return e.r.Close() }
