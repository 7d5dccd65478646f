# Multi-stage: install kvinject and its dependencies into a virtual environment, copy it into a
# slim runtime that runs as non-root and works with a read-only root filesystem (no writes
# outside the /tmp emptyDir).
#
# BASE_IMAGE: any image whose `python3` is CPython 3.11 with the venv module (both stages use it,
# so the environment's interpreter link stays valid). The node tests (tests/node/images.sh) build
# on a locally debootstrapped Debian bookworm (/usr/bin/python3) since no registry is reachable.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
RUN python3 -m venv /opt/kvinject
COPY pyproject.toml README.md ./
COPY webhook ./webhook
# Compiled bytecode is kept: a read-only root filesystem cannot take it at run time. pip itself is
# left out of the runtime.
RUN /opt/kvinject/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/kvinject/bin/pip uninstall --yes --quiet pip

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/kvinject/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY --from=build /opt/kvinject /opt/kvinject
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/opt/kvinject/bin/kvinject"]
CMD ["serve"]
