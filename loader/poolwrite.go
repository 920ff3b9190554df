package loader

// WritePool writes one pool and its members after an admin or health
// change, in the order that never sends a new client to a member that is
// going away: going down, the member leaves the pool's eligible list before
// it reads as down; coming up, it reads as up before it joins the list.
func (e *Editor) WritePool(pool Pool, members []Member, goingDown bool) error {
	steps := []func() error{func() error { return e.SetPool(pool) }, func() error {
		for _, m := range members {
			if err := e.SetMember(m); err != nil {
				return err
			}
		}
		return nil
	}}
	if !goingDown {
		steps[0], steps[1] = steps[1], steps[0]
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
