# Local stand-in for prom/alertmanager (compose's alertmanager service):
# Debian's prometheus-alertmanager package, laid out like the upstream image
# (ENTRYPOINT alertmanager, data in /alertmanager, user nobody, wget for the
# health check).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus-alertmanager wget \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /alertmanager && chown nobody:nogroup /alertmanager \
    && prometheus-alertmanager --version
USER nobody
WORKDIR /alertmanager
EXPOSE 9093
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
