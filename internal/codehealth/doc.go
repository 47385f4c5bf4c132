// Package codehealth holds the tests that keep the tree readable: no
// function over MaxFuncLines and no package over MaxPackageLines, counted
// over non-test, non-generated Go files of this module (nested modules,
// testdata and generated protobuf code excluded). It has no code of its
// own.
package codehealth

// Limits the tests enforce (issue 15). A change that needs more splits the
// function into named steps or the package by what each part owns.
const (
	MaxFuncLines    = 60
	MaxPackageLines = 1050
)
