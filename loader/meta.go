package loader

import (
	"encoding/binary"
	"fmt"
)

// The meta map stores an opaque document (the control plane's names and id
// assignments) next to the maps it describes: a little-endian uint32 length,
// then the bytes, across fixed-size chunks.
const metaCapacity = metaChunkSize*metaChunks - 4

// WriteMeta stores doc in the pinned meta map.
func (e *Editor) WriteMeta(doc []byte) error {
	if len(doc) > metaCapacity {
		return fmt.Errorf("metadata of %d bytes exceeds %d", len(doc), metaCapacity)
	}
	buf := binary.LittleEndian.AppendUint32(nil, uint32(len(doc)))
	buf = append(buf, doc...)
	// Chunks after the first go first, so a reader never sees a new length
	// with old bytes behind it in the chunks it then reads.
	chunks := (len(buf) + metaChunkSize - 1) / metaChunkSize
	for i := chunks - 1; i >= 0; i-- {
		chunk := make([]byte, metaChunkSize)
		copy(chunk, buf[i*metaChunkSize:min(len(buf), (i+1)*metaChunkSize)])
		if err := e.m.Meta.Put(uint32(i), chunk); err != nil {
			return fmt.Errorf("write metadata: %w", err)
		}
	}
	return nil
}

// ReadMeta returns the stored document, or nil if none was written.
func (p *Pinned) ReadMeta() ([]byte, error) {
	first := make([]byte, metaChunkSize)
	if err := p.m.Meta.Lookup(uint32(0), &first); err != nil {
		return nil, fmt.Errorf("read metadata: %w", err)
	}
	n := int(binary.LittleEndian.Uint32(first))
	if n == 0 {
		return nil, nil
	}
	if n > metaCapacity {
		return nil, fmt.Errorf("metadata length %d is corrupt", n)
	}
	buf := append([]byte(nil), first[4:]...)
	for i := 1; len(buf) < n; i++ {
		chunk := make([]byte, metaChunkSize)
		if err := p.m.Meta.Lookup(uint32(i), &chunk); err != nil {
			return nil, fmt.Errorf("read metadata: %w", err)
		}
		buf = append(buf, chunk...)
	}
	return buf[:n], nil
}
