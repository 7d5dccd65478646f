"""Names only the HashiCorp Vault provider uses: the Vault CSI provider's class parameters and the init container's
variables. The ServiceAccount annotation, the pod annotations and the ref grammar are shared: webhook.names.
"""

from __future__ import annotations

PROVIDER = "vault"  # spec.provider of a SecretProviderClass the Vault CSI provider serves

# spec.parameters the Vault CSI provider reads (its documented SecretProviderClass configuration).
ROLE_NAME = "roleName"
ADDRESS = "vaultAddress"
NAMESPACE = "vaultNamespace"  # Vault Enterprise namespaces
AUTH_MOUNT = "vaultKubernetesMountPath"  # the older name, read by every provider version; kvinject writes it
AUTH_MOUNT_NEW = "vaultAuthMountPath"  # its successor in newer provider versions
AUDIENCE = "audience"  # of the ServiceAccount token the provider requests for the pod
CA_CERT_PATH = "vaultCACertPath"  # a file on the provider's own pod
CA_DIRECTORY = "vaultCADirectory"
CA_PEM = "vaultCAPem"
TLS_SERVER_NAME = "vaultTLSServerName"
SKIP_TLS_VERIFY = "vaultSkipTLSVerify"
OBJECTS = "objects"
# Older provider versions read the pod's token from this file instead of requesting one for the pod.
TOKEN_PATH = "KubernetesServiceAccountPath"
# What the driver adds about the pod; from a volume's attributes they would speak for the pod.
DRIVER_PREFIX = "csi.storage.k8s.io/"

# One `objects` entry (a YAML list of maps).
OBJECT_NAME = "objectName"
SECRET_PATH = "secretPath"
SECRET_KEY = "secretKey"
METHOD = "method"
SECRET_ARGS = "secretArgs"
OBJECT_FIELDS = frozenset({OBJECT_NAME, SECRET_PATH, SECRET_KEY, METHOD, SECRET_ARGS, "encoding", "filePermission"})

# The provider's defaults when a class names no auth mount or address: its -vault-mount and -vault-addr flags.
PROVIDER_DEFAULT_AUTH_MOUNT = "kubernetes"

# The init container's variables: Vault's own names for the address and CA, kvinject's for the login.
ENV_ADDRESS = "VAULT_ADDR"
ENV_CA_CERT = "VAULT_CACERT"
ENV_ROLE = "KVINJECT_HASHICORP_VAULT_ROLE"
ENV_AUTH_MOUNT = "KVINJECT_HASHICORP_VAULT_AUTH_MOUNT"
ENV_TOKEN_FILE = "KVINJECT_HASHICORP_VAULT_TOKEN_FILE"
CA_KEY = "ca.crt"  # the ConfigMap key of the CA bundle beside the token

FETCH_ENVIRONMENT = {
    ENV_ADDRESS: "HashiCorp Vault's address, https://... (required)",
    ENV_ROLE: "the Kubernetes-auth role to log in as (required)",
    ENV_AUTH_MOUNT: "the Kubernetes auth method's mount (default: kubernetes)",
    ENV_TOKEN_FILE: "the projected ServiceAccount token sent to the login (required)",
    ENV_CA_CERT: "CA bundle trusted for Vault (default: the image's public roots)",
}
