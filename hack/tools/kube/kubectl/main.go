// Command kubectl is the upstream kubectl, built from the Go module proxy at
// the cluster's version, for `make demo` and debugging the end-to-end tests
// (Debian 12 does not package it).
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
