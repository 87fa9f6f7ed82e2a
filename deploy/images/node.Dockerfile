# Local stand-in for node:<version>-bookworm-slim (the Dockerfile's
# NODE_IMAGE): Debian's nodejs and npm, enough for `npm pack`.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/* \
    && node --version && npm --version
