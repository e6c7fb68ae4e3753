// Package templates holds the configuration files the benchmark suite
// writes for each server it starts: wharf's gateway.toml, docker-registry
// (registry 2.8) and registry:3 YAML, zot's JSON, and nginx in its two roles (static
// file server, and the classic TLS + auth_basic proxy in front of a
// registry).
package templates

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

//go:embed *.tmpl
var files embed.FS

// all holds every template; "json" quotes a string for JSON files (zot).
var all = template.Must(template.New("").Funcs(template.FuncMap{"json": jsonString}).ParseFS(files, "*.tmpl"))

func jsonString(s string) (string, error) {
	b, err := json.Marshal(s)
	return string(b), err
}

// Render executes the named template with data.
func Render(name string, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := all.ExecuteTemplate(&b, name, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// Write renders the named template into path.
func Write(path, name string, data any) error {
	b, err := Render(name, data)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Wharf is the data of wharf.toml.tmpl.
type Wharf struct {
	DataDir            string
	HTTP, HTTPS, Admin string // listen addresses
	Htpasswd           string // "" = no [auth]
	Sites              []WharfSite
}

// WharfSite is one [[site]] of wharf.toml.tmpl.
type WharfSite struct {
	Host      string
	Backend   string // registry | proxy | cache
	TLS       string // off | manual
	Cert, Key string // tls = "manual"
	Upstream  string // backend = "proxy" or "cache"
	S3        *S3    // backend = "registry" on S3; nil = local root
}

// DockerRegistry is the data of docker-registry.yml.tmpl (registry 2.8,
// plain HTTP, no auth: the upstream of nginx and of wharf's proxy site).
type DockerRegistry struct {
	Root string
	Addr string
	// AccessLog turns the access log on (a mirror's upstream: the
	// mirror section counts its GETs).
	AccessLog bool
}

// Registry3Proxy is the data of registry3-proxy.yml.tmpl (registry:3 as a
// pull-through cache of Remote, plain HTTP).
type Registry3Proxy struct {
	Root, Addr, Remote string
}

// Zot is the data of zot.json.tmpl (zot with its own TLS and htpasswd).
type Zot struct {
	Root, Cert, Key, Htpasswd string
	Port                      int // on 127.0.0.1
}

// Registry3 is the data of registry3.yml.tmpl (distribution v3 with its
// own TLS and htpasswd).
type Registry3 struct {
	Root, Addr, Cert, Key, Htpasswd string
}

// Registry3S3 is the data of registry3-s3.yml.tmpl.
type Registry3S3 struct {
	Addr, Endpoint, Bucket, AccessKey, SecretKey string
}

// S3 is a WharfSite's bucket (storage = "s3").
type S3 struct {
	Endpoint, Bucket, AccessKeyFile, SecretKeyFile string
}

// Nginx is the data of nginx-static.conf.tmpl and nginx-registry.conf.tmpl.
type Nginx struct {
	Dir       string // prefix: pid, logs, temp files
	Listen    string // address:port
	TLS       bool
	Cert, Key string
	Root      string // static: folder served
	Htpasswd  string // registry: auth_basic_user_file
	Upstream  string // registry: address:port of docker-registry
}
