package backend

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"

	digest "github.com/opencontainers/go-digest"
)

// Manifest media types the registry accepts.
const (
	MediaTypeOCIManifest          = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex             = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest       = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList   = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerForeignLayer   = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	MediaTypeOCIEmptyJSON         = "application/vnd.oci.empty.v1+json"
	mediaTypeDockerSchema1Signed  = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	mediaTypeDockerSchema1        = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeOCIArtifactManifest1 = "application/vnd.oci.artifact.manifest.v1+json"
)

// MaxManifestSize is the largest manifest accepted (4 MiB, as the
// distribution spec suggests registries should at least allow).
const MaxManifestSize = 4 << 20

// Descriptor points at content: a blob or another manifest.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
	Data         []byte            `json:"data,omitempty"`
}

// Platform is the platform an index entry is for.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// Manifest is the part of an image manifest or index the registry reads.
// The registry always stores and serves the original bytes, never this.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *Descriptor       `json:"config,omitempty"`
	Layers        []Descriptor      `json:"layers,omitempty"`
	Manifests     []Descriptor      `json:"manifests,omitempty"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// IsIndex reports whether a media type is a list of manifests.
func IsIndex(mediaType string) bool {
	return mediaType == MediaTypeOCIIndex || mediaType == MediaTypeDockerManifestList
}

// IsManifestMediaType reports whether the registry stores manifests of t.
func IsManifestMediaType(t string) bool {
	switch t {
	case MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerManifestList:
		return true
	}
	return false
}

// IsNonDistributable reports whether a layer is not expected to be pushed
// to the registry (foreign / non-distributable layers, or layers that name
// their own URLs).
func (d *Descriptor) IsNonDistributable() bool {
	switch d.MediaType {
	case MediaTypeDockerForeignLayer,
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
		return true
	}
	return len(d.URLs) > 0
}

// ParseManifest parses a manifest pushed with the given Content-Type and
// returns it with its effective media type. The Content-Type must agree
// with the manifest's own mediaType field when both are present; with
// neither, the shape decides (manifests -> OCI index, else OCI manifest).
// Errors are 400 MANIFEST_INVALID (or DIGEST_INVALID for a bad digest).
func ParseManifest(contentType string, body []byte) (*Manifest, string, *Error) {
	ct := ""
	if contentType != "" {
		t, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "invalid Content-Type %q", clip(contentType))
		}
		ct = t
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "manifest is not a JSON object")
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "invalid manifest JSON: %v", err)
	}
	mt := m.MediaType
	switch {
	case ct == mediaTypeDockerSchema1 || ct == mediaTypeDockerSchema1Signed || m.SchemaVersion == 1:
		return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "Docker schema 1 manifests are not supported; push schema 2 or OCI")
	case ct == mediaTypeOCIArtifactManifest1 || mt == mediaTypeOCIArtifactManifest1:
		return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "the OCI artifact manifest was dropped from image-spec 1.1; push an image manifest with artifactType")
	case mt != "" && ct != "" && ct != mt && ct != "application/json" && ct != "application/octet-stream":
		return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "Content-Type %q does not match the manifest's mediaType %q", clip(ct), clip(mt))
	case mt == "" && IsManifestMediaType(ct):
		mt = ct
	case mt == "":
		if m.Manifests != nil {
			mt = MediaTypeOCIIndex
		} else {
			mt = MediaTypeOCIManifest
		}
	}
	if !IsManifestMediaType(mt) {
		return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "unsupported manifest media type %q", clip(mt))
	}
	if m.SchemaVersion != 2 {
		return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "schemaVersion must be 2, got %d", m.SchemaVersion)
	}
	if IsIndex(mt) {
		if m.Config != nil || m.Layers != nil {
			return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "an index has manifests, not config or layers")
		}
		for i := range m.Manifests {
			if err := checkDescriptor(&m.Manifests[i], "manifests"); err != nil {
				return nil, "", err
			}
		}
	} else {
		if m.Manifests != nil {
			return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "an image manifest has config and layers, not manifests")
		}
		if m.Config == nil {
			return nil, "", Errorf(http.StatusBadRequest, CodeManifestInvalid, "manifest has no config")
		}
		if err := checkDescriptor(m.Config, "config"); err != nil {
			return nil, "", err
		}
		for i := range m.Layers {
			if err := checkDescriptor(&m.Layers[i], "layers"); err != nil {
				return nil, "", err
			}
		}
	}
	if m.Subject != nil {
		if err := checkDescriptor(m.Subject, "subject"); err != nil {
			return nil, "", err
		}
	}
	return &m, mt, nil
}

func checkDescriptor(d *Descriptor, field string) *Error {
	if _, err := ParseDigest(string(d.Digest)); err != nil {
		return Errorf(http.StatusBadRequest, CodeManifestInvalid, "%s: %s", field, err.Message)
	}
	if d.Size < 0 {
		return Errorf(http.StatusBadRequest, CodeManifestInvalid, "%s: negative size", field)
	}
	if d.MediaType == "" {
		return Errorf(http.StatusBadRequest, CodeManifestInvalid, "%s: descriptor without mediaType", field)
	}
	if d.Data != nil && (int64(len(d.Data)) != d.Size || d.Digest.Algorithm().FromBytes(d.Data) != d.Digest) {
		return Errorf(http.StatusBadRequest, CodeManifestInvalid, "%s: embedded data does not match digest and size", field)
	}
	return nil
}
