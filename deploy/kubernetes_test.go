package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const k8sDir = "deploy/kubernetes"

// kustomization is the subset of kustomize's Kustomization the base uses,
// decoded strictly so a typo is an error.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	} `json:"labels,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// manifests holds every object of the base, decoded into the official types.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	pvcs        map[string]*corev1.PersistentVolumeClaim
	hpas        map[string]*autoscalingv2.HorizontalPodAutoscaler
	pdbs        map[string]*policyv1.PodDisruptionBudget
	kust        kustomization
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// decodeStrict decodes one YAML document the way the API server's strict
// field validation does: case-sensitive field names, unknown and duplicate
// fields are errors (encoding/json alone would match "readinessprobe" to
// readinessProbe).
func decodeStrict(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// loadManifests decodes every resource of kustomization.yaml strictly
// (unknown or duplicate fields are errors) into k8s.io/api types.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{
		deployments: map[string]*appsv1.Deployment{},
		services:    map[string]*corev1.Service{},
		pvcs:        map[string]*corev1.PersistentVolumeClaim{},
		hpas:        map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		pdbs:        map[string]*policyv1.PodDisruptionBudget{},
	}
	if err := decodeStrict(readFile(t, k8sDir+"/kustomization.yaml"), &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if m.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || m.kust.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml is %s %s", m.kust.APIVersion, m.kust.Kind)
	}
	for _, res := range m.kust.Resources {
		for i, doc := range docSep.Split(string(readFile(t, path.Join(k8sDir, res))), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			where := fmt.Sprintf("%s document %d", res, i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj interface{ GetName() string }
			switch tm.APIVersion + "/" + tm.Kind {
			case "apps/v1/Deployment":
				d := &appsv1.Deployment{}
				obj = d
			case "v1/Service":
				obj = &corev1.Service{}
			case "v1/PersistentVolumeClaim":
				obj = &corev1.PersistentVolumeClaim{}
			case "autoscaling/v2/HorizontalPodAutoscaler":
				obj = &autoscalingv2.HorizontalPodAutoscaler{}
			case "policy/v1/PodDisruptionBudget":
				obj = &policyv1.PodDisruptionBudget{}
			default:
				t.Fatalf("%s: unexpected %s %s", where, tm.APIVersion, tm.Kind)
			}
			if err := decodeStrict([]byte(doc), obj); err != nil {
				t.Fatalf("%s: strict decoding into %T: %v", where, obj, err)
			}
			name := obj.GetName()
			if name == "" {
				t.Fatalf("%s: no metadata.name", where)
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.deployments[name] = o
			case *corev1.Service:
				m.services[name] = o
			case *corev1.PersistentVolumeClaim:
				m.pvcs[name] = o
			case *autoscalingv2.HorizontalPodAutoscaler:
				m.hpas[name] = o
			case *policyv1.PodDisruptionBudget:
				m.pdbs[name] = o
			}
		}
	}
	return m
}

func stripComments(doc string) string {
	var b bytes.Buffer
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// The strict decoder really rejects unknown fields (a guard for the guard).
func TestKubernetesStrictDecodingRejectsUnknownFields(t *testing.T) {
	for _, bad := range []string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  Replicas: 2\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 2\n  replicas: 3\n",
	} {
		if err := decodeStrict([]byte(bad), &appsv1.Deployment{}); err == nil {
			t.Errorf("decodeStrict accepted %q", bad)
		}
	}
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	for _, want := range []struct {
		kind string
		have bool
	}{
		{"Deployment flywheel-serve", m.deployments["flywheel-serve"] != nil},
		{"Service flywheel-serve", m.services["flywheel-serve"] != nil},
		{"HorizontalPodAutoscaler flywheel-serve", m.hpas["flywheel-serve"] != nil},
		{"PodDisruptionBudget flywheel-serve", m.pdbs["flywheel-serve"] != nil},
		{"Deployment flywheel-trainer", m.deployments["flywheel-trainer"] != nil},
		{"Service flywheel-trainer", m.services["flywheel-trainer"] != nil},
		{"PersistentVolumeClaim flywheel-trainer-data", m.pvcs["flywheel-trainer-data"] != nil},
		{"PersistentVolumeClaim flywheel-models", m.pvcs["flywheel-models"] != nil},
	} {
		if !want.have {
			t.Errorf("no %s", want.kind)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// Every manifest in the folder is part of the base.
	files, _ := filepath.Glob(filepath.Join(repoRoot(t), k8sDir, "*.yaml"))
	listed := map[string]bool{"kustomization.yaml": true}
	for _, r := range m.kust.Resources {
		listed[r] = true
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not listed in kustomization.yaml resources", filepath.Base(f))
		}
	}
	for _, img := range m.kust.Images {
		if img.NewTag == "latest" || (img.NewTag == "" && img.Digest == "") {
			t.Errorf("kustomization image %s is not pinned (newTag %q)", img.Name, img.NewTag)
		}
	}
	for name, d := range m.deployments {
		checkPodSpec(t, m, name, d)
	}
}

// checkPodSpec checks what every Deployment needs: selector = labels,
// non-root as the image's USER, mounts that exist, tokens from the Secret.
func checkPodSpec(t *testing.T, m *manifests, name string, d *appsv1.Deployment) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s: selector %v does not match its pod labels %v (%v)", name, d.Spec.Selector, d.Spec.Template.Labels, err)
	}
	ps := d.Spec.Template.Spec
	sc := ps.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("%s: pod must run as a non-root uid (runAsNonRoot, runAsUser)", name)
	} else if uid := dockerfileUID(t); *sc.RunAsUser != uid {
		t.Errorf("%s: runAsUser %d, the image's USER is %d", name, *sc.RunAsUser, uid)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		volumes[v.Name] = v
		if v.PersistentVolumeClaim != nil && m.pvcs[v.PersistentVolumeClaim.ClaimName] == nil {
			t.Errorf("%s: volume %s claims %s, which the base does not define", name, v.Name, v.PersistentVolumeClaim.ClaimName)
		}
		if v.Secret != nil && v.Secret.SecretName != "flywheel-tokens" {
			t.Errorf("%s: volume %s uses secret %s, want flywheel-tokens (README)", name, v.Name, v.Secret.SecretName)
		}
	}
	for _, c := range append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...) {
		where := name + "/" + c.Name
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: needs a CPU request and a memory limit", where)
		}
		if !strings.HasPrefix(c.Image, "ghcr.io/flywheel-ml/flywheel:") || strings.HasSuffix(c.Image, ":latest") {
			t.Errorf("%s: image %q, want ghcr.io/flywheel-ml/flywheel:<tag> (kustomize pins the tag)", where, c.Image)
		}
		if s := c.SecurityContext; s == nil || s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation must be false", where)
		}
		mounts := map[string]string{}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				t.Errorf("%s: mounts undefined volume %s", where, vm.Name)
			}
			mounts[vm.MountPath] = vm.Name
		}
		for _, e := range c.Env {
			if !secretish.MatchString(e.Name) {
				continue
			}
			if !strings.HasSuffix(e.Name, "_FILE") {
				t.Errorf("%s: %s set in the environment; tokens come from the flywheel-tokens Secret as files", where, e.Name)
				continue
			}
			v := volumes[mounts[path.Dir(e.Value)]]
			if v.Secret == nil || !secretHasItem(v.Secret, path.Base(e.Value)) {
				t.Errorf("%s: %s=%s is not a key of a mounted flywheel-tokens Secret", where, e.Name, e.Value)
			}
		}
	}
}

func secretHasItem(s *corev1.SecretVolumeSource, p string) bool {
	if len(s.Items) == 0 {
		return true
	}
	for _, it := range s.Items {
		if it.Path == p {
			return true
		}
	}
	return false
}

// dockerfileUID is the numeric uid of the Dockerfile's last USER.
func dockerfileUID(t *testing.T) int64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^USER\s+(\d+)`)
	all := re.FindAllSubmatch(readFile(t, "Dockerfile"), -1)
	if len(all) == 0 {
		t.Fatal("Dockerfile has no numeric USER")
	}
	uid, _ := strconv.ParseInt(string(all[len(all)-1][1]), 10, 64)
	return uid
}

// containerPort resolves a probe's or Service's port (number or name).
func containerPort(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

func containerEnv(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func TestKubernetesProbesAreServerRoutes(t *testing.T) {
	m := loadManifests(t)
	for _, tc := range []struct {
		deployment, container string
		port                  int32
		readiness, liveness   string
		routes                []string
	}{
		{"flywheel-serve", "serve", 8080, "/v2/health/ready", "/v2/health/live", serveRoutes},
		{"flywheel-trainer", "trainer", 8090, "/health/ready", "/health/live", trainerRoutes},
	} {
		t.Run(tc.container, func(t *testing.T) {
			d := m.deployments[tc.deployment]
			if d == nil {
				t.Fatalf("no deployment %s", tc.deployment)
			}
			var c *corev1.Container
			for i := range d.Spec.Template.Spec.Containers {
				if d.Spec.Template.Spec.Containers[i].Name == tc.container {
					c = &d.Spec.Template.Spec.Containers[i]
				}
			}
			if c == nil {
				t.Fatalf("%s has no container %s", tc.deployment, tc.container)
			}
			if len(c.Args) == 0 || c.Args[0] != tc.container {
				t.Errorf("args %v, want the %s subcommand", c.Args, tc.container)
			}
			if got := containerEnv(*c, "FLYWHEEL_LISTEN"); got != fmt.Sprintf(":%d", tc.port) {
				t.Errorf("FLYWHEEL_LISTEN=%q, want :%d", got, tc.port)
			}
			probes := map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe}
			want := map[string]string{"readiness": tc.readiness, "liveness": tc.liveness}
			for kind, p := range probes {
				if p == nil {
					if kind != "startup" {
						t.Errorf("no %s probe", kind)
					}
					continue
				}
				if p.HTTPGet == nil {
					t.Errorf("%s probe is not an HTTP GET", kind)
					continue
				}
				if w := want[kind]; w != "" && p.HTTPGet.Path != w {
					t.Errorf("%s probe GET %s, want %s", kind, p.HTTPGet.Path, w)
				}
				if !hasRoute(tc.routes, p.HTTPGet.Path) {
					t.Errorf("%s probe GET %s is not a %s route %v", kind, p.HTTPGet.Path, tc.container, tc.routes)
				}
				if got := containerPort(*c, p.HTTPGet.Port); got != tc.port {
					t.Errorf("%s probe port %s resolves to %d, want %d", kind, p.HTTPGet.Port.String(), got, tc.port)
				}
			}
			// Prometheus scrape annotations name the real port and route.
			ann := d.Spec.Template.Annotations
			if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(int(tc.port)) || !hasRoute(tc.routes, ann["prometheus.io/path"]) {
				t.Errorf("scrape annotations %v, want scrape=true port=%d path=/metrics", ann, tc.port)
			}
			// The Service reaches the container port.
			svc := m.services[tc.deployment]
			if svc == nil {
				t.Fatalf("no service %s", tc.deployment)
			}
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
				t.Errorf("service %s selector %v does not select the pods %v", svc.Name, svc.Spec.Selector, d.Spec.Template.Labels)
			}
			for _, sp := range svc.Spec.Ports {
				if containerPort(*c, sp.TargetPort) != tc.port || sp.Port != tc.port {
					t.Errorf("service %s port %d → %s, want %d → container %d", svc.Name, sp.Port, sp.TargetPort.String(), tc.port, tc.port)
				}
			}
		})
	}
}

func TestKubernetesServeScalesOut(t *testing.T) {
	m := loadManifests(t)
	serve, trainer := m.deployments["flywheel-serve"], m.deployments["flywheel-trainer"]
	if serve == nil || trainer == nil {
		t.Fatal("missing deployments")
	}
	if serve.Spec.Replicas != nil {
		t.Errorf("flywheel-serve sets replicas=%d; the HPA owns it (kubectl apply would reset the scale)", *serve.Spec.Replicas)
	}
	hpa := m.hpas["flywheel-serve"]
	if ref := hpa.Spec.ScaleTargetRef; ref.Kind != "Deployment" || ref.Name != serve.Name || ref.APIVersion != "apps/v1" {
		t.Errorf("HPA targets %+v, want apps/v1 Deployment %s", ref, serve.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas <= *hpa.Spec.MinReplicas {
		t.Errorf("HPA min %v max %d: want min >= 2 < max", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	var cpu bool
	for _, mt := range hpa.Spec.Metrics {
		if mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU &&
			mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType && mt.Resource.Target.AverageUtilization != nil {
			cpu = true
		}
	}
	if !cpu {
		t.Error("HPA does not scale on CPU utilization")
	}
	pdb := m.pdbs["flywheel-serve"]
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(serve.Spec.Template.Labels)) {
		t.Errorf("PDB selector %v does not select the serve pods", pdb.Spec.Selector)
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.Type != intstr.Int || pdb.Spec.MinAvailable.IntVal >= *hpa.Spec.MinReplicas {
		t.Errorf("PDB minAvailable %v must be a number below the HPA's minReplicas, or node drains block", pdb.Spec.MinAvailable)
	}
	// The trainer: one replica, Recreate (its volume is ReadWriteOnce).
	if trainer.Spec.Replicas == nil || *trainer.Spec.Replicas != 1 {
		t.Errorf("flywheel-trainer replicas %v, want 1", trainer.Spec.Replicas)
	}
	if trainer.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("flywheel-trainer strategy %q, want Recreate", trainer.Spec.Strategy.Type)
	}
	// Both mount the model repository claim where FLYWHEEL_MODELS says; serve
	// read-only, the trainer read-write; the trainer keeps its state on its PVC.
	claimAt := func(d *appsv1.Deployment, container, mountPath string) (claim string, readOnly bool) {
		vols := map[string]corev1.Volume{}
		for _, v := range d.Spec.Template.Spec.Volumes {
			vols[v.Name] = v
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name != container {
				continue
			}
			for _, vm := range c.VolumeMounts {
				if vm.MountPath == mountPath && vols[vm.Name].PersistentVolumeClaim != nil {
					return vols[vm.Name].PersistentVolumeClaim.ClaimName, vm.ReadOnly
				}
			}
		}
		return "", false
	}
	serveModels := containerEnv(serve.Spec.Template.Spec.Containers[0], "FLYWHEEL_MODELS")
	trainerModels := containerEnv(trainer.Spec.Template.Spec.Containers[0], "FLYWHEEL_MODELS")
	sc, sro := claimAt(serve, "serve", serveModels)
	tc, tro := claimAt(trainer, "trainer", trainerModels)
	if sc == "" || sc != tc || !sro || tro {
		t.Errorf("model repository: serve mounts claim %q (read-only %v) at %s, trainer %q (read-only %v) at %s; want one claim, serve read-only, trainer read-write", sc, sro, serveModels, tc, tro, trainerModels)
	}
	if pvc := m.pvcs[sc]; pvc != nil && !hasAccessMode(pvc, corev1.ReadWriteMany) {
		t.Errorf("claim %s must be ReadWriteMany: serve replicas on many nodes read it", sc)
	}
	if c, _ := claimAt(trainer, "trainer", "/var/lib/flywheel/var"); c != "flywheel-trainer-data" {
		t.Errorf("trainer state is on claim %q, want flywheel-trainer-data", c)
	}
}

func hasAccessMode(pvc *corev1.PersistentVolumeClaim, mode corev1.PersistentVolumeAccessMode) bool {
	for _, m := range pvc.Spec.AccessModes {
		if m == mode {
			return true
		}
	}
	return false
}

// TestKubernetesServeDrainsBeforeStopping: the serve container sleeps in
// preStop (endpoint removal reaches the proxies before SIGTERM), drains
// keep-alive clients for a shutdown delay, and the grace period covers
// both plus the shutdown timeout.
func TestKubernetesServeDrainsBeforeStopping(t *testing.T) {
	m := loadManifests(t)
	serve := m.deployments["flywheel-serve"]
	if serve == nil {
		t.Fatal("missing flywheel-serve")
	}
	c := serve.Spec.Template.Spec.Containers[0]
	// exec sleep, as the scale-out overlay's patch: one handler type after
	// the strategic merge.
	var sleep int
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Exec != nil {
		if cmd := c.Lifecycle.PreStop.Exec.Command; len(cmd) == 2 && cmd[0] == "sleep" {
			sleep, _ = strconv.Atoi(cmd[1])
		}
	}
	if sleep < 1 || c.Lifecycle.PreStop.Sleep != nil || c.Lifecycle.PreStop.HTTPGet != nil {
		t.Fatalf("serve container has no preStop exec sleep (and only that): %+v", c.Lifecycle)
	}
	var delay time.Duration
	for _, e := range c.Env {
		if e.Name == "FLYWHEEL_SHUTDOWN_DELAY" {
			d, err := time.ParseDuration(e.Value)
			if err != nil {
				t.Fatalf("FLYWHEEL_SHUTDOWN_DELAY %q: %v", e.Value, err)
			}
			delay = d
		}
	}
	if delay <= 0 {
		t.Fatal("serve sets no FLYWHEEL_SHUTDOWN_DELAY")
	}
	grace := serve.Spec.Template.Spec.TerminationGracePeriodSeconds
	need := time.Duration(sleep)*time.Second + delay + 15*time.Second // + --shutdown-timeout
	if grace == nil || time.Duration(*grace)*time.Second < need {
		t.Errorf("terminationGracePeriodSeconds %v < preStop + shutdown delay + shutdown timeout (%s)", grace, need)
	}
}
