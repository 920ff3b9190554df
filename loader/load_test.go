package loader

import "testing"

func TestLoadVerifies(t *testing.T) {
	d := loadTemp(t, Options{})
	if d.Adopted() {
		t.Fatal("a fresh pin path was reported as adopted")
	}
}
