# Two images from one build (docs/images.md):
#   --target fetch   kvinject-fetch: `kvinject fetch`, the init container (Azure SDKs, no web server, no
#                    Kubernetes client): requirements/fetch.txt
#   --target serve   kvinject (the default, last stage): the webhook server: requirements/serve.txt
# Each installs its lock file with --require-hashes into a virtual environment, then kvinject's own wheel
# without dependencies; the runtime stages hold that environment only (no pip, no setuptools), run as
# non-root and work with a read-only root filesystem (bytecode compiled at build time; no writes outside
# the /tmp emptyDir).
#
# BASE_IMAGE: any image whose `python3` is CPython 3.11 with the venv module (every stage uses it, so the
# environment's interpreter link stays valid). The default is python:3.11-slim pinned by digest (refresh:
# docs/images.md). The node tests (tests/node/images.sh) build on a locally debootstrapped Debian bookworm
# (/usr/bin/python3) since no registry is reachable there.
ARG BASE_IMAGE=python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

# kvinject's wheel, built by the locked build backend (no unpinned build isolation).
FROM ${BASE_IMAGE} AS wheel
WORKDIR /src
COPY requirements/build.txt requirements/build.txt
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check --require-hashes -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check --no-deps --no-build-isolation \
    --wheel-dir /wheels .

# One environment per image: the lock (every package pinned and hashed, nothing else resolved), then the wheel.
FROM wheel AS fetch-env
COPY requirements/fetch.txt requirements/fetch.txt
RUN python3 -m venv --without-pip /opt/kvinject \
    && /opt/build/bin/pip --python /opt/kvinject/bin/python install --no-cache-dir --disable-pip-version-check \
       --require-hashes --only-binary :all: -r requirements/fetch.txt \
    && /opt/build/bin/pip --python /opt/kvinject/bin/python install --no-cache-dir --disable-pip-version-check \
       --no-deps --no-index /wheels/*.whl

FROM wheel AS serve-env
COPY requirements/serve.txt requirements/serve.txt
RUN python3 -m venv --without-pip /opt/kvinject \
    && /opt/build/bin/pip --python /opt/kvinject/bin/python install --no-cache-dir --disable-pip-version-check \
       --require-hashes --only-binary :all: -r requirements/serve.txt \
    && /opt/build/bin/pip --python /opt/kvinject/bin/python install --no-cache-dir --disable-pip-version-check \
       --no-deps --no-index /wheels/*.whl

FROM ${BASE_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/kvinject/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 65532:65532
ENTRYPOINT ["/opt/kvinject/bin/kvinject"]

FROM runtime AS fetch
COPY --from=fetch-env /opt/kvinject /opt/kvinject
CMD ["fetch"]

FROM runtime AS serve
COPY --from=serve-env /opt/kvinject /opt/kvinject
EXPOSE 8443
CMD ["serve"]
