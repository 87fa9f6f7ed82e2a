// Package containertest brings the compose stack up for real: it builds the
// Flywheel image from the Dockerfile, starts docker-compose.yml with
// deploy/compose/local.yml (local images, host networking on loopback
// ports), drives the retraining loop with a replay run in the cli container
// through serve's port, and checks what a user's first `docker compose up`
// would show: health, non-root files, state kept across a restart, the
// trainer's version in MLflow, and nothing left after `compose down -v`.
//
// Its tests carry the build tag containers: they need a Docker engine and
// local base images, which deploy/containers.sh provides (make
// test-containers).
package containertest
