package ui

import (
	"fmt"
	"html/template"
	"strings"
	"time"
)

var funcs = template.FuncMap{
	"rfc":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"clock": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	"join":  func(s []string) string { return strings.Join(s, ", ") },
	"add":   func(a, b int) int { return a + b },
	// class turns a state ("out of sync") into a CSS class ("out-of-sync").
	"class": func(s string) string { return strings.ReplaceAll(strings.ToLower(s), " ", "-") },
	// codeclass colours an HTTP response code: 5xx bad, 4xx warn, else ok.
	"codeclass": func(code string) string {
		switch {
		case strings.HasPrefix(code, "5"):
			return "bad"
		case strings.HasPrefix(code, "4"):
			return "warn"
		}
		return "ok"
	},
	"days": func(d time.Duration) string {
		if d >= 48*time.Hour {
			return fmt.Sprintf("%d days", int(d.Hours()/24))
		}
		return d.String()
	},
}
