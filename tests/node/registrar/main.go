// Command registrar is kvinject's stand-in for the CSI node-driver-registrar (not served by the Go
// module proxy reachable here): it serves the kubelet plugin registration API
// (k8s.io/kubelet/pkg/apis/pluginregistration/v1) on a socket in the kubelet's plugins_registry
// directory, so that the kubelet registers a CSI driver whose node service listens on -endpoint.
//
// The kubelet's plugin watcher finds the socket, calls GetInfo, connects to the endpoint it
// returns (NodeGetInfo), then reports the outcome with NotifyRegistrationStatus, which this
// program logs. Used only by kvinject's node tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// version is this program's own version, printed by -version.
const version = "kvinject-registrar 0.1.0"

type registrar struct {
	registerapi.UnimplementedRegistrationServer
	name     string
	endpoint string
	versions []string
}

func (r *registrar) GetInfo(_ context.Context, _ *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	log.Printf("GetInfo: type=%s name=%s endpoint=%s versions=%v", registerapi.CSIPlugin, r.name, r.endpoint, r.versions)
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.name,
		Endpoint:          r.endpoint,
		SupportedVersions: r.versions,
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if s.PluginRegistered {
		log.Printf("NotifyRegistrationStatus: %s registered with the kubelet", r.name)
	} else {
		log.Printf("NotifyRegistrationStatus: %s NOT registered: %s", r.name, s.Error)
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func main() {
	socket := flag.String("socket", "", "path of the registration socket to listen on, e.g. <kubelet-root>/plugins_registry/secrets-store.csi.k8s.io-reg.sock (required)")
	name := flag.String("driver-name", "secrets-store.csi.k8s.io", "CSI driver name reported to the kubelet")
	endpoint := flag.String("endpoint", "", "path of the CSI driver's node socket, as the kubelet should dial it, e.g. <kubelet-root>/plugins/csi-secrets-store/csi.sock (required)")
	versions := flag.String("supported-versions", "1.0.0", "comma-separated CSI versions reported to the kubelet")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	log.SetPrefix("registrar: ")

	if *showVersion {
		fmt.Println(version)
		return
	}
	if *socket == "" || *endpoint == "" {
		fmt.Fprintln(os.Stderr, "registrar: -socket and -endpoint are required")
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*socket, &registrar{name: *name, endpoint: strings.TrimPrefix(*endpoint, "unix://"), versions: strings.Split(*versions, ",")}); err != nil {
		log.Fatal(err)
	}
}

func run(socket string, r *registrar) error {
	if err := os.MkdirAll(filepath.Dir(socket), 0o750); err != nil {
		return err
	}
	// A socket left by an earlier run would make Listen fail.
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", socket, err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	defer os.Remove(socket)

	srv := grpc.NewServer()
	registerapi.RegisterRegistrationServer(srv, r)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		log.Printf("%v: stopping", s)
		srv.GracefulStop()
	}()

	log.Printf("serving the registration of %s (endpoint %s) on %s", r.name, r.endpoint, socket)
	return srv.Serve(lis)
}
