// Package deploy holds the delivery artefacts' tests: the container image
// (Dockerfile), the docker-compose stack, the GitHub Actions workflows and the
// Kubernetes manifests under deploy/kubernetes. No Docker engine or cluster
// runs here, so everything is validated by parsing into the official types.
package deploy
