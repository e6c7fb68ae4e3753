package registry_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/wharf-dev/wharf/e2e/harness"
)

// TestDeleteWithClients: crane and skopeo delete manifests (by digest and
// by tag), and a blob DELETE over HTTP makes the blob unknown, on a
// registry with delete = true.
func TestDeleteWithClients(t *testing.T) {
	harness.ForEachTarget(t, func(t *testing.T, tg harness.Target) {
		crane := harness.Crane(t)
		skopeo := harness.Skopeo(t)
		reg := tg.Start(t)
		repo := reg.Addr() + "/" + repoName(t, "del")
		img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 2, 64<<10)
		tar := harness.WriteDockerArchive(t, img, "wharf-e2e.test/del:v1")
		for _, tag := range []string{"a", "b"} {
			crane.Must(t, "push", "--insecure", tar, repo+":"+tag)
		}
		other := harness.RandomImage(t, harness.OCIFormat, "linux/amd64", 1, 64<<10)
		skopeo.Must(t, "copy", "--dest-tls-verify=false", "--preserve-digests", "oci:"+harness.WriteOCILayout(t, "v1", other)+":v1", "docker://"+repo+":other")
		d := harness.MustDigest(t, img)

		// Deleting one tag leaves the manifest and its other tag.
		if tg.Works(harness.FeatureDeleteTag) {
			crane.Must(t, "delete", "--insecure", repo+":a")
			if _, err := crane.Run(t, "digest", "--insecure", repo+":a"); err == nil {
				t.Errorf("tag a still resolves after crane delete %s:a", repo)
			}
			harness.VerifyRemoteImage(t, repo+":b", img, harness.Exact)
			if tags := lsTags(t, crane, repo); !slices.Equal(tags, []string{"b", "other"}) {
				t.Errorf("tags after deleting a: %v, want [b other]", tags)
			}
		}

		// Deleting by digest: the manifest is gone, by digest and by tag.
		crane.Must(t, "delete", "--insecure", repo+"@"+d.String())
		for _, ref := range []string{repo + "@" + d.String(), repo + ":b"} {
			out, err := crane.Run(t, "manifest", "--insecure", ref)
			if err == nil {
				t.Errorf("%s still pulls after deleting %s", ref, d)
			} else if !strings.Contains(out, "MANIFEST_UNKNOWN") && !strings.Contains(out, "404") {
				t.Errorf("pull of deleted %s failed without MANIFEST_UNKNOWN/404:\n%s", ref, out)
			}
		}

		// skopeo delete resolves the tag and deletes by digest.
		skopeo.Must(t, "delete", "--tls-verify=false", "docker://"+repo+":other")
		if _, err := crane.Run(t, "digest", "--insecure", repo+":other"); err == nil {
			t.Errorf("%s:other still resolves after skopeo delete", repo)
		}

		// A blob DELETE makes it unknown in that repository.
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		ld, err := ls[0].Digest()
		if err != nil {
			t.Fatal(err)
		}
		raw := harness.NewRawClient(reg.URL())
		path := "/v2/" + repoName(t, "del") + "/blobs/" + ld.String()
		if r := raw.Do(t, http.MethodDelete, path, nil, nil); r.Status != http.StatusAccepted {
			t.Fatalf("DELETE blob: %d %s", r.Status, r.Body)
		}
		if r := raw.Do(t, http.MethodHead, path, nil, nil); r.Status != http.StatusNotFound {
			t.Errorf("HEAD deleted blob: %d, want 404", r.Status)
		}
	})
}

// TestDeleteDisabled: with delete = false (the default), crane's delete is
// refused with 405 UNSUPPORTED and the image stays.
func TestDeleteDisabled(t *testing.T) {
	if !harness.WharfEnabled(t) {
		t.Skip("wharf is not among WHARF_E2E_TARGETS")
	}
	crane := harness.Crane(t)
	w := harness.StartWharf(t, strings.Replace(harness.RegistryConfig, "delete = true", "delete = false", 1))
	ref := w.Addr() + "/" + repoName(t, "keep") + ":v1"
	img := harness.RandomImage(t, harness.DockerFormat, "linux/amd64", 1, 64<<10)
	crane.Must(t, "push", "--insecure", harness.WriteDockerArchive(t, img, "wharf-e2e.test/keep:v1"), ref)
	d := harness.MustDigest(t, img)
	for _, target := range []string{ref, w.Addr() + "/" + repoName(t, "keep") + "@" + d.String()} {
		out, err := crane.Run(t, "delete", "--insecure", target)
		if err == nil {
			t.Fatalf("crane delete %s succeeded with delete = false", target)
		}
		if !strings.Contains(out, "UNSUPPORTED") {
			t.Errorf("crane delete %s: want an UNSUPPORTED error, got:\n%s", target, out)
		}
	}
	harness.VerifyRemoteImage(t, ref, img, harness.Exact)
	raw := harness.NewRawClient(w.URL())
	r := raw.Do(t, http.MethodDelete, "/v2/"+repoName(t, "keep")+"/manifests/"+d.String(), nil, nil)
	if r.Status != http.StatusMethodNotAllowed {
		t.Errorf("DELETE manifest with delete = false: %d, want 405", r.Status)
	}
	var body struct{ Errors []struct{ Code string } }
	if err := json.Unmarshal(r.Body, &body); err != nil || len(body.Errors) == 0 || body.Errors[0].Code != "UNSUPPORTED" {
		t.Errorf("DELETE manifest with delete = false: body %s, want errors[0].code UNSUPPORTED", r.Body)
	}
}

func lsTags(t *testing.T, crane *harness.Tool, repo string) []string {
	t.Helper()
	tags := strings.Fields(crane.Must(t, "ls", "--insecure", repo))
	slices.Sort(tags)
	return tags
}
