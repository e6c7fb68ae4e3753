// Command mkregistry2 writes a synthetic registry:2 filesystem storage root
// (docker/registry/v2: blobs, repositories with _layers links, manifest
// revisions and tags) for benchmarking `wharf import` (bench/import).
//
// Layer content is pseudo-random (ChaCha8, seeded per blob), so every
// blob is distinct and incompressible; digests are computed while
// writing. Images are Docker schema 2 manifests with one config and
// -layers layers, spread over -repos repositories, one tag each.
//
//	mkregistry2 -root /tmp/r2 -size 20GiB -blobs 2000 -repos 20
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

func main() {
	root := flag.String("root", "", "folder to create (the registry's rootdirectory)")
	size := flag.String("size", "20GiB", "total bytes of layer content (suffixes KiB, MiB, GiB)")
	blobs := flag.Int("blobs", 2000, "total blobs: layers + configs (manifests come on top)")
	layers := flag.Int("layers", 3, "layers per image")
	repos := flag.Int("repos", 20, "repositories")
	workers := flag.Int("workers", 2, "blobs written at once")
	evict := flag.Bool("evict", false, "do not generate: drop the page cache of every file below -root (posix_fadvise DONTNEED), so a benchmark reads from disk")
	flag.Parse()
	if *evict {
		if err := evictTree(*root); err != nil {
			fmt.Fprintln(os.Stderr, "mkregistry2:", err)
			os.Exit(1)
		}
		return
	}
	total, err := parseSize(*size)
	if *root == "" || err != nil || *blobs < *layers+1 || *repos < 1 {
		fmt.Fprintln(os.Stderr, "usage: mkregistry2 -root DIR [-size 20GiB] [-blobs 2000] [-layers 3] [-repos 20]", err)
		os.Exit(2)
	}
	images := *blobs / (*layers + 1)
	layerSize := total / int64(images**layers)
	v2 := filepath.Join(*root, "docker", "registry", "v2")

	type job struct{ img int }
	jobs := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for j := range jobs {
				if err := writeImage(v2, j.img, *repos, *layers, layerSize, buf); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < images; i++ {
		jobs <- job{i}
	}
	close(jobs)
	wg.Wait()
	if failed != nil {
		fmt.Fprintln(os.Stderr, "mkregistry2:", failed)
		os.Exit(1)
	}
	fmt.Printf("%s: %d repositories, %d images, %d layers of %d bytes, %d blobs with manifests\n",
		*root, *repos, images, images**layers, layerSize, images*(*layers+2))
}

// writeImage writes image i: its layers, config, manifest, links and tag.
func writeImage(v2 string, i, repos, layers int, layerSize int64, buf []byte) error {
	repo := fmt.Sprintf("bench/repo%03d", i%repos)
	type desc struct {
		MediaType string `json:"mediaType"`
		Size      int64  `json:"size"`
		Digest    string `json:"digest"`
	}
	var ls []desc
	var diffs []string
	for l := 0; l < layers; l++ {
		rng := rand.New(rand.NewChaCha8(seed(i, l)))
		d, err := writeBlob(v2, layerSize, func(w io.Writer) error {
			for left := layerSize; left > 0; {
				n := int64(len(buf))
				if n > left {
					n = left
				}
				for k := int64(0); k+8 <= n; k += 8 {
					binary.LittleEndian.PutUint64(buf[k:], rng.Uint64())
				}
				if _, err := w.Write(buf[:n]); err != nil {
					return err
				}
				left -= n
			}
			return nil
		})
		if err != nil {
			return err
		}
		ls = append(ls, desc{"application/vnd.docker.image.rootfs.diff.tar.gzip", layerSize, d})
		diffs = append(diffs, d)
		if err := link(filepath.Join(v2, "repositories", repo, "_layers"), d); err != nil {
			return err
		}
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": diffs}, "image": i})
	cd, err := writeBytes(v2, cfg)
	if err != nil {
		return err
	}
	if err := link(filepath.Join(v2, "repositories", repo, "_layers"), cd); err != nil {
		return err
	}
	m, _ := json.MarshalIndent(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.docker.distribution.manifest.v2+json",
		"config":        desc{"application/vnd.docker.container.image.v1+json", int64(len(cfg)), cd},
		"layers":        ls,
	}, "", "   ")
	md, err := writeBytes(v2, m)
	if err != nil {
		return err
	}
	if err := link(filepath.Join(v2, "repositories", repo, "_manifests", "revisions"), md); err != nil {
		return err
	}
	tag := filepath.Join(v2, "repositories", repo, "_manifests", "tags", "v"+strconv.Itoa(i))
	if err := link(filepath.Join(tag, "index"), md); err != nil {
		return err
	}
	return writeFile(filepath.Join(tag, "current", "link"), []byte(md))
}

func seed(i, l int) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], uint64(i))
	binary.LittleEndian.PutUint64(s[8:], uint64(l))
	return s
}

// writeBlob streams fill into a temporary file while hashing it, then
// moves it to blobs/sha256/xx/<hex>/data.
func writeBlob(v2 string, size int64, fill func(io.Writer) error) (string, error) {
	tmpDir := filepath.Join(v2, "..", "tmp-mkregistry2")
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(tmpDir, "blob-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	if err := fill(io.MultiWriter(f, h)); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Chmod(0o644); err != nil { // as registry:2 writes them
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return place(v2, f.Name(), h)
}

func writeBytes(v2 string, data []byte) (string, error) {
	return writeBlob(v2, int64(len(data)), func(w io.Writer) error { _, err := w.Write(data); return err })
}

func place(v2, tmp string, h hash.Hash) (string, error) {
	hx := hex.EncodeToString(h.Sum(nil))
	dir := filepath.Join(v2, "blobs", "sha256", hx[:2], hx)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return "sha256:" + hx, os.Rename(tmp, filepath.Join(dir, "data"))
}

// link writes <dir>/sha256/<hex>/link holding the digest.
func link(dir, d string) error {
	return writeFile(filepath.Join(dir, "sha256", strings.TrimPrefix(d, "sha256:"), "link"), []byte(d))
}

func writeFile(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// evictTree asks the kernel to drop the cached pages of every regular
// file below root: only these files, not the whole machine's page cache.
func evictTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(n * float64(mult)), nil
}
