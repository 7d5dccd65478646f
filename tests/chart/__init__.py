"""The Helm chart (charts/kvinject): lint, rendered output, equivalence with manifests/, install on the e2e cluster."""
