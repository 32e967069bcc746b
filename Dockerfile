# syntax=docker/dockerfile:1
#
# Container images of piko (the server, agent and forward) and piko-controller
# (the Kubernetes operator), the ones the manifests name
# (controller/render.c, crds/controller.yaml, charts/piko-controller):
#
#   docker build --target piko            -t ghcr.io/pikoc/piko:0.1.0 .
#   docker build --target piko-controller -t ghcr.io/pikoc/piko-controller:0.1.0 .
#
# (buildah: `buildah bud --target piko -t ... .`.) A builder stage compiles both
# binaries on debian:bookworm; each final stage is debian:bookworm-slim with only
# the shared libraries they load, ca-certificates, and a non-root user (uid/gid
# 65532, distroless's "nonroot").
#
# Without docker or a registry, hack/image.sh builds the same images offline
# (mmdebstrap base from the Debian mirror, OCI archives for `ctr images import`).
# It reads RUNTIME_PACKAGES and VERSION from this file, so the two cannot drift.

ARG DEBIAN=bookworm
ARG VERSION=0.1.0
# The runtime packages: the Debian packages of the libraries the two binaries
# name in DT_NEEDED (`objdump -p build/bin/piko | grep NEEDED`, then
# `dpkg -S <lib>`), their own dependencies come with them; libm is in libc6;
# piko-controller needs a subset of piko's. Plus ca-certificates for TLS, and
# libwebsockets-evlib-ev: lws loads its libev plugin (the server's epoll
# loop, core/runloop.h) with dlopen, so no NEEDED entry names it.
# hack/image.sh checks every NEEDED library is in the base it builds from this.
ARG RUNTIME_PACKAGES="ca-certificates libc6 libcurl4 libhttp-parser2.9 libjson-c5 libjwt0 libssl3 libwebsockets17 libwebsockets-evlib-ev libev4 libyaml-0-2"

FROM debian:${DEBIAN} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libwebsockets-dev libhttp-parser-dev libjwt-dev libjson-c-dev libyaml-dev \
      libssl-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Release (-O3). PK_TESTS=OFF: no cmocka needed.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DPK_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" --target piko piko-controller \
 && strip --strip-unneeded /build/bin/piko /build/bin/piko-controller

FROM debian:${DEBIAN}-slim AS runtime
ARG RUNTIME_PACKAGES
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${RUNTIME_PACKAGES} \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* \
 && echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'nonroot:x:65532:' >>/etc/group \
 && mkdir -p /home/nonroot && chown 65532:65532 /home/nonroot && chmod 0750 /home/nonroot
WORKDIR /home/nonroot
USER 65532:65532

FROM runtime AS piko-controller
ARG VERSION
LABEL org.opencontainers.image.title="piko-controller" \
      org.opencontainers.image.description="Kubernetes operator for PikoCluster resources (Piko in C)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/pikoc/piko" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /build/bin/piko-controller /usr/local/bin/piko-controller
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/piko-controller"]

# Last, so a plain `docker build .` gives piko.
FROM runtime AS piko
ARG VERSION
LABEL org.opencontainers.image.title="piko" \
      org.opencontainers.image.description="Self-hosted tunnelling reverse proxy, an ngrok alternative (Piko in C)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/pikoc/piko" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /build/bin/piko /usr/local/bin/piko
# proxy, upstream, admin, cluster
EXPOSE 8000 8001 8002 8003
ENTRYPOINT ["/usr/local/bin/piko"]
CMD ["server"]
