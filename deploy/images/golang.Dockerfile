# Local stand-in for golang:<version>-bookworm (the Dockerfile's GO_IMAGE):
# Debian bookworm with gcc for cgo and the Go toolchain of the machine that
# builds it (the build context is its GOROOT). Same layout as the upstream
# image: GOROOT /usr/local/go, GOPATH /go, GOTOOLCHAIN=local.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev git \
    && rm -rf /var/lib/apt/lists/*
COPY . /usr/local/go
ENV GOLANG_VERSION=local GOTOOLCHAIN=local GOPATH=/go PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN go version && mkdir -p /go/bin /go/src
WORKDIR /go
