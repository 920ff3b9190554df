// Package enum names the values of limpet's small enum types (address
// families, mirror modes and operations, XDP verdicts, protocols, event
// types): one table per type serves both its String and its parser, so
// each name is written once. It imports nothing of limpet's.
package enum

import "fmt"

// Integer is the underlying type of an enum.
type Integer interface {
	~uint8 | ~uint16 | ~uint32
}

// Names maps each value of an enum to its name.
type Names[T Integer] map[T]string

// Name is v's name; a value without one is printed by unknown, a format
// with one %d verb for v's number ("family(%d)").
func (n Names[T]) Name(v T, unknown string) string {
	if s, ok := n[v]; ok {
		return s
	}
	return fmt.Sprintf(unknown, v)
}

// Parse is the value named s; ok is false when no value has that name.
func (n Names[T]) Parse(s string) (v T, ok bool) {
	for v, name := range n {
		if name == s {
			return v, true
		}
	}
	return 0, false
}
