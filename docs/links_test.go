package docs_test

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// repoRoot is the repository's root: the directory of go.mod above this
// package.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(dir, "go.mod"))
	require.NoError(t, err, "the docs package must sit one level below the repository root")
	return dir
}

// markdownFiles lists every *.md of the repository, relative to root.
func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir // .git, .ci's hidden peers: not documentation
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".md") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			out = append(out, rel)
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

var (
	// linkRE finds inline links and images: [text](target "title").
	linkRE = regexp.MustCompile(`!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	// refDefRE finds reference definitions: [label]: target
	refDefRE = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$`)
	// schemeRE recognises absolute URLs (https:, mailto:, ...).
	schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*:`)
)

// stripCodeSpans replaces each code span of a line (a run of n backticks up
// to the next run of exactly n) by "code": links inside code are not links.
func stripCodeSpans(line string) string {
	var b strings.Builder
	for i := 0; i < len(line); {
		if line[i] != '`' {
			b.WriteByte(line[i])
			i++
			continue
		}
		n := 0
		for i+n < len(line) && line[i+n] == '`' {
			n++
		}
		end := -1
		for j := i + n; j < len(line); {
			if line[j] != '`' {
				j++
				continue
			}
			m := 0
			for j+m < len(line) && line[j+m] == '`' {
				m++
			}
			if m == n {
				end = j + m
				break
			}
			j += m
		}
		if end < 0 { // an unmatched run is literal text
			b.WriteString(line[i : i+n])
			i += n
			continue
		}
		b.WriteString("code")
		i = end
	}
	return b.String()
}

// links returns the link targets of a Markdown file with their line
// numbers, outside code blocks and code spans.
func links(lines []string) map[int][]string {
	out := map[int][]string{}
	var fence string
	for i, line := range lines {
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]) == "" {
				fence = ""
			}
			continue
		}
		if m := fenceRE.FindStringSubmatch(trimmed); m != nil {
			fence = m[1]
			continue
		}
		if m := refDefRE.FindStringSubmatch(line); m != nil {
			out[i+1] = append(out[i+1], m[1])
			continue
		}
		for _, m := range linkRE.FindAllStringSubmatch(stripCodeSpans(line), -1) {
			out[i+1] = append(out[i+1], m[1])
		}
	}
	return out
}

// TestRelativeLinksStayInTheRepository checks every relative link of every
// Markdown file: it must name a file or directory inside the repository,
// and its #anchor, if any, a heading of the Markdown file it points to.
// Links to web pages are not followed.
func TestRelativeLinksStayInTheRepository(t *testing.T) {
	root := repoRoot(t)
	files := markdownFiles(t, root)
	require.Contains(t, files, "README.md")
	require.Contains(t, files, filepath.Join("docs", "PROTOCOL.md"))
	anchors := map[string]map[string]bool{}
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		a := readDoc(t, path).slugs()
		anchors[path] = a
		return a
	}
	checked := 0
	for _, rel := range files {
		src := filepath.Join(root, rel)
		raw, err := os.ReadFile(src)
		require.NoError(t, err)
		for line, targets := range links(strings.Split(string(raw), "\n")) {
			for _, target := range targets {
				if target == "" || schemeRE.MatchString(target) {
					continue
				}
				checked++
				where := fmt.Sprintf("%s:%d: link %s", rel, line, target)
				path, anchor, _ := strings.Cut(target, "#")
				dest := src
				if path != "" {
					dest = filepath.Join(filepath.Dir(src), filepath.FromSlash(path))
					inside, err := filepath.Rel(root, dest)
					require.NoError(t, err)
					if inside == ".." || strings.HasPrefix(inside, ".."+string(filepath.Separator)) {
						t.Errorf("%s leaves the repository (to %s); link to a file in the repository or to a web page", where, inside)
						continue
					}
					if _, err := os.Stat(dest); err != nil {
						t.Errorf("%s names nothing in the repository: %v", where, err)
						continue
					}
				}
				if anchor != "" && strings.HasSuffix(dest, ".md") && !anchorsOf(dest)[anchor] {
					t.Errorf("%s: no heading of %s has the anchor #%s", where, filepath.Base(dest), anchor)
				}
			}
		}
	}
	require.Positive(t, checked, "no relative link found: the link reader is broken")
}

func TestLinkReader(t *testing.T) {
	got := links([]string{
		"see [a](a.md#x) and ![img](img/p.png \"title\") and [web](https://example.com/)",
		"`[not](a link)` and ``[nor `this`](one)`` but [`this`](b.md)",
		"```sh",
		"[inside](code.md)",
		"```",
		"[ref]: ../outside.md",
	})
	require.Equal(t, map[int][]string{
		1: {"a.md#x", "img/p.png", "https://example.com/"},
		2: {"b.md"},
		6: {"../outside.md"},
	}, got)
}
