package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/snapshot"
)

// DocumentError is an error in one YAML document of a file.
type DocumentError struct {
	Source   string // file name or "stdin"
	Document int    // 1-based index of the document in the file
	Line     int    // 1-based line of the file where the document starts
	Err      error
}

func (e *DocumentError) Error() string {
	return fmt.Sprintf("%s: document %d (line %d): %v", e.Source, e.Document, e.Line, e.Err)
}

func (e *DocumentError) Unwrap() error { return e.Err }

// Parse decodes every YAML (or JSON) document of data. It returns the valid objects and one
// error per invalid document; an invalid document never hides the valid ones. A document
// of kind List (what `kubectl get -o yaml` prints) has its items decoded.
func Parse(source string, data []byte) ([]Object, []error) {
	var objs []Object
	var errs []error
	docs := splitDocuments(data)
	if len(docs) > 1 && len(bytes.TrimSpace(stripComments(docs[0].data))) == 0 {
		docs = docs[1:] // a leading "---" does not start a document
	}
	for i, d := range docs {
		doc := d.data
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		docErr := func(err error) error { return &DocumentError{Source: source, Document: i + 1, Line: d.line, Err: err} }
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			errs = append(errs, docErr(&FieldError{Reason: "malformed YAML: " + fileLines(err.Error(), d.line-1)}))
			continue
		}
		if string(js) == "null" {
			continue
		}
		var list struct {
			Kind  string            `json:"kind"`
			Items []json.RawMessage `json:"items"`
		}
		if json.Unmarshal(js, &list) == nil && list.Kind == "List" {
			for j, item := range list.Items {
				o, err := Decode(item)
				if err != nil {
					errs = append(errs, docErr(fmt.Errorf("items[%d]: %w", j, err)))
					continue
				}
				o.Source = source
				objs = append(objs, o)
			}
			continue
		}
		o, err := Decode(js)
		if err != nil {
			errs = append(errs, docErr(err))
			continue
		}
		o.Source = source
		objs = append(objs, o)
	}
	return objs, errs
}

// document is one YAML document of a file and the file line it starts at (1-based).
type document struct {
	data []byte
	line int
}

func splitDocuments(data []byte) []document {
	var docs []document
	var cur bytes.Buffer
	start := 1
	for n, line := range bytes.SplitAfter(data, []byte("\n")) {
		if t := bytes.TrimRight(line, " \t\r\n"); bytes.Equal(t, []byte("---")) || bytes.HasPrefix(t, []byte("--- ")) {
			docs = append(docs, document{bytes.Clone(cur.Bytes()), start})
			cur.Reset()
			start = n + 2 // the line after the separator
			continue
		}
		cur.Write(line)
	}
	return append(docs, document{cur.Bytes(), start})
}

// yamlLine matches the line numbers the YAML parser puts in its messages ("yaml: line 2:",
// "line 3: cannot unmarshal"), which count from the start of the document.
var yamlLine = regexp.MustCompile(`\bline (\d+)\b`)

// fileLines rewrites the document-relative line numbers of a YAML parser message into
// line numbers of the file, for a document that starts after offset lines.
func fileLines(msg string, offset int) string {
	if offset == 0 {
		return msg
	}
	return yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
		n, err := strconv.Atoi(yamlLine.FindStringSubmatch(m)[1])
		if err != nil {
			return m
		}
		return "line " + strconv.Itoa(n+offset)
	})
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

// IsManifest reports whether a file name looks like a YAML or JSON manifest.
func IsManifest(name string) bool {
	if strings.HasPrefix(filepath.Base(name), ".") {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// LoadPath reads a manifest file, or every manifest under a directory (recursively, in
// lexical order). Later definitions of the same key replace earlier ones.
func LoadPath(path string) ([]Object, []error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, []error{fmt.Errorf("read manifests: %w", err)}
	}
	var files []string
	if info.IsDir() {
		err := filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && p != path && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			if !d.IsDir() && IsManifest(p) {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, []error{fmt.Errorf("walk %s: %w", path, err)}
		}
		sort.Strings(files)
	} else {
		files = []string{path}
	}
	var objs []Object
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // removed while we walked
			}
			errs = append(errs, fmt.Errorf("read %s: %w", f, err))
			continue
		}
		o, e := Parse(f, data)
		objs = append(objs, o...)
		errs = append(errs, e...)
	}
	return Dedupe(objs), errs
}

// Dedupe keeps the last object of each key and sorts by key.
func Dedupe(objs []Object) []Object {
	m := make(map[string]Object, len(objs))
	for _, o := range objs {
		m[o.Key()] = o
	}
	out := make([]Object, 0, len(m))
	for _, o := range m {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// LoadInputsDir reads a directory holding one subdirectory per cluster, each laid out like
// an agent's discovery directory, into input snapshots (version 1) by cluster name.
func LoadInputsDir(dir string) (map[string]*snapshot.Snapshot, []error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, []error{fmt.Errorf("read inputs: %w", err)}
	}
	out := map[string]*snapshot.Snapshot{}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		objs, es := LoadPath(filepath.Join(dir, e.Name()))
		errs = append(errs, es...)
		rs := make([]snapshot.Resource, len(objs))
		for i, o := range objs {
			rs[i] = o.Resource()
		}
		out[e.Name()] = snapshot.New(1, 0, rs)
	}
	return out, errs
}
