# Local stand-in for postgres:15-bookworm (docker-compose.postgres.yml):
# Debian's postgresql-15 package with an entrypoint honouring the upstream
# image's variables the compose file uses (POSTGRES_USER, POSTGRES_DB,
# POSTGRES_PASSWORD_FILE; data in /var/lib/postgresql/data), running as
# the postgres user. The build context is deploy/images/.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# No cluster of Debian's own (pg_createcluster): the entrypoint initialises PGDATA.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/flywheel.conf \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 0700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
