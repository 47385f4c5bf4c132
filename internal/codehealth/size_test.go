package codehealth

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// moduleRoot is the directory of this module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return dir
}

// sourceFiles returns this module's non-test, non-generated Go files by
// package directory.
func sourceFiles(t *testing.T, root string) map[string][]string {
	t.Helper()
	pkgs := map[string][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || hasGoMod(p)) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") && !generated(t, p) {
			pkgs[filepath.Dir(p)] = append(pkgs[filepath.Dir(p)], p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

func hasGoMod(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "go.mod"))
	return err == nil
}

// generated reports whether p carries Go's "Code generated ... DO NOT
// EDIT." marker.
func generated(t *testing.T, p string) bool {
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(data, []byte("DO NOT EDIT.")) && bytes.Contains(data, []byte("// Code generated"))
}

// TestNoFunctionOverTheLimit: every function and method outside tests
// fits in MaxFuncLines lines, counted from its signature to its closing
// brace.
func TestNoFunctionOverTheLimit(t *testing.T) {
	root := moduleRoot(t)
	fset := token.NewFileSet()
	funcs := 0
	for _, files := range sourceFiles(t, root) {
		for _, p := range files {
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				funcs++
				if n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1; n > MaxFuncLines {
					rel, _ := filepath.Rel(root, p)
					t.Errorf("%s: %s is %d lines (at most %d): split it into named steps", rel, fd.Name.Name, n, MaxFuncLines)
				}
			}
		}
	}
	if funcs < 1000 {
		t.Fatalf("only %d functions found under %s: the walk is not reading the tree", funcs, root)
	}
}

// TestNoPackageOverTheLimit: every package outside tests fits in
// MaxPackageLines lines.
func TestNoPackageOverTheLimit(t *testing.T) {
	root := moduleRoot(t)
	pkgs := sourceFiles(t, root)
	if len(pkgs) < 50 {
		t.Fatalf("only %d packages found under %s: the walk is not reading the tree", len(pkgs), root)
	}
	for dir, files := range pkgs {
		lines := 0
		for _, p := range files {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			lines += bytes.Count(data, []byte("\n"))
		}
		if lines > MaxPackageLines {
			rel, _ := filepath.Rel(root, dir)
			t.Errorf("%s: %d lines in %d files (at most %d): split it by what each part owns", rel, lines, len(files), MaxPackageLines)
		}
	}
}
