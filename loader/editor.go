package loader

// Editor edits a pinned datapath without being its manager: it deletes and
// flushes persistence entries and writes pools, members and the metadata,
// as the CLI does for an operator. It takes no lock, so it works beside a
// running daemon: each edit is single map updates that the datapath and
// the manager already tolerate from each other (the CLI sets members only
// when no daemon answers, so the daemon's view of them stays its own).
type Editor struct {
	Pinned
}

// OpenEditor opens the datapath pinned at pinPath for editing.
func OpenEditor(pinPath string) (*Editor, error) {
	e := &Editor{}
	if err := e.open(pinPath); err != nil {
		return nil, err
	}
	return e, nil
}
