# syntax=docker/dockerfile:1
# MoEMesh: one image, every role chosen by subcommand (moemesh up | coordinator | router | expert | ...).
# Build: docker build -t moemesh .   GPU experts: Dockerfile.cuda.

ARG SWIFT_IMAGE=swift:6.1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${SWIFT_IMAGE} AS build
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

FROM ${RUNTIME_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopenblas0-pthread libgrpc++1.51 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/moemesh --create-home moemesh
COPY --from=build /out/moemesh /usr/local/bin/moemesh
USER 10001:10001
WORKDIR /var/lib/moemesh
ENV MOEMESH_CACHE=/var/lib/moemesh/cache
# coordinator, router, expert (gRPC); HTTP (/metrics, status page).
EXPOSE 50050 50051 7000 8080 9090
ENTRYPOINT ["/usr/local/bin/moemesh"]
CMD ["up", "--host", "0.0.0.0"]
