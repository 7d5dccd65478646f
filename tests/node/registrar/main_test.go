package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// The kubelet's side of the exchange: GetInfo, then NotifyRegistrationStatus, over the socket.
func TestRegistration(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "plugins_registry", "secrets-store.csi.k8s.io-reg.sock")
	r := &registrar{name: "secrets-store.csi.k8s.io", endpoint: "/k/plugins/csi-secrets-store/csi.sock", versions: []string{"1.0.0"}}
	done := make(chan error, 1)
	go func() { done <- run(socket, r) }()

	var conn *grpc.ClientConn
	var info *registerapi.PluginInfo
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		conn, err = grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err = registerapi.NewRegistrationClient(conn).GetInfo(ctx, &registerapi.InfoRequest{})
		cancel()
		if err == nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("GetInfo: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer conn.Close()
	if info.Type != registerapi.CSIPlugin || info.Name != r.name || info.Endpoint != r.endpoint ||
		len(info.SupportedVersions) != 1 || info.SupportedVersions[0] != "1.0.0" {
		t.Fatalf("GetInfo = %+v", info)
	}
	if _, err := registerapi.NewRegistrationClient(conn).NotifyRegistrationStatus(context.Background(),
		&registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}
}
