# Local stand-in for debian:12-slim (the Dockerfile's RUNTIME_IMAGE) and the
# base of every other local image: a `debootstrap --variant=minbase bookworm`
# root file system imported with `docker import` (ROOTFS_IMAGE), plus the
# certificate authorities this machine trusts (the build context holds
# /usr/local/share/ca-certificates), so builds in these images reach the Go
# module proxy and npm the way the machine does.
ARG ROOTFS_IMAGE
FROM ${ROOTFS_IMAGE}
COPY . /usr/local/share/ca-certificates/
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && update-ca-certificates
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["bash"]
