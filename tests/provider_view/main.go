// provider-view prints what the Azure Key Vault provider for the Secrets Store CSI driver
// (github.com/Azure/secrets-store-csi-driver-provider-azure, the version pinned in go.mod)
// makes of a volume's merged parameters, before it talks to Entra ID or Key Vault.
//
// Input: one JSON document per line on stdin, {"parameters": {"key": "value", ...}}, the map the
// driver hands the provider (SecretProviderClass spec.parameters overridden by the volume's
// volumeAttributes). Output: one JSON line per input line, either the provider's view or
// {"error": "..."} when the provider would fail the mount.
//
// Every value is read with the provider's own exported functions (pkg/provider/types getters,
// types.GetObjectsArray, yaml.v3 into types.KeyVaultObject, auth.NewConfig) and go-autorest's
// azure.EnvironmentFromName. Three steps of the mount path are unexported in the provider and are
// restated here in a few lines each: trimming every string field of an object, the per-object
// checks on format, encoding and file name, and the vault-name check. The object-type check the
// provider makes when it fetches an object is restated too.
//
// Assumptions (what the parameters alone cannot tell):
//   - with a clientID, the driver supplies a service account token (the CSIDriver has tokenRequests);
//   - without pod identity, VM managed identity or a clientID, a nodePublishSecretRef carries
//     service-principal credentials (without one the provider fails the mount);
//   - cloudName AzureStackCloud reads the file named by cloudEnvFileName on the node: the file is
//     not read here, the cloud is reported as "AzureStackCloud".
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"

	"github.com/Azure/go-autorest/autorest/azure"
	"github.com/Azure/secrets-store-csi-driver-provider-azure/pkg/auth"
	"github.com/Azure/secrets-store-csi-driver-provider-azure/pkg/provider/types"
	"gopkg.in/yaml.v3"
)

type input struct {
	Parameters map[string]string `json:"parameters"`
}

type object struct {
	ObjectName           string `json:"objectName"`
	ObjectAlias          string `json:"objectAlias"`
	ObjectType           string `json:"objectType"`
	ObjectVersion        string `json:"objectVersion"`
	ObjectFormat         string `json:"objectFormat"`
	ObjectEncoding       string `json:"objectEncoding"`
	ObjectVersionHistory int32  `json:"objectVersionHistory"`
	FilePermission       string `json:"filePermission"`
}

type view struct {
	IdentityMode           string   `json:"identityMode"`
	ClientID               string   `json:"clientID"`
	TenantID               string   `json:"tenantID"`
	UserAssignedIdentityID string   `json:"userAssignedIdentityID"`
	KeyvaultName           string   `json:"keyvaultName"`
	CloudName              string   `json:"cloudName"`
	Cloud                  string   `json:"cloud"`
	CloudEnvFileName       string   `json:"cloudEnvFileName"`
	Objects                []object `json:"objects"`
}

var vaultNamePattern = regexp.MustCompile(`^[-A-Za-z0-9]+$`)

func readView(p map[string]string) (*view, error) {
	v := &view{
		KeyvaultName:           types.GetKeyVaultName(p),
		CloudName:              types.GetCloudName(p),
		UserAssignedIdentityID: types.GetUserAssignedIdentityID(p),
		TenantID:               types.GetTenantID(p),
		CloudEnvFileName:       types.GetCloudEnvFileName(p),
		ClientID:               types.GetClientID(p),
		Objects:                []object{},
	}
	usePodIdentity, err := types.GetUsePodIdentity(p)
	if err != nil {
		return nil, fmt.Errorf("usePodIdentity: %w", err)
	}
	useVMManagedIdentity, err := types.GetUseVMManagedIdentity(p)
	if err != nil {
		return nil, fmt.Errorf("useVMManagedIdentity: %w", err)
	}
	if v.KeyvaultName == "" {
		return nil, fmt.Errorf("keyvaultName is not set")
	}
	if v.TenantID == "" {
		return nil, fmt.Errorf("tenantId is not set")
	}

	switch {
	case v.CloudName == "":
		v.Cloud = "" // the provider's configured default
	case strings.EqualFold(v.CloudName, "AzureStackCloud"):
		v.Cloud = "AzureStackCloud"
	default:
		env, err := azure.EnvironmentFromName(v.CloudName)
		if err != nil {
			return nil, fmt.Errorf("cloudName: %w", err)
		}
		v.Cloud = env.Name
	}

	token := ""
	if v.ClientID != "" {
		token = "token-from-the-driver"
	}
	servicePrincipal := map[string]string{"clientid": "from-nodePublishSecretRef", "clientsecret": "from-nodePublishSecretRef"}
	config, err := auth.NewConfig(usePodIdentity, useVMManagedIdentity, v.UserAssignedIdentityID, v.ClientID, token, servicePrincipal)
	if err != nil {
		return nil, fmt.Errorf("auth config: %w", err)
	}
	// The order of auth.Config.GetCredential's cases.
	switch {
	case config.UsePodIdentity:
		v.IdentityMode = "pod-identity"
	case config.UseVMManagedIdentity:
		v.IdentityMode = "vm-managed-identity"
	case config.AADClientID != "" && config.AADClientSecret != "":
		v.IdentityMode = "service-principal"
	case config.WorkloadIdentityClientID != "" && config.WorkloadIdentityToken != "":
		v.IdentityMode = "workload"
	default:
		return nil, fmt.Errorf("no identity mode is enabled")
	}

	text := types.GetObjects(p)
	if text == "" {
		return nil, fmt.Errorf("objects is not set")
	}
	array, err := types.GetObjectsArray(text)
	if err != nil {
		return nil, fmt.Errorf("objects: %w", err)
	}
	for i, item := range array.Array {
		var kv types.KeyVaultObject
		if err := yaml.Unmarshal([]byte(item), &kv); err != nil {
			return nil, fmt.Errorf("objects[%d]: %w", i, err)
		}
		kv.ObjectName = strings.TrimSpace(kv.ObjectName)
		kv.ObjectAlias = strings.TrimSpace(kv.ObjectAlias)
		kv.ObjectVersion = strings.TrimSpace(kv.ObjectVersion)
		kv.ObjectType = strings.TrimSpace(kv.ObjectType)
		kv.ObjectFormat = strings.TrimSpace(kv.ObjectFormat)
		kv.ObjectEncoding = strings.TrimSpace(kv.ObjectEncoding)
		kv.FilePermission = strings.TrimSpace(kv.FilePermission)
		if err := checkObject(kv); err != nil {
			return nil, fmt.Errorf("objects[%d]: %w", i, err)
		}
		v.Objects = append(v.Objects, object{
			ObjectName: kv.ObjectName, ObjectAlias: kv.ObjectAlias, ObjectType: kv.ObjectType,
			ObjectVersion: kv.ObjectVersion, ObjectFormat: kv.ObjectFormat, ObjectEncoding: kv.ObjectEncoding,
			ObjectVersionHistory: kv.ObjectVersionHistory, FilePermission: kv.FilePermission,
		})
	}
	if len(v.Objects) == 0 {
		return v, nil // the provider mounts nothing and checks nothing further
	}
	if n := len(v.KeyvaultName); n < 3 || n > 24 || !vaultNamePattern.MatchString(v.KeyvaultName) {
		return nil, fmt.Errorf("invalid vault name")
	}
	for i, o := range v.Objects {
		switch o.ObjectType {
		case types.VaultObjectTypeSecret, types.VaultObjectTypeKey, types.VaultObjectTypeCertificate:
		default:
			return nil, fmt.Errorf("objects[%d]: invalid objectType (fails when fetched)", i)
		}
	}
	return v, nil
}

// checkObject restates the provider's per-object checks made before any fetch.
func checkObject(kv types.KeyVaultObject) error {
	if f := kv.ObjectFormat; f != "" {
		if !strings.EqualFold(f, types.ObjectFormatPEM) && !strings.EqualFold(f, types.ObjectFormatPFX) {
			return fmt.Errorf("invalid objectFormat")
		}
		if f == types.ObjectFormatPFX && kv.ObjectType != types.VaultObjectTypeSecret {
			return fmt.Errorf("pfx only for secrets")
		}
	}
	if e := kv.ObjectEncoding; e != "" {
		if kv.ObjectType != types.VaultObjectTypeSecret {
			return fmt.Errorf("objectEncoding only for secrets")
		}
		if !strings.EqualFold(e, types.ObjectEncodingHex) && !strings.EqualFold(e, types.ObjectEncodingBase64) &&
			!strings.EqualFold(e, types.ObjectEncodingUtf8) {
			return fmt.Errorf("invalid objectEncoding")
		}
	}
	name := kv.GetFileName()
	if name == "" {
		return fmt.Errorf("empty file name")
	}
	if filepath.IsAbs(name) {
		return fmt.Errorf("absolute file name")
	}
	for _, part := range strings.Split(filepath.ToSlash(name), "/") {
		if part == ".." {
			return fmt.Errorf("file name with a '..' element")
		}
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("file name containing '..'")
	}
	return nil
}

// providerVersion is the provider module version this binary was built with.
func providerVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/Azure/secrets-store-csi-driver-provider-azure" {
				return dep.Version
			}
		}
	}
	return "unknown"
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println("provider-view github.com/Azure/secrets-store-csi-driver-provider-azure " + providerVersion())
		return
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for in.Scan() {
		var doc input
		var result any
		if err := json.Unmarshal(in.Bytes(), &doc); err != nil {
			result = map[string]string{"error": "bad input: " + err.Error()}
		} else if v, err := readView(doc.Parameters); err != nil {
			result = map[string]string{"error": err.Error()}
		} else {
			result = v
		}
		if err := enc.Encode(result); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := out.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
