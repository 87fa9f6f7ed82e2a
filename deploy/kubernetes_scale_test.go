package deploy

import (
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// buildScale renders deploy/kubernetes-scale with kustomize's own engine
// (what `kubectl apply -k` runs) and decodes every object strictly.
func buildScale(t *testing.T) (deps map[string]*appsv1.Deployment, pdbs map[string]*policyv1.PodDisruptionBudget, kinds map[string]int) {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "deploy", "kubernetes-scale"))
	if err != nil {
		t.Fatal(err)
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), root)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", root, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	deps, pdbs, kinds = map[string]*appsv1.Deployment{}, map[string]*policyv1.PodDisruptionBudget{}, map[string]int{}
	for i, doc := range docSep.Split(string(out), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		kinds[tm.Kind]++
		switch tm.Kind {
		case "Deployment":
			d := &appsv1.Deployment{}
			if err := decodeStrict([]byte(doc), d); err != nil {
				t.Fatalf("document %d: %v", i, err)
			}
			deps[d.Name] = d
		case "PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			if err := decodeStrict([]byte(doc), p); err != nil {
				t.Fatalf("document %d: %v", i, err)
			}
			pdbs[p.Name] = p
		}
	}
	return deps, pdbs, kinds
}

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func fromSecret(e *corev1.EnvVar, secret, key string) bool {
	return e != nil && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil &&
		e.ValueFrom.SecretKeyRef.Name == secret && e.ValueFrom.SecretKeyRef.Key == key
}

// TestKubernetesScaleOverlay: the scaled-out topology of docs/scaling.md as
// kustomize renders it — serve replicas (HPA) and two trainers on the
// PostgreSQL secret, trainers named after their pods, rolling, with a PDB;
// no volume claim at all (models follow models:/ridership@champion in the
// MLflow registry); both with readiness and a preStop.
func TestKubernetesScaleOverlay(t *testing.T) {
	deps, pdbs, kinds := buildScale(t)
	serve, trainer := deps["flywheel-serve"], deps["flywheel-trainer"]
	if serve == nil || trainer == nil {
		t.Fatalf("deployments %v", deps)
	}
	if kinds["HorizontalPodAutoscaler"] != 1 || kinds["Secret"] != 0 {
		t.Errorf("objects %v: want the base's HPA and no Secret (created by the operator)", kinds)
	}
	for _, d := range []*appsv1.Deployment{serve, trainer} {
		c := d.Spec.Template.Spec.Containers[0]
		if !fromSecret(envVar(c, "FLYWHEEL_DATABASE_URL"), "flywheel-postgres", "url") {
			t.Errorf("%s: FLYWHEEL_DATABASE_URL not from secret flywheel-postgres/url: %+v", d.Name, envVar(c, "FLYWHEEL_DATABASE_URL"))
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
			t.Errorf("%s: no HTTP readiness probe", d.Name)
		}
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil {
			t.Errorf("%s: no preStop", d.Name)
		} else if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g <= 5 {
			t.Errorf("%s: termination grace %v must exceed the 5s preStop pause", d.Name, g)
		}
	}
	if serve.Spec.Replicas != nil {
		t.Errorf("serve sets replicas: the HPA owns them")
	}
	if trainer.Spec.Replicas == nil || *trainer.Spec.Replicas != 2 {
		t.Errorf("trainer replicas %v, want 2", trainer.Spec.Replicas)
	}
	if trainer.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || trainer.Spec.Strategy.RollingUpdate == nil ||
		trainer.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("trainer strategy %+v, want a rolling update one pod at a time", trainer.Spec.Strategy)
	}
	tc := trainer.Spec.Template.Spec.Containers[0]
	if e := envVar(tc, "FLYWHEEL_NAME"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("trainer FLYWHEEL_NAME = %+v, want the pod name", e)
	}
	// No volume claim at all: two trainers cannot share a ReadWriteOnce
	// claim, and models come from the registry, not a ReadWriteMany folder.
	for _, d := range []*appsv1.Deployment{serve, trainer} {
		spec := d.Spec.Template.Spec
		for _, v := range spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				t.Errorf("%s: volume %s claims %s", d.Name, v.Name, v.PersistentVolumeClaim.ClaimName)
			}
			if v.Name == "models" {
				t.Errorf("%s: still has the models volume %+v", d.Name, v)
			}
		}
		for _, c := range append(spec.InitContainers, spec.Containers...) {
			for _, m := range c.VolumeMounts {
				if strings.Contains(m.MountPath, "models") {
					t.Errorf("%s/%s mounts %s (%s)", d.Name, c.Name, m.MountPath, m.Name)
				}
			}
		}
		// Both follow the registry alias at the tracking server.
		c := spec.Containers[0]
		if e := envVar(c, "FLYWHEEL_MODELS"); e == nil || e.Value != "models:/ridership@champion" {
			t.Errorf("%s: FLYWHEEL_MODELS = %+v, want models:/ridership@champion", d.Name, e)
		}
		if e := envVar(c, "MLFLOW_TRACKING_URI"); e == nil || !strings.HasPrefix(e.Value, "http") {
			t.Errorf("%s: MLFLOW_TRACKING_URI = %+v", d.Name, e)
		}
	}
	for _, v := range trainer.Spec.Template.Spec.Volumes {
		if v.Name == "state" && v.EmptyDir == nil {
			t.Errorf("trainer state volume %+v, want emptyDir", v)
		}
	}
	// serve's registry downloads go to a writable emptyDir (the root file
	// system is read-only).
	sc := serve.Spec.Template.Spec.Containers[0]
	cache := envVar(sc, "FLYWHEEL_REGISTRY_CACHE")
	writable := false
	for _, m := range sc.VolumeMounts {
		for _, v := range serve.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil && !m.ReadOnly && cache != nil && strings.HasPrefix(cache.Value, m.MountPath+"/") {
				writable = true
			}
		}
	}
	if !writable {
		t.Errorf("serve FLYWHEEL_REGISTRY_CACHE = %+v is not under a writable emptyDir mount", cache)
	}
	if kinds["PersistentVolumeClaim"] != 0 {
		t.Errorf("%d claims rendered, want none (flywheel-models and flywheel-trainer-data deleted)", kinds["PersistentVolumeClaim"])
	}
	pdb := pdbs["flywheel-trainer"]
	if pdb == nil || pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 ||
		pdb.Spec.Selector.MatchLabels["app.kubernetes.io/component"] != "trainer" {
		t.Errorf("trainer PDB = %+v", pdb)
	}
	if pdbs["flywheel-serve"] == nil {
		t.Error("the base's serve PDB is missing")
	}
}
