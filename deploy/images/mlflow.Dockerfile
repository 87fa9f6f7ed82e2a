# Local stand-in for ghcr.io/mlflow/mlflow (compose's mlflow service): MLflow
# 2.10.2 from ../shared/mlflow (install.sh: Debian's Python packages and the
# MLflow source tarball; the build context holds both). `mlflow` and
# `python` are on PATH as in the upstream image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY . /tmp/mlflow-src
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python-is-python3 \
    && /tmp/mlflow-src/install.sh /opt/mlflow \
    && rm -rf /var/lib/apt/lists/* /tmp/mlflow-src /root/.cache
ENV PATH=/opt/mlflow/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXPOSE 5000
CMD ["mlflow", "server", "--host=127.0.0.1", "--port=5000"]
