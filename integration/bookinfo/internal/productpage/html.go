package productpage

import (
	"bytes"
	_ "embed"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed page.html.tmpl
var pageHTML string

//go:embed index.html.tmpl
var indexHTML string

// templates are parsed once per handler; they are never modified after.
type templates struct {
	page, index *template.Template
}

func parseTemplates() templates {
	funcs := template.FuncMap{
		"until":   func(t time.Time, at time.Time) string { return until(t.Sub(at)) },
		"expired": func(t time.Time, at time.Time) bool { return !t.After(at) },
		"clock":   func(t time.Time) string { return t.UTC().Format("15:04:05 UTC") },
		"stars":   stars,
		"short":   shortSerial,
		"safe":    func(s string) template.HTML { return template.HTML(s) }, // catalog HTML, not user input
		"service": func(id string) string { return id[strings.LastIndex(id, "/")+1:] },
	}
	return templates{
		page:  template.Must(template.New("page").Funcs(funcs).Parse(pageHTML)),
		index: template.Must(template.New("index").Funcs(funcs).Parse(indexHTML)),
	}
}

// until formats a remaining lifetime as "1m05s", or "expired".
func until(d time.Duration) string {
	if d <= 0 {
		return "expired"
	}
	d = d.Round(time.Second)
	if d < time.Minute {
		return strconv.Itoa(int(d.Seconds())) + "s"
	}
	return d.Truncate(time.Second).String()
}

// stars returns n full stars followed by 5-n empty ones.
func stars(n int) string {
	n = min(max(n, 0), 5)
	return strings.Repeat("★", n) + strings.Repeat("☆", 5-n)
}

// shortSerial abbreviates a long hexadecimal serial to its first and last
// eight digits.
func shortSerial(s string) string {
	if len(s) <= 20 {
		return s
	}
	return s[:8] + "…" + s[len(s)-8:]
}

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	a.render(w, a.tmpl.index, nil)
}

func (a *app) productPage(w http.ResponseWriter, r *http.Request) {
	p, ok := a.cfg.Catalog.Product(0)
	if !ok {
		http.Error(w, "productpage: the catalog has no product 0", http.StatusNotFound)
		return
	}
	pg := a.page(r.Context(), p)
	pg.Refresh = 10
	if v := r.URL.Query().Get("refresh"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			pg.Refresh = n
		}
	}
	a.render(w, a.tmpl.page, pg)
}

func (a *app) render(w http.ResponseWriter, t *template.Template, data any) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		a.cfg.Log.Error("render failed", "template", t.Name(), "error", err)
		http.Error(w, "productpage: cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = buf.WriteTo(w)
}
