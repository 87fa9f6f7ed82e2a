# Flywheel: one image for `flywheel serve` (default), `trainer`, `train` and
# `replay`. Build with `make image` (or `docker build -t flywheel .`).
#
# Stages: build (Go with cgo) → ort (ONNX Runtime from the onnxruntime-node npm
# package, exactly as `make deps` fetches it) → runtime (Debian slim, non-root).
# The ORT version and checksum below must equal ORT_VERSION/ORT_SHA256 in the
# Makefile (deploy/dockerfile_test.go checks it). The library is linux/x64, so
# the image is linux/amd64.
#
# Base images are build arguments whose defaults are the upstream images;
# `make test-containers` passes local equivalents built from Debian packages
# (deploy/images/, docs/deploy.md). RUN --mount needs BuildKit (Docker 20.10+
# with BuildKit, or buildx): the Dockerfile frontend built into the engine is
# enough, so no `# syntax=` line makes the build pull a frontend image.
ARG GO_IMAGE=golang:1.26.8-bookworm
ARG NODE_IMAGE=node:22.12.0-bookworm-slim
ARG RUNTIME_IMAGE=debian:12.8-slim

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# cgo: onnxruntime_go loads the ONNX Runtime library, go-sqlite3 is C.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=1 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/flywheel ./cmd/flywheel
# The committed model repository and dataset seed the image (and, through it,
# empty named volumes); either may be absent in a partial checkout.
RUN mkdir -p /out/share/models /out/share/data /out/share/var \
    && if [ -d models ]; then cp -a models/. /out/share/models/; fi \
    && if [ -d data ]; then cp -a data/. /out/share/data/; fi

FROM ${NODE_IMAGE} AS ort
ARG ORT_VERSION=1.24.3
ARG ORT_SHA256=92ba8e44d31b80a34f5e805076a044122c3be1fffe0d88ed790de7267b0b2682
WORKDIR /ort
# npm pack downloads the package tarball without running install scripts.
RUN set -eu; \
    npm pack --silent "onnxruntime-node@${ORT_VERSION}" >/dev/null; \
    tar -xzf "onnxruntime-node-${ORT_VERSION}.tgz" package/bin/napi-v6/linux/x64/libonnxruntime.so.1; \
    echo "${ORT_SHA256}  package/bin/napi-v6/linux/x64/libonnxruntime.so.1" | sha256sum -c -; \
    mv package/bin/napi-v6/linux/x64/libonnxruntime.so.1 /ort/libonnxruntime.so.1; \
    rm -rf package "onnxruntime-node-${ORT_VERSION}.tgz"

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="flywheel" \
      org.opencontainers.image.description="Flywheel: ONNX serving, training, tracking and automatic retraining in one binary" \
      org.opencontainers.image.source="https://github.com/flywheel-ml/flywheel" \
      org.opencontainers.image.url="https://github.com/flywheel-ml/flywheel" \
      org.opencontainers.image.documentation="https://github.com/flywheel-ml/flywheel#deploy" \
      org.opencontainers.image.vendor="flywheel-ml" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
# libstdc++6: ONNX Runtime is C++; curl: the health check; ca-certificates:
# HTTPS to a remote MLflow.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 flywheel \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/flywheel --no-create-home --shell /usr/sbin/nologin flywheel
COPY --from=ort /ort/libonnxruntime.so.1 /usr/local/lib/flywheel/libonnxruntime.so.1
COPY --from=build /out/flywheel /usr/local/bin/flywheel
COPY --from=build --chown=10001:10001 /out/share/ /var/lib/flywheel/
ENV FLYWHEEL_ORT_LIB=/usr/local/lib/flywheel/libonnxruntime.so.1 \
    HEALTHCHECK_URL=http://127.0.0.1:8080/v2/health/live
# Relative paths (models/, data/, var/) resolve here; compose mounts the
# `models`, `data` and `state` volumes on them (empty volumes are seeded
# with the image's models and dataset).
WORKDIR /var/lib/flywheel
USER 10001:10001
EXPOSE 8080 8090
# Serve's liveness by default; the trainer sets HEALTHCHECK_URL (or compose
# overrides the check) to http://127.0.0.1:8090/health/live.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null "$HEALTHCHECK_URL" || exit 1
ENTRYPOINT ["flywheel"]
CMD ["serve"]
