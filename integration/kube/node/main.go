// Command kube-node runs the Kubernetes v1.34.4 components that a real
// single-node cluster needs besides etcd and the kube-apiserver (which
// kube-testenv runs): the kubelet, kube-scheduler, kube-controller-manager
// and kube-proxy, all built from k8s.io/kubernetes into one multi-call
// binary for Castellan's cluster tests (integration/cluster).
//
// Usage:
//
//	kube-node kubelet [kubelet flags]
//	kube-node kube-scheduler [kube-scheduler flags]
//	kube-node kube-controller-manager [kube-controller-manager flags]
//	kube-node kube-proxy [kube-proxy flags]
//	kube-node version
//
// Each subcommand behaves exactly like the upstream binary of that name
// (same cobra command, run through k8s.io/component-base/cli as upstream's
// main does), so "kube-node kubelet --help" lists the kubelet's flags.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as in the upstream mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as in the upstream mains
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as in the upstream mains
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// components maps a subcommand to the constructor of its upstream command.
var components = map[string]func() *cobra.Command{
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-proxy":              proxy.NewProxyCommand,
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "version" {
		fmt.Println("kube-node: kubelet, kube-scheduler, kube-controller-manager, kube-proxy v1.34.4")
		return
	}
	newCommand, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "kube-node: unknown component %q\n", name)
		usage()
		os.Exit(2)
	}
	command := newCommand()
	command.SetArgs(os.Args[2:])
	os.Exit(cli.Run(command))
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kube-node kubelet|kube-scheduler|kube-controller-manager|kube-proxy [flags]")
	fmt.Fprintln(os.Stderr, "       kube-node version")
}
