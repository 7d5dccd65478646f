"""Every name kvinject shares with users, the apiserver, the CSI driver and its own init container, defined once.

Provider-neutral names live here; a secret store's own names (Azure's ServiceAccount annotations, the
AZURE_* variables, its token audience) live in `webhook.providers.<store>.names`. Modules and tests import
these instead of writing the strings again.
"""

from __future__ import annotations

import re

# -- The annotation contract (DESIGN.md) ---------------------------------------------------------------

PREFIX = "kvinject.io/"
INJECT_LABEL = PREFIX + "inject"
VAULT = PREFIX + "vault"
SECRET_PREFIX = PREFIX + "secret-"
ENV_PREFIX = PREFIX + "env-"
MODE = PREFIX + "mode"
CONTAINERS = PREFIX + "containers"
MOUNT_PATH = PREFIX + "mount-path"
PROVIDER_CLASS = PREFIX + "provider-class"
INIT_FIRST = PREFIX + "init-first"
STORE = PREFIX + "store"  # which secret store every ref of the pod names (docs/vault-design.md)
VAULT_ROLE = PREFIX + "vault-role"  # store vault: the Kubernetes-auth role, over the ServiceAccount's
REFRESH = PREFIX + "refresh"  # mode init: re-read the objects at this interval in a native sidecar (docs/rotation.md)
# csi mode: roll the pod's Deployment/StatefulSet/DaemonSet when a mounted object's version changes (docs/rotation.md).
RESTART_ON_CHANGE = PREFIX + "restart-on-change"
STATUS = PREFIX + "status"
STATUS_INJECTED = "injected"
# kvinject's record of the containers it injected into when it first injected the pod (names, comma-separated):
# the default targets from then on, so a container a later webhook adds gets nothing unless it is named.
INJECTED_CONTAINERS = PREFIX + "injected-containers"
DEFAULT_MOUNT_PATH = "/mnt/secrets"

# Namespace labels an administrator sets.
ENFORCEMENT_LABEL = PREFIX + "enforcement"
LIVE_VERIFY_LABEL = PREFIX + "live-verify"

# Events kvinject writes (webhook/cluster/events.py): on a pod's owner, or the object itself.
EVENT_WOULD_DENY = "KvinjectWouldDeny"  # audit or warn: admitted, but enforce would deny it
EVENT_DENIED = "KvinjectDenied"  # denied: the controller's FailedCreate says the same, this names kvinject
EVENT_IGNORED = "KvinjectAnnotationsIgnored"  # kvinject.io/ annotations on a pod that is not opted in
EVENT_COMPONENT = "kvinject"
EVENT_RESTARTED = "KvinjectRestarted"  # restart-on-change rolled a workload (on the workload)
EVENT_RESTART_UNSUPPORTED = "KvinjectRestartUnsupported"  # restart-on-change on a pod kvinject cannot roll

# restart-on-change: what kvinject records on a workload it watches (its metadata, never its pod template), and
# the pod-template annotation that rolls it, the one `kubectl rollout restart` writes.
RESTART_STATE = PREFIX + "restart-state"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

# -- Grammars of the contract (Key Vault's naming rules) -----------------------------------------------

VAULT_NAME = re.compile(r"^[a-zA-Z](?:[a-zA-Z0-9]|-(?!-)){1,22}[a-zA-Z0-9]$")
OBJECT_NAME = re.compile(r"^[a-zA-Z0-9-]{1,127}$")
OBJECT_VERSION = re.compile(r"^[a-zA-Z0-9]{1,32}$")

# -- Stores, and HashiCorp Vault's ref grammar: `<mount>/<path>#<key>` on a KV v2 engine ---------------

STORE_AZURE = "azure"
STORE_VAULT = "vault"
DEFAULT_STORE = STORE_AZURE
# Conservative subsets of what Vault accepts, so every part is also safe in YAML, messages and file names.
VAULT_MOUNT = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?$")
VAULT_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_-](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_-])?$")
VAULT_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
VAULT_ROLE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?$")
MAX_VAULT_PATH = 512
# KV v2's API paths: a ref names the logical path, the engine serves it under <mount>/data/ (and metadata/).
KV2_API_SEGMENTS = ("data", "metadata")

# -- What kvinject adds to a pod -----------------------------------------------------------------------

VOLUME_NAME = "kvinject-secrets"
INIT_CONTAINER = "kvinject-fetch"
INIT_COMMAND = ("kvinject", "fetch")
# The refresh sidecar (kvinject.io/refresh): a native sidecar, i.e. an init container with restartPolicy Always,
# running `kvinject fetch --refresh <seconds>s` right after kvinject-fetch.
REFRESH_CONTAINER = "kvinject-refresh"
REFRESH_FLAG = "--refresh"
# The published images, tagged with webhook.__version__: the server, and the init container's (docs/images.md).
IMAGE_REPOSITORY = "ghcr.io/kvinject/kvinject"
FETCH_IMAGE_REPOSITORY = "ghcr.io/kvinject/kvinject-fetch"
TOKEN_VOLUME = "kvinject-azure-token"
TOKEN_DIR = "/var/run/secrets/kvinject/azure-token"
TOKEN_FILE = "azure-identity-token"
OUTPUT_DIR = "/kvinject/secrets"

# -- The generated SecretProviderClass and the Secrets Store CSI driver --------------------------------

CSI_DRIVER = "secrets-store.csi.k8s.io"
CLASS_GROUP = "secrets-store.csi.x-k8s.io"
CLASS_API_VERSION = CLASS_GROUP + "/v1"
CLASS_KIND = "SecretProviderClass"
CLASS_ATTRIBUTE = "secretProviderClass"  # the volume attribute naming the class
CLASS_NAME_PREFIX = "kvinject-"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kvinject"}

# -- The init container's environment (set by the webhook, read by `kvinject fetch`) -------------------

ENV_OBJECTS = "KVINJECT_OBJECTS"
ENV_OUTPUT_DIR = "KVINJECT_OUTPUT_DIR"
ENV_FS_GROUP = "KVINJECT_FS_GROUP"
ENV_TERMINATION_LOG = "KVINJECT_TERMINATION_LOG"
ENV_TIMEOUT = "KVINJECT_FETCH_TIMEOUT_SECONDS"
ENV_RETRIES = "KVINJECT_FETCH_RETRIES"
ENV_STORE = "KVINJECT_STORE"  # which store to read (absent: the default store, so Azure's env is unchanged)

# -- Identity annotations a ServiceAccount carries (Azure Workload Identity's; the cluster records keep them) --

SA_CLIENT_ID = "azure.workload.identity/client-id"
SA_TENANT_ID = "azure.workload.identity/tenant-id"
# HashiCorp Vault: the Kubernetes-auth role a ServiceAccount reads as (store vault).
SA_VAULT_ROLE = "vault.kvinject.io/role"

# -- Azure's public cloud: the defaults of the server settings and of `kvinject fetch` -------------------

DEFAULT_AUTHORITY = "https://login.microsoftonline.com/"
DEFAULT_VAULT_DNS_SUFFIX = "vault.azure.net"

# -- Kubernetes ----------------------------------------------------------------------------------------

DEFAULT_SERVICE_ACCOUNT = "default"
