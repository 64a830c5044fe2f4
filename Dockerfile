# syntax=docker/dockerfile:1
# MoEMesh: one image, every role chosen by subcommand (moemesh up | coordinator | router | expert | ...).
# Build: docker build -t moemesh:0.3.0 .   GPU experts: Dockerfile.cuda (moemesh:0.3.0-cuda).

# Base images by version tag (not latest); a digest pins them further (docker pull, then FROM name@sha256:…).

FROM swift:6.1-bookworm AS build
# Debian's OpenBLAS and gRPC C++ core (the data plane), pinned by the base image's release; versions move with its
# security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas-dev libgrpc++-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product moemesh \
    && install -D -m 0755 "$(swift build -c release --show-bin-path)/moemesh" /out/moemesh \
    && strip /out/moemesh

FROM debian:12-slim
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas0-pthread libgrpc++1.51 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/moemesh --create-home moemesh
COPY --from=build /out/moemesh /usr/local/bin/moemesh
USER 10001:10001
# The role's gRPC health (router 50051 by default; coordinator 127.0.0.1:50050, experts 127.0.0.1:7000: set
# MOEMESH_ENDPOINT). Kubernetes ignores it and probes by its own manifests; compose sets one per service.
ENV MOEMESH_ENDPOINT=127.0.0.1:50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD ["moemesh", "health"]
WORKDIR /var/lib/moemesh
ENV MOEMESH_CACHE=/var/lib/moemesh/cache
# coordinator, router, expert (gRPC); HTTP (/metrics, status page).
EXPOSE 50050 50051 7000 8080 9090
ENTRYPOINT ["/usr/local/bin/moemesh"]
CMD ["up", "--host", "0.0.0.0"]
