# Local stand-in for haproxy:2.6-alpine (the load balancers of
# docker-compose.postgres.yml): Debian's haproxy package (2.6), laid out like
# the upstream image (config in /usr/local/etc/haproxy, user haproxy, wget for
# the health check). The compose file runs `haproxy -W -db -f ...` itself.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /usr/local/etc/haproxy \
    && haproxy -v
USER haproxy
WORKDIR /var/lib/haproxy
EXPOSE 8080
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
