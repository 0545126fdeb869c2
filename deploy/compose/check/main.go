// Command compose-check loads Compose files the way `docker compose config` does (the
// compose-go loader that Docker Compose is built on: the Compose Specification's JSON schema,
// interpolation, consistency checks) and prints each resolved project as JSON, so that a test
// can assert on what a compose tool would run. It exits non-zero, naming the file, on the
// first file that a compose tool would refuse.
//
//	compose-check deploy/compose/compose.yaml deploy/compose/kafka.yaml
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE...")
		os.Exit(2)
	}
	projects := map[string]json.RawMessage{}
	for _, file := range os.Args[1:] {
		project, err := load(file)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
			os.Exit(1)
		}
		projects[file] = project
	}
	out, err := json.MarshalIndent(projects, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}

func load(file string) (json.RawMessage, error) {
	absolute, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	content, err := os.ReadFile(absolute)
	if err != nil {
		return nil, err
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(absolute),
		ConfigFiles: []types.ConfigFile{{Filename: absolute, Content: content}},
		// The files' own defaults (${VAR:-default}), not whatever this shell exports.
		Environment: types.Mapping{},
	}
	project, err := loader.LoadWithContext(context.Background(), details)
	if err != nil {
		return nil, err
	}
	return project.MarshalJSON()
}
