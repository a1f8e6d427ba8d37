// Package tokenfile reads the bearer tokens meshrelay keeps in files: the relay identity
// token (server and agents) and the admin token of the config API (server and CLI).
package tokenfile

import (
	"fmt"
	"os"
	"strings"
)

// Read returns the token in the file at path, without surrounding white space; an empty
// file is an error.
func Read(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return t, nil
}
