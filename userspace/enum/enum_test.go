package enum

import "testing"

type color uint8

var colorNames = Names[color]{1: "red", 2: "green"}

func TestName(t *testing.T) {
	for v, want := range map[color]string{1: "red", 2: "green", 0: "color(0)", 7: "color(7)"} {
		if got := colorNames.Name(v, "color(%d)"); got != want {
			t.Errorf("Name(%d) = %q, want %q", v, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	for s, want := range map[string]color{"red": 1, "green": 2} {
		if got, ok := colorNames.Parse(s); !ok || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "blue", "Red", "color(1)"} {
		if got, ok := colorNames.Parse(s); ok {
			t.Errorf("Parse(%q) = %d, want no value", s, got)
		}
	}
}
