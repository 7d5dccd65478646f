"""End-to-end tests against a real local Kubernetes control plane (see tests/harness/controlplane.py)."""
