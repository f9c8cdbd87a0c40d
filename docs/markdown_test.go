package docs_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

// mdDoc is a Markdown file cut into sections, one per heading.
type mdDoc struct {
	path     string
	lines    []string
	sections []*section
}

// section is a heading and everything up to the next heading of any level.
type section struct {
	level int
	title string // the heading's text as written
	line  int    // 1-based line of the heading
	// chapter is the title of the level-2 heading this section is in (its
	// own title for a level-2 heading).
	chapter string
	// paras are the runs of prose lines, each joined by spaces; tables and
	// code blocks end a run.
	paras  []para
	tables []table
	blocks []block
}

type para struct {
	text string
	line int
}

type table struct {
	header []string
	rows   [][]string
	line   int
}

// block is a fenced code block.
type block struct {
	info string // the info string, e.g. "sh" or "json"
	body string
	line int
	// follows is true when only blank lines separate this block from the
	// previous block of the same section.
	follows bool
}

var fenceRE = regexp.MustCompile("^(```+|~~~+)\\s*(\\S*)")

// readDoc parses a Markdown file well enough for the conventions of
// PROTOCOL.md: ATX headings, fenced code blocks, pipe tables, paragraphs.
func readDoc(t *testing.T, path string) *mdDoc {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	d := &mdDoc{path: path, lines: strings.Split(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n")}
	cur := &section{level: 0, line: 1}
	d.sections = append(d.sections, cur)
	var fence string
	var blk *block
	var body []string
	var tbl *table
	var prose []string
	proseLine := 0
	blankSinceBlock := true // no block yet: nothing to follow
	endProse := func() {
		if len(prose) > 0 {
			cur.paras = append(cur.paras, para{text: strings.Join(prose, " "), line: proseLine})
			prose = nil
		}
	}
	endTable := func() {
		if tbl != nil {
			cur.tables = append(cur.tables, *tbl)
			tbl = nil
		}
	}
	for i, line := range d.lines {
		n := i + 1
		if blk != nil {
			if strings.HasPrefix(strings.TrimSpace(line), fence) && strings.Trim(strings.TrimSpace(line), fence[:1]) == "" {
				blk.body = strings.Join(body, "\n")
				cur.blocks = append(cur.blocks, *blk)
				blk, body = nil, nil
				blankSinceBlock = true
				continue
			}
			body = append(body, line)
			continue
		}
		if m := fenceRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			endProse()
			endTable()
			fence = m[1]
			blk = &block{info: m[2], line: n, follows: blankSinceBlock && len(cur.blocks) > 0}
			continue
		}
		trimmed := strings.TrimSpace(line)
		if trimmed != "" {
			blankSinceBlock = false
		}
		if level, title, ok := heading(line); ok {
			endProse()
			endTable()
			chapter := cur.chapter
			if level <= 2 {
				chapter = title
			}
			cur = &section{level: level, title: title, line: n, chapter: chapter}
			d.sections = append(d.sections, cur)
			continue
		}
		switch {
		case strings.HasPrefix(trimmed, "|"):
			endProse()
			cells := splitRow(trimmed)
			switch {
			case tbl == nil:
				tbl = &table{header: cells, line: n}
			case isSeparator(cells):
			default:
				tbl.rows = append(tbl.rows, cells)
			}
		case trimmed == "":
			endProse()
			endTable()
		default:
			endTable()
			if len(prose) == 0 {
				proseLine = n
			}
			prose = append(prose, trimmed)
		}
	}
	if blk != nil {
		t.Fatalf("%s:%d: code block never closed", path, blk.line)
	}
	endProse()
	endTable()
	return d
}

var headingRE = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)

func heading(line string) (int, string, bool) {
	m := headingRE.FindStringSubmatch(line)
	if m == nil {
		return 0, "", false
	}
	return len(m[1]), m[2], true
}

// splitRow splits a pipe-table row into trimmed cells; a pipe inside a code
// span does not split.
func splitRow(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimPrefix(row, "|")
	row = strings.TrimSuffix(row, "|")
	var cells []string
	var cell strings.Builder
	inCode := false
	for _, r := range row {
		switch {
		case r == '`':
			inCode = !inCode
			cell.WriteRune(r)
		case r == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cell.String()))
			cell.Reset()
		default:
			cell.WriteRune(r)
		}
	}
	return append(cells, strings.TrimSpace(cell.String()))
}

func isSeparator(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, ":-") != "" || c == "" {
			return false
		}
	}
	return true
}

// slugs returns the anchors GitHub gives the headings of d, duplicates
// numbered -1, -2, ... as GitHub numbers them.
func (d *mdDoc) slugs() map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, s := range d.sections[1:] {
		base := slug(s.title)
		a := base
		if n := seen[base]; n > 0 {
			a = base + "-" + strconv.Itoa(n)
		}
		seen[base]++
		out[a] = true
	}
	return out
}

var inlineLinkRE = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)

// slug is GitHub's heading anchor: the heading's text (links reduced to
// their text) in lower case, with everything but letters, digits, marks,
// '_', '-' and spaces dropped, and spaces turned into '-'.
func slug(title string) string {
	title = inlineLinkRE.ReplaceAllString(title, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), unicode.IsMark(r), r == '_', r == '-':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

func TestSlug(t *testing.T) {
	for title, want := range map[string]string{
		"`pharox.acquire`":                                     "pharoxacquire",
		"`pharox.events.acquire_failed`":                       "pharoxeventsacquire_failed",
		"Choices where the contract is silent":                 "choices-where-the-contract-is-silent",
		"Set-up: two commands":                                 "set-up-two-commands",
		"Walk-through with the `nats` CLI":                     "walk-through-with-the-nats-cli",
		"A run on the 2-core development machine (2026-11-28)": "a-run-on-the-2-core-development-machine-2026-11-28",
		"See [the docs](docs/PROTOCOL.md)":                     "see-the-docs",
	} {
		require.Equal(t, want, slug(title), title)
	}
}
