# kvinject developer entry points. `make run` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install lock run test lint unit e2e-binaries node-binaries node-images provider-view bench-tools bench bench-node bench-policy soak fuzz clean

install: $(STAMP)

# The runtime dependencies at the locked versions (those of the kvinject image; constraints cannot carry
# hashes, so they are dropped here), the dev tools as pyproject allows.
$(STAMP): pyproject.toml requirements/serve.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	sed -e '/--hash=/d' -e 's/ *\\$$//' requirements/serve.txt >$(VENV)/serve-constraints.txt
	$(BIN)/pip install -q -e '.[serve,dev]' -c $(VENV)/serve-constraints.txt
	touch $@

# Regenerate the lock files (exact versions and hashes) from pyproject.toml: the kvinject image's
# (dependencies + [serve]), the kvinject-fetch image's (dependencies, at the same versions) and the build
# backend's, for Python 3.11 on any platform. Versions already locked are kept unless pyproject.toml excludes
# them; `make lock LOCK_FLAGS=--upgrade` moves everything to the newest allowed (docs/images.md).
LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock' $(LOCK_FLAGS)
lock: install
	$(LOCK) pyproject.toml --extra serve -o requirements/serve.txt
	$(LOCK) pyproject.toml -c requirements/serve.txt -o requirements/fetch.txt
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(LOCK) - -o requirements/build.txt

# Serve https://127.0.0.1:8443 on the embedded default cluster (no Kubernetes needed).
run: install
	$(BIN)/kvinject certs --out certs >/dev/null
	$(BIN)/kvinject serve --cluster examples/cluster.yaml --host 127.0.0.1 --port 8443

lint: install
	$(BIN)/ruff check webhook tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

unit: install
	$(BIN)/python -m pytest -m "not e2e"

# kube-apiserver, kube-controller-manager, kubectl, etcd, the Azure Workload Identity webhook, the
# SecretProviderClass CRD, Helm, cert-manager (its component's test) and Vault (the Vault store's), built from
# their Go modules once and cached in ~/.cache/kvinject.
e2e-binaries:
	tests/e2e/build_binaries.sh
	tests/e2e/build_helm.sh >/dev/null
	tests/e2e/build_cert_manager.sh
	tests/e2e/build_vault.sh >/dev/null

# A real node's parts (issue 14): kubelet, kube-scheduler, the Secrets Store CSI driver, the Azure
# provider, our plugin registrar and a static pause, cached in ~/.cache/kvinject; installs the Debian
# packages containerd, runc, CNI plugins, busybox-static, buildah, debootstrap when missing (root).
node-binaries:
	tests/node/build.sh >/dev/null

# The node's images as docker-archive tars in ~/.cache/kvinject/images (pause, busybox, and kvinject
# built from our Dockerfile by buildah on a debootstrapped base), keyed by what they are built from.
node-images: node-binaries
	tests/node/images.sh >/dev/null

# The Azure provider's own reading of SecretProviderClass parameters (the oracle of
# tests/differential), from its Go module, cached in ~/.cache/kvinject like the e2e binaries.
provider-view:
	tests/provider_view/build.sh >/dev/null

# vegeta (constant-rate load generator) from its Go module, cached like the e2e binaries.
bench-tools: install
	bench/build_tools.sh

# kvinject vs the Azure Workload Identity webhook under constant-rate load, then the growth and
# through-the-apiserver figures (see bench/RESULTS.md).
bench: install e2e-binaries bench-tools
	tests/isolated.sh $(BIN)/python bench/load.py
	$(BIN)/python bench/policy_scaling.py
	$(BIN)/python bench/growth.py
	tests/isolated.sh $(BIN)/python bench/apiserver_latency.py

# Every tier, inside a loopback-only network namespace where the machine allows one.
test: lint e2e-binaries node-binaries node-images provider-view bench-tools
	tests/isolated.sh $(BIN)/python -m pytest

# Pod start latency on the node (create -> Ready) with no injection, csi and init mode (see bench/RESULTS.md).
bench-node: install e2e-binaries node-binaries node-images
	tests/isolated.sh $(BIN)/python bench/pod_start.py

# Admission latency with 10 vs 10,000 SecretAccessPolicies (see bench/RESULTS.md).
bench-policy: install
	$(BIN)/python bench/policy_scaling.py

# 100,000 fuzz inputs against /mutate and /validate (the CI smoke is tests/fuzz/test_fuzz_smoke.py).
fuzz: install
	$(BIN)/python tests/fuzz/run_fuzz.py --inputs 100000

# 30 minutes of TLS load; fails if RSS grows 10% or more, or any request fails.
soak: install
	$(BIN)/python bench/soak.py --minutes 30 --rate 200

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
