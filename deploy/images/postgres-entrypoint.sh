#!/bin/sh
# Entrypoint of the local PostgreSQL image (postgres.Dockerfile): on the first
# start (an empty $PGDATA) initdb with the superuser $POSTGRES_USER whose
# password is read from $POSTGRES_PASSWORD_FILE (SCRAM over TCP, trust on the
# container's own socket, as the upstream image), then create $POSTGRES_DB;
# then run the command (postgres ...).
#
# Usage: docker-entrypoint.sh postgres [postgres options...]
#        docker-entrypoint.sh COMMAND [ARGS...]   (run as is)
set -eu
case ${1:-} in
-h | --help)
	sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit 0
	;;
-*)
	echo "docker-entrypoint.sh: unknown option $1 (see --help)" >&2
	exit 2
	;;
esac
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
	: "${POSTGRES_PASSWORD_FILE:?POSTGRES_PASSWORD_FILE is not set (the password is a secret file)}"
	user=${POSTGRES_USER:-postgres}
	db=${POSTGRES_DB:-$user}
	initdb -D "$PGDATA" --username="$user" --pwfile="$POSTGRES_PASSWORD_FILE" \
		--auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
	echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
	if [ "$db" != postgres ]; then
		psql -v ON_ERROR_STOP=1 -q --username="$user" --dbname=postgres -c "CREATE DATABASE \"$db\""
	fi
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	echo "docker-entrypoint.sh: initialised $PGDATA (user $user, database $db)"
fi
exec "$@"
