//go:build xen

package hvtest

func init() { xenBuild = true }
