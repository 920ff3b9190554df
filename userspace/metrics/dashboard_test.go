package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

const dashboardPath = "../../scripts/grafana/limpet-dashboard.json"

type grafanaDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *grafanaDS     `json:"datasource"`
	GridPos    map[string]int `json:"gridPos"`
	Targets    []struct {
		RefID      string     `json:"refId"`
		Expr       string     `json:"expr"`
		Datasource *grafanaDS `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

type grafanaDashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *grafanaDS      `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []grafanaPanel `json:"panels"`
}

var (
	metricRE = regexp.MustCompile(`\blimpet_[a-z0-9_]+`)
	byRE     = regexp.MustCompile(`\bby \(([^)]*)\)`)
)

// exported gathers the collector over a source with every section filled and
// returns each limpet metric family with the label names it carries.
func exported(t *testing.T) map[string]map[string]bool {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(newFake()))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	for _, mf := range mfs {
		labels := map[string]bool{"instance": true, "job": true} // added by Prometheus
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		out[mf.GetName()] = labels
	}
	return out
}

// The dashboard is well-formed, takes its data source from a variable, and
// queries only metrics and labels the collector exports.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard needs a title and uid, got %q %q", d.Title, d.UID)
	}
	known := exported(t)

	checkExpr := func(where, expr string) {
		names := metricRE.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q queries no limpet metric", where, expr)
		}
		labels := map[string]bool{}
		for _, n := range names {
			ls, ok := known[n]
			if !ok {
				t.Errorf("%s: %q uses %s, which the collector does not export", where, expr, n)
				continue
			}
			for l := range ls {
				labels[l] = true
			}
		}
		for _, m := range byRE.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				if l = strings.TrimSpace(l); !labels[l] {
					t.Errorf("%s: %q groups by %q, a label none of its metrics has", where, expr, l)
				}
			}
		}
	}

	var dsVar bool
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			var q string
			if err := json.Unmarshal(v.Query, &q); err != nil || q != "prometheus" {
				t.Errorf("variable %s: query %s, want \"prometheus\"", v.Name, v.Query)
			}
			dsVar = v.Name == "datasource"
		case "query":
			if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
				t.Errorf("variable %s does not use the datasource variable", v.Name)
			}
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Errorf("variable %s: %v", v.Name, err)
			}
			checkExpr("variable "+v.Name, q.Query)
		}
	}
	if !dsVar {
		t.Error("no datasource template variable named datasource")
	}

	ids := map[int]bool{}
	var panels, exprs int
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos["w"] == 0 || p.GridPos["h"] == 0 {
				t.Errorf("panel %q has no size", p.Title)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			panels++
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the datasource variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q query %s does not use the datasource variable", p.Title, tg.RefID)
				}
				exprs++
				checkExpr("panel "+p.Title, tg.Expr)
			}
		}
	}
	walk(d.Panels)
	// The panels the issue asks for.
	titles := map[string]bool{}
	var all func([]grafanaPanel)
	all = func(ps []grafanaPanel) {
		for _, p := range ps {
			titles[p.Title] = true
			all(p.Panels)
		}
	}
	all(d.Panels)
	for _, want := range []string{
		"Packets/s per virtual server", "New connections/s per virtual server", "Persistence hits vs misses",
		"Table occupancy vs max", "Inserts, expiries, evictions and rejects /s", "Member up", "Drops by reason",
	} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
	t.Logf("%d panels, %d queries checked against %d exported families", panels, exprs, len(known))
}
