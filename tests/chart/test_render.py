"""`helm template` with tables of values: each value lands where it should, and nothing else changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.chart.rendered import Objects, container, env, objects_of, one, pod_spec, webhooks
from tests.harness.helm import Helm, by_key

pytestmark = pytest.mark.e2e

CLUSTER_SCOPED = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "Namespace",
}
WEBHOOK_CONFIGS = [
    ("MutatingWebhookConfiguration", "kvinject"),
    ("ValidatingWebhookConfiguration", "kvinject"),
    ("ValidatingWebhookConfiguration", "kvinject-provider-classes"),
]
OTHERS = ("validate-others.kvinject.io", "validate-classes-others.kvinject.io")
KVINJECTS = ("mutate.kvinject.io", "validate.kvinject.io", "validate-classes.kvinject.io")


def kinds(r: Objects) -> set[str]:
    return {o["kind"] for o in r}


def cluster_role_rules(r: Objects) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = one(r, "ClusterRole", "kvinject")["rules"]
    return rules


def check_defaults(r: Objects) -> None:
    c = container(r)
    assert c["image"] == "ghcr.io/kvinject/kvinject:0.1.0" and "imagePullPolicy" not in c
    e = env(r)
    assert e["KVINJECT_INIT_IMAGE"] == "ghcr.io/kvinject/kvinject-fetch:0.1.0"
    assert e["KVINJECT_NOT_OPTED_IN_ENFORCEMENT"] == "audit" and "KVINJECT_ENFORCEMENT" not in e  # enforce
    assert e["KVINJECT_CERT_MODE"] == "self" and e["KVINJECT_CERT_SECRET"] == "kvinject-tls"
    assert {"name": "certs", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}} in pod_spec(r)["volumes"]
    assert "KVINJECT_LIVE_VERIFY" not in e
    assert "KVINJECT_RESTART_ON_CHANGE" not in e  # on
    assert [rule for rule in RESTART_RULES if rule not in cluster_role_rules(r)] == []
    hooks = webhooks(r)
    assert {n: h["failurePolicy"] for n, h in hooks.items()} == {
        **{n: "Fail" for n in KVINJECTS},
        **{n: "Ignore" for n in OTHERS},
    }
    assert all(h["timeoutSeconds"] == 5 for h in hooks.values())
    assert all("caBundle" not in h["clientConfig"] for h in hooks.values())  # kvinject writes it (self mode)
    assert one(r, "Deployment")["spec"]["replicas"] == 2
    assert one(r, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": {"app.kubernetes.io/name": "kvinject"}},
    }
    role = one(r, "Role", "kvinject-certificates")
    assert {tuple(rule.get("resourceNames", [])) for rule in role["rules"]} == {(), ("kvinject-tls",)}
    assert one(r, "RoleBinding", "kvinject-certificates")["roleRef"]["name"] == "kvinject-certificates"
    names = {tuple(rule.get("resourceNames", [])) for rule in cluster_role_rules(r)}
    assert ("kvinject",) in names and ("kvinject", "kvinject-provider-classes") in names
    assert kinds(r).isdisjoint({"ServiceMonitor", "NetworkPolicy", "Certificate", "Issuer", "Namespace"})
    assert [v["metadata"]["name"] for v in objects_of(r, "ValidatingAdmissionPolicy")] == [
        "kvinject-reserved-provider-classes"
    ]
    crd = one(r, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def check_rollout_enforce(r: Objects) -> None:
    assert env(r)["KVINJECT_NOT_OPTED_IN_ENFORCEMENT"] == "enforce"
    assert {h["failurePolicy"] for h in webhooks(r).values()} == {"Fail"}


def check_enforcement_warn(r: Objects) -> None:
    assert env(r)["KVINJECT_ENFORCEMENT"] == "warn"
    assert env(r)["KVINJECT_NOT_OPTED_IN_ENFORCEMENT"] == "audit"


def check_images(r: Objects) -> None:
    c = container(r)
    assert c["image"] == "registry.example.com/mirror/kvinject:1.2.3" and c["imagePullPolicy"] == "Always"
    assert env(r)["KVINJECT_INIT_IMAGE"] == "registry.example.com/mirror/kvinject-fetch:1.2.3"
    assert pod_spec(r)["imagePullSecrets"] == [{"name": "pull"}]
    assert one(r, "ServiceAccount")["imagePullSecrets"] == [{"name": "pull"}]


def check_digests(r: Objects) -> None:
    assert container(r)["image"] == "ghcr.io/kvinject/kvinject@sha256:" + "a" * 64
    assert env(r)["KVINJECT_INIT_IMAGE"] == "ghcr.io/kvinject/kvinject-fetch@sha256:" + "b" * 64


def check_cert_manager(r: Objects) -> None:
    by = by_key(r)
    selfsigned = by[("Issuer", "kvinject", "kvinject-selfsigned")]["spec"]
    ca_cert = by[("Certificate", "kvinject", "kvinject-ca")]["spec"]
    ca_issuer = by[("Issuer", "kvinject", "kvinject-ca")]["spec"]
    serving = by[("Certificate", "kvinject", "kvinject-serving")]["spec"]
    # selfSigned -> CA certificate -> CA issuer -> serving certificate in the Secret the pods mount.
    assert selfsigned == {"selfSigned": {}}
    assert ca_cert["isCA"] is True and ca_cert["issuerRef"] == {"name": "kvinject-selfsigned", "kind": "Issuer"}
    assert ca_issuer == {"ca": {"secretName": ca_cert["secretName"]}}
    assert serving["issuerRef"] == {"name": "kvinject-ca", "kind": "Issuer"} and "isCA" not in serving
    assert serving["secretName"] == "kvinject-tls"
    assert serving["dnsNames"] == ["kvinject.kvinject.svc", "kvinject.kvinject.svc.cluster.local"]
    # cainjector publishes the CA (it outlives the serving certificates it signs).
    for kind, name in WEBHOOK_CONFIGS:
        assert one(r, kind, name)["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": "kvinject/kvinject-ca"
        }
    assert env(r)["KVINJECT_CERT_MODE"] == "files"
    assert {"name": "certs", "secret": {"secretName": "kvinject-tls"}} in pod_spec(r)["volumes"]


def check_secret(r: Objects) -> None:
    for hook in webhooks(r).values():
        assert hook["clientConfig"]["caBundle"] == "Q0E="
    assert {"name": "certs", "secret": {"secretName": "my-tls"}} in pod_spec(r)["volumes"]
    assert env(r)["KVINJECT_CERT_MODE"] == "files" and env(r)["KVINJECT_CERT_SECRET"] == "my-tls"
    assert "Certificate" not in kinds(r)
    for kind, name in WEBHOOK_CONFIGS:
        assert "annotations" not in one(r, kind, name)["metadata"]


RESTART_RULES = [
    {
        "apiGroups": ["secrets-store.csi.x-k8s.io"],
        "resources": ["secretproviderclasspodstatuses"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": ["get", "patch"]},
]


def check_restart_on_change_off(r: Objects) -> None:
    assert env(r)["KVINJECT_RESTART_ON_CHANGE"] == "false"
    rules = cluster_role_rules(r)
    assert [rule for rule in RESTART_RULES if rule in rules] == []
    assert not any(rule["apiGroups"] == ["apps"] for rule in rules)
    assert [rule["verbs"] for rule in rules if "pods" in rule["resources"]] == [["list"]]  # the class checks' own


def check_live_verification(r: Objects) -> None:
    assert env(r)["KVINJECT_LIVE_VERIFY"] == "true"
    assert {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]} in cluster_role_rules(r)
    policy = one(r, "ValidatingAdmissionPolicy", "kvinject-token-requests")
    assert policy["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:kvinject:kvinject'"
    )
    binding = one(r, "ValidatingAdmissionPolicyBinding", "kvinject-token-requests")
    assert binding["spec"] == {"policyName": "kvinject-token-requests", "validationActions": ["Deny"]}


def check_other_namespace(r: Objects) -> None:
    ns = "platform-kvinject"
    for o in r:
        if o["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in o["metadata"], o["kind"]
        else:
            assert o["metadata"]["namespace"] == ns, o["kind"]
    for hook in webhooks(r).values():
        assert hook["clientConfig"]["service"]["namespace"] == ns
        assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", ns]
    sa = f"system:serviceaccount:{ns}:kvinject"
    reserved = one(r, "ValidatingAdmissionPolicy", "kvinject-reserved-provider-classes")
    assert f"request.userInfo.username == '{sa}'" in reserved["spec"]["validations"][0]["expression"]
    assert "system:serviceaccount:kvinject:" not in str(r)
    tokens = one(r, "ValidatingAdmissionPolicy", "kvinject-token-requests")
    assert f"'kube-node-lease', '{ns}']" in tokens["spec"]["validations"][3]["expression"]
    assert one(r, "ClusterRoleBinding")["subjects"] == [{"kind": "ServiceAccount", "name": "kvinject", "namespace": ns}]


def check_pdb_max_unavailable(r: Objects) -> None:
    spec = one(r, "PodDisruptionBudget")["spec"]
    assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec


def check_pdb_disabled(r: Objects) -> None:
    assert "PodDisruptionBudget" not in kinds(r)


def check_scheduling(r: Objects) -> None:
    spec = pod_spec(r)
    assert one(r, "Deployment")["spec"]["replicas"] == 3
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"] == [{"key": "CriticalAddonsOnly", "operator": "Exists"}]
    # Helm merges maps: the default anti-affinity stays unless set to null (docs/helm.md).
    assert spec["affinity"]["nodeAffinity"] == {"requiredDuringSchedulingIgnoredDuringExecution": NODE_TERMS}
    assert "podAntiAffinity" in spec["affinity"]
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spec["priorityClassName"] == "platform-critical"
    assert container(r)["resources"] == {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}


def check_no_affinity(r: Objects) -> None:
    assert "affinity" not in pod_spec(r)


def check_labels(r: Objects) -> None:
    for o in r:
        labels = o["metadata"]["labels"]
        assert labels["team"] == "platform" and labels["app.kubernetes.io/managed-by"] == "Helm", o["kind"]
        assert labels["app.kubernetes.io/instance"] == "kvinject"
    deployment = one(r, "Deployment")
    template = deployment["spec"]["template"]["metadata"]
    assert template["labels"] == {"app.kubernetes.io/name": "kvinject", "azure.workload.identity/use": "false"}
    assert template["annotations"] == {
        "prometheus.io/scrape": "false",
        "images.kvinject.io/fetch": "ghcr.io/kvinject/kvinject-fetch:0.1.0",
    }
    # Selectors never take the extra labels (a Deployment's selector cannot change after install).
    assert deployment["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "kvinject"}}
    assert one(r, "Service")["spec"]["selector"] == {"app.kubernetes.io/name": "kvinject"}
    assert one(r, "ServiceAccount")["metadata"]["annotations"] == {"example.com/owner": "platform"}


def check_webhook_settings(r: Objects) -> None:
    for hook in webhooks(r).values():
        assert hook["timeoutSeconds"] == 10
        assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "monitoring", "kvinject"]


def check_no_crd(r: Objects) -> None:
    assert "CustomResourceDefinition" not in kinds(r)


def check_crd_not_kept(r: Objects) -> None:
    assert "annotations" not in one(r, "CustomResourceDefinition")["metadata"]


def check_settings(r: Objects) -> None:
    e = env(r)
    assert e["KVINJECT_TENANT_ID"] == "72f988bf-86f1-41af-91ab-2d7cd011db47"
    assert e["KVINJECT_RELAXABLE_NAMESPACES"] == '["sandbox","dev"]'
    assert e["KVINJECT_CLOUD_NAME"] == "AzureStackCloud"
    assert e["KVINJECT_CLOUD_ENV_FILE"] == "/etc/kubernetes/azurestack.json"
    assert e["KVINJECT_INIT_VOLUME_SIZE"] == "8Mi" and e["KVINJECT_INIT_CA_CONFIGMAP"] == "private-ca"
    assert e["KVINJECT_LOG_FORMAT"] == "json"  # extraEnv
    assert {"name": "cloud-env", "mountPath": "/etc/kubernetes", "readOnly": True} in container(r)["volumeMounts"]
    assert {
        "name": "cloud-env",
        "configMap": {"name": "azurestack", "items": [{"key": "azurestack.json", "path": "azurestack.json"}]},
    } in pod_spec(r)["volumes"]


def check_service_monitor(r: Objects) -> None:
    sm = one(r, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint == {
        "port": "https",
        "scheme": "https",
        "path": "/metrics",
        "interval": "15s",
        "tlsConfig": {
            "serverName": "kvinject.kvinject.svc",
            "ca": {"secret": {"name": "kvinject-tls", "key": "ca.crt"}},
        },
    }
    assert sm["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "kvinject"}}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["kvinject"]}


def check_network_policy(r: Objects) -> None:
    np = one(r, "NetworkPolicy")["spec"]
    assert np["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "kvinject"}}
    assert np["policyTypes"] == ["Ingress", "Egress"]
    assert np["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]  # from anywhere
    assert np["egress"] == [{"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]}]


def check_network_policy_live(r: Objects) -> None:
    np = one(r, "NetworkPolicy")["spec"]
    assert np["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}], "from": [CONTROL_PLANE]}]
    api, dns, azure = np["egress"]
    assert api == {"ports": [{"port": 6443, "protocol": "TCP"}], "to": [CONTROL_PLANE]}
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}] and "to" not in dns
    assert azure == {"ports": [{"port": 443, "protocol": "TCP"}]}


NODE_TERMS = {"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]}
CONTROL_PLANE = {"ipBlock": {"cidr": "10.0.0.0/28"}}

# (id, values, namespace, check)
CASES: list[tuple[str, dict[str, Any], str, Callable[[Objects], None]]] = [
    ("defaults", {}, "kvinject", check_defaults),
    ("rollout-enforce", {"rollout": "enforce"}, "kvinject", check_rollout_enforce),
    ("enforcement-warn", {"enforcement": "warn"}, "kvinject", check_enforcement_warn),
    (
        "image-registry-tag-pull-secrets",
        {
            "image": {
                "registry": "registry.example.com",
                "repository": "mirror/kvinject",
                "fetchRepository": "mirror/kvinject-fetch",
                "tag": "1.2.3",
                "pullPolicy": "Always",
            },
            "imagePullSecrets": [{"name": "pull"}],
        },
        "kvinject",
        check_images,
    ),
    (
        "image-digests",
        {"image": {"digest": "sha256:" + "a" * 64, "fetchDigest": "sha256:" + "b" * 64}},
        "kvinject",
        check_digests,
    ),
    ("certificates-cert-manager", {"certificates": {"mode": "cert-manager"}}, "kvinject", check_cert_manager),
    (
        "certificates-secret",
        {"certificates": {"mode": "secret", "secretName": "my-tls", "caBundle": "Q0E="}},
        "kvinject",
        check_secret,
    ),
    ("live-verification", {"liveVerification": {"enabled": True}}, "kvinject", check_live_verification),
    ("restart-on-change-off", {"restartOnChange": {"enabled": False}}, "kvinject", check_restart_on_change_off),
    ("release-namespace", {"liveVerification": {"enabled": True}}, "platform-kvinject", check_other_namespace),
    ("pdb-max-unavailable", {"podDisruptionBudget": {"maxUnavailable": 1}}, "kvinject", check_pdb_max_unavailable),
    ("pdb-disabled", {"podDisruptionBudget": {"enabled": False}}, "kvinject", check_pdb_disabled),
    ("affinity-null-drops-the-default", {"affinity": None}, "kvinject", check_no_affinity),
    (
        "scheduling-and-resources",
        {
            "replicaCount": 3,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": NODE_TERMS}},
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "kvinject"}},
                }
            ],
            "priorityClassName": "platform-critical",
            "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        },
        "kvinject",
        check_scheduling,
    ),
    (
        "labels-and-annotations",
        {
            "commonLabels": {"team": "platform"},
            "podLabels": {"azure.workload.identity/use": "false"},
            "podAnnotations": {"prometheus.io/scrape": "false"},
            "serviceAccount": {"annotations": {"example.com/owner": "platform"}},
        },
        "kvinject",
        check_labels,
    ),
    (
        "webhook-timeout-and-exclusions",
        {"webhook": {"timeoutSeconds": 10, "excludedNamespaces": ["kube-system", "monitoring"]}},
        "kvinject",
        check_webhook_settings,
    ),
    ("crds-not-installed", {"crds": {"install": False}}, "kvinject", check_no_crd),
    ("crds-not-kept", {"crds": {"keep": False}}, "kvinject", check_crd_not_kept),
    (
        "server-settings",
        {
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "relaxableNamespaces": ["sandbox", "dev"],
            "cloud": {
                "name": "AzureStackCloud",
                "envFile": "/etc/kubernetes/azurestack.json",
                "envFileConfigMap": "azurestack",
            },
            "init": {"volumeSize": "8Mi", "caConfigMap": "private-ca"},
            "extraEnv": [{"name": "KVINJECT_LOG_FORMAT", "value": "json"}],
        },
        "kvinject",
        check_settings,
    ),
    (
        "service-monitor",
        {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}}},
        "kvinject",
        check_service_monitor,
    ),
    ("network-policy", {"networkPolicy": {"enabled": True}}, "kvinject", check_network_policy),
    (
        "network-policy-live-verification-peers",
        {
            "liveVerification": {"enabled": True},
            "networkPolicy": {
                "enabled": True,
                "ingress": {"from": [CONTROL_PLANE]},
                "egress": {"apiServer": {"to": [CONTROL_PLANE], "ports": [6443]}},
            },
        },
        "kvinject",
        check_network_policy_live,
    ),
]


@pytest.mark.parametrize(("values", "namespace", "check"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rendered(helm: Helm, values: dict[str, Any], namespace: str, check: Callable[[Objects], None]) -> None:
    rendered = helm.template(values, namespace=namespace)
    by_key(rendered)  # no object twice
    check(rendered)


@pytest.mark.parametrize(("values", "namespace", "check"), [c[1:] for c in CASES[1:]], ids=[c[0] for c in CASES[1:]])
def test_each_case_differs_from_the_defaults(
    helm: Helm, values: dict[str, Any], namespace: str, check: Callable[[Objects], None]
) -> None:
    """Every non-default case's check fails on the defaults: no check holds whatever the values."""
    with pytest.raises((AssertionError, KeyError)):
        check(helm.template({}, namespace="kvinject"))
