package integration_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	sigsyaml "sigs.k8s.io/yaml"
)

var (
	alertsFile     = filepath.Join(chartDir, "files", "alerts.yaml")
	alertsTestFile = filepath.Join(chartDir, "tests", "alerts_test.yaml")
	dashboardFile  = filepath.Join(chartDir, "files", "dashboard.json")
)

// dashboardExprs returns every PromQL expression of the dashboard by panel.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(readFile(t, dashboardFile), &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q target %s has no expression", p.Title, tg.RefID)
			}
			out[p.Title+" "+tg.RefID] = tg.Expr
		}
	}
	if len(out) < 15 {
		t.Fatalf("dashboard has %d expressions; expected the full set", len(out))
	}
	return out
}

// alertExprs returns every alert's expression by alert name.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := sigsyaml.Unmarshal(readFile(t, alertsFile), &f); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	out := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

func TestMonitoringAlertRulesCheckAndFire(t *testing.T) {
	promtool := promtoolTool.path(t)
	out := mustRunTool(t, promtool, "check", "rules", alertsFile)
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(alertExprs(t))); !strings.Contains(out, want) {
		t.Errorf("promtool check rules: want %q:\n%s", want, out)
	}
	out = mustRunTool(t, promtool, "test", "rules", alertsTestFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}
	// Every alert has a test that expects it to fire.
	tests := string(readFile(t, alertsTestFile))
	for name := range alertExprs(t) {
		re := regexp.MustCompile(`alertname: ` + name + `\n\s+exp_alerts:`)
		if !re.MatchString(tests) {
			t.Errorf("alert %s has no promtool test in which it fires", name)
		}
	}
}

// TestMonitoringDashboardPromQLParses writes the dashboard's expressions as
// recording rules and has promtool (Prometheus's own parser) check them.
func TestMonitoringDashboardPromQLParses(t *testing.T) {
	promtool := promtoolTool.path(t)
	exprs := dashboardExprs(t)
	keys := slices.Sorted(maps.Keys(exprs))
	var b strings.Builder
	b.WriteString("groups:\n  - name: castellan-dashboard\n    rules:\n")
	for i, k := range keys {
		e, _ := json.Marshal(exprs[k]) // a JSON string is a YAML string
		fmt.Fprintf(&b, "      - record: castellan_dashboard:panel_%d\n        expr: %s\n", i, e)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustRunTool(t, promtool, "check", "rules", file)
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(keys)); !strings.Contains(out, want) {
		t.Errorf("promtool check rules on the dashboard's expressions: want %q:\n%s", want, out)
	}
	// And a broken expression is refused, so the check above means something.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("groups:\n  - name: x\n    rules:\n      - record: x\n        expr: 'sum(rate(castellan_csr_total[5m])'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runTool(t, promtool, "check", "rules", bad); r.err == nil {
		t.Errorf("promtool accepted an unbalanced expression:\n%s", r.stdout)
	}
}

// promqlWords are the PromQL functions, aggregations and keywords the
// dashboard and the rules may use; every other identifier outside label
// matchers, grouping lists and strings is a metric name.
var promqlWords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "topk": true, "bottomk": true,
	"rate": true, "irate": true, "increase": true, "delta": true, "histogram_quantile": true,
	"max_over_time": true, "min_over_time": true, "avg_over_time": true, "time": true, "absent": true,
	"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "offset": true, "bool": true,
}

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlNumber   = regexp.MustCompile(`\b[0-9]+(\.[0-9]+)?(e[0-9]+)?\b`)
)

// metricNames returns the metric names expr selects.
func metricNames(expr string) []string {
	s := promqlStrings.ReplaceAllString(expr, " ")
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	s = promqlRanges.ReplaceAllString(s, " ")
	s = promqlNumber.ReplaceAllString(s, " ")
	var out []string
	for _, w := range promqlIdent.FindAllString(s, -1) {
		if !promqlWords[w] {
			out = append(out, w)
		}
	}
	return out
}

func TestMonitoringMetricNamesParser(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le, api) (rate(castellan_agent_push_latency_seconds_bucket{x="a b"}[5m])))`: {"castellan_agent_push_latency_seconds_bucket"},
		`max by (node) (max_over_time(a_b[1h])) unless max by (node) (c)`:                                             {"a_b", "c"},
		`sum by (ns, reason) (rate(x_total{result="refused"}[5m])) > 0.2 and on (ns) up > 1e3`:                        {"x_total", "up"},
		`min(castellan_ca_certificate_expiry_timestamp_seconds{cert="root"}) - time() < 7 * 86400`:                    {"castellan_ca_certificate_expiry_timestamp_seconds"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

// scrapeNames returns the sample names in a /metrics page (histograms as
// their _bucket, _sum and _count series).
func scrapeNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestMonitoringNamesOnlyExportedMetrics runs the real castellan-server and
// castellan-agent, has a workload get an SVID (so labelled series exist),
// scrapes both, and checks that every metric the dashboard and the alerts
// select is one of theirs.
func TestMonitoringNamesOnlyExportedMetrics(t *testing.T) {
	r := newAgentRig(t)
	r.startServer()
	token := strings.Fields(r.ctlRun("token", "create", "--node", "mon-node", "--ttl", "10m"))[0]
	r.ctlRun("entry", "create", "--spiffe-id", "spiffe://cluster.local/ns/mon/sa/workload", "--node", "mon-node",
		"--selector", fmt.Sprintf("unix:uid:%d", os.Getuid()))
	r.startAgent(token)
	agentEventually(t, 20*time.Second, "agent socket", func() bool { _, err := os.Stat(r.sock); return err == nil })
	// Until the agent has synced the entry and signed its SVID, the
	// Workload API answers "caller matches no identity": ask again.
	var fetchErr error
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last Workload API error: %v\nagent log:\n%s", fetchErr, r.agentLog.String())
		}
	})
	agentEventually(t, time.Minute, "the workload SVID", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, fetchErr = workloadapi.FetchX509Context(ctx, workloadapi.WithAddr("unix://"+r.sock))
		return fetchErr == nil
	})

	exported := scrapeNames(t, "http://"+r.srvHTTP+"/metrics")
	for n := range scrapeNames(t, "http://"+r.agentHTTP+"/metrics") {
		exported[n] = true
	}
	used := map[string][]string{}
	for where, expr := range dashboardExprs(t) {
		for _, n := range metricNames(expr) {
			used[n] = append(used[n], "dashboard panel "+where)
		}
	}
	for alert, expr := range alertExprs(t) {
		for _, n := range metricNames(expr) {
			used[n] = append(used[n], "alert "+alert)
		}
	}
	if len(used) < 12 {
		t.Fatalf("found only %d metric names in the dashboard and alerts: %v", len(used), used)
	}
	var missing []string
	for n, where := range used {
		if !exported[n] {
			sort.Strings(where)
			missing = append(missing, fmt.Sprintf("%s (used by %s)", n, strings.Join(where, ", ")))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics neither castellan-server nor castellan-agent exports:\n  %s", strings.Join(missing, "\n  "))
	}
}
