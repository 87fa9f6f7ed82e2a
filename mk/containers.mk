# Containers (issue 20): the image built from the Dockerfile and the compose
# stack brought up for real on a Docker engine of the test's own, with local
# base images (deploy/containers.sh, deploy/containertest, docs/deploy.md).
TEST_TARGETS += test-containers

.PHONY: test-containers containers-images containers-shell
test-containers: ## build the image, compose up (serve, trainer, MLflow, Prometheus, Alertmanager), close the loop in containers, the scaled stack on PostgreSQL, compose down -v
	$(GO) vet -tags containers ./deploy/containertest
	@start=$$(date +%s); rm -f var/containers/report.txt; \
	deploy/containers.sh test; rc=$$?; \
	if [ -f var/containers/report.txt ]; then cat var/containers/report.txt; fi; \
	echo "test-containers: $$(( $$(date +%s) - start ))s (exit $$rc)"; exit $$rc

containers-images: ## build (or find cached) the local base images and print their names
	deploy/containers.sh images

containers-shell: ## a shell with the test's Docker engine and local images (engine stops on exit)
	deploy/containers.sh shell
