// Package kubernetes holds the Kubernetes example (orchestrator.yaml) and a
// test that decodes it strictly into the k8s.io/api types, as kubectl apply
// --dry-run=client would, and checks that its parts fit together. It is its
// own module so that the service's module does not depend on k8s.io/api.
package kubernetes

import (
	"bytes"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func TestManifests(t *testing.T) {
	raw, err := os.ReadFile("orchestrator.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var deps []appsv1.Deployment
	var cm corev1.ConfigMap
	var secret corev1.Secret
	var svc corev1.Service
	for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
		var tm typeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var target any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			deps = append(deps, appsv1.Deployment{})
			target = &deps[len(deps)-1]
		case "v1 ConfigMap":
			target = &cm
		case "v1 Secret":
			target = &secret
		case "v1 Service":
			target = &svc
		default:
			t.Fatalf("document %d: unexpected %s %s", i, tm.APIVersion, tm.Kind)
		}
		// Strict: an unknown or misspelt field is an error, as kubectl's
		// schema validation makes it.
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			t.Fatalf("document %d (%s): %v", i, tm.Kind, err)
		}
	}
	if len(deps) != 2 || cm.Name == "" || secret.Name == "" || svc.Name == "" {
		t.Fatalf("want 2 Deployments, a ConfigMap, a Secret and a Service; got %d deployments", len(deps))
	}
	roles := map[string]bool{}
	for _, d := range deps {
		sel := d.Spec.Selector.MatchLabels
		for k, v := range sel {
			if d.Spec.Template.Labels[k] != v {
				t.Errorf("%s: selector %s=%s does not match the pod labels %v", d.Name, k, v, d.Spec.Template.Labels)
			}
		}
		if len(d.Spec.Template.Spec.Containers) != 1 {
			t.Fatalf("%s: want one container", d.Name)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if len(c.Args) != 3 || c.Args[0] != "serve" || c.Args[1] != "--role" {
			t.Errorf("%s: args %v, want serve --role …", d.Name, c.Args)
		} else {
			roles[c.Args[2]] = true
		}
		rp := c.ReadinessProbe
		if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/readyz" {
			t.Errorf("%s: readiness probe %+v, want GET /readyz", d.Name, rp)
		} else if rp.HTTPGet.Port.StrVal != "" && !hasPort(c, rp.HTTPGet.Port.StrVal) {
			t.Errorf("%s: readiness probe port %q is not a container port", d.Name, rp.HTTPGet.Port.StrVal)
		}
		if sc := d.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: pods must run as non-root", d.Name)
		}
		if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != cm.Name {
			t.Errorf("%s: envFrom %+v, want the ConfigMap %s", d.Name, c.EnvFrom, cm.Name)
		}
		env := map[string]bool{}
		for _, e := range c.Env {
			env[e.Name] = true
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
				if r.SecretKeyRef.Name != secret.Name {
					t.Errorf("%s: %s from secret %q, not %q", d.Name, e.Name, r.SecretKeyRef.Name, secret.Name)
				} else if _, ok := secret.StringData[r.SecretKeyRef.Key]; !ok {
					t.Errorf("%s: %s from key %q, which the Secret lacks", d.Name, e.Name, r.SecretKeyRef.Key)
				}
			}
		}
		// --role worker and ingress need a shared store and NATS.
		if !env["NATS_URL"] || !env["REDIS_URL"] {
			t.Errorf("%s: NATS_URL and REDIS_URL must be set", d.Name)
		}
	}
	if !roles["worker"] || !roles["ingress"] {
		t.Errorf("roles %v, want worker and ingress", roles)
	}
	for k, v := range cm.Data {
		if strings.ToUpper(k) != k || strings.Contains(k, "-") {
			t.Errorf("ConfigMap key %q is not a setting name", k)
		}
		if strings.Contains(strings.ToLower(k), "password") || strings.Contains(v, "CHANGE-ME") {
			t.Errorf("ConfigMap key %q holds a secret: put it in the Secret", k)
		}
	}
	var ingressLabels map[string]string
	for _, d := range deps {
		if d.Spec.Template.Spec.Containers[0].Args[2] == "ingress" {
			ingressLabels = d.Spec.Template.Labels
		}
	}
	for k, v := range svc.Spec.Selector {
		if ingressLabels[k] != v {
			t.Errorf("Service selector %s=%s does not select the ingress pods %v", k, v, ingressLabels)
		}
	}
}

func hasPort(c corev1.Container, name string) bool {
	for _, p := range c.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}
