package replica

import (
	"slices"
	"sort"
)

// sortedList is an ordered set kept as a list of sorted chunks: a B+ tree
// of two levels. The pool indexes use it instead of the btree package
// because pools are filled in added order, and in-order inserts leave that
// package's nodes a quarter full (73 bytes per 16-byte item measured at
// 100,000 items); here they fill chunks completely (about 17 bytes), which
// is most of a worker's memory per proxy. A chunk that fills up in the
// middle splits in halves, and small neighbours merge on delete.
type sortedList[T any] struct {
	less   func(a, b T) bool
	chunks [][]T
	n      int
}

const chunkMax = 512

func newSortedList[T any](less func(a, b T) bool) *sortedList[T] {
	return &sortedList[T]{less: less}
}

// Len is the number of items.
func (l *sortedList[T]) Len() int { return l.n }

// ReplaceOrInsert adds x, or replaces the item equal to it.
func (l *sortedList[T]) ReplaceOrInsert(x T) {
	if l.appendLast(x) {
		return
	}
	ci, i := l.search(x)
	if ci < len(l.chunks) && i < len(l.chunks[ci]) && !l.less(x, l.chunks[ci][i]) {
		l.chunks[ci][i] = x
		return
	}
	l.n++
	if len(l.chunks) == 0 {
		l.chunks = [][]T{{x}}
		return
	}
	if ci == len(l.chunks) { // after every item: the last chunk's end
		ci, i = ci-1, len(l.chunks[ci-1])
	}
	c := l.chunks[ci]
	if len(c) < chunkMax {
		l.chunks[ci] = slices.Insert(c, i, x)
		return
	}
	if i == len(c) {
		// Appending to a full chunk: start the next one, leaving this one
		// full, which is what in-order loading does.
		l.chunks = slices.Insert(l.chunks, ci+1, l.newChunk(x))
		return
	}
	half := len(c) / 2
	left, right := slices.Clip(c[:half]), slices.Clone(c[half:])
	if i <= half {
		left = slices.Insert(left, i, x)
	} else {
		right = slices.Insert(right, i-half, x)
	}
	l.chunks[ci] = left
	l.chunks = slices.Insert(l.chunks, ci+1, right)
}

// appendLast adds x after every item, if it belongs there: a pool loads in
// added order, so most inserts of a load land here, with no search.
func (l *sortedList[T]) appendLast(x T) bool {
	n := len(l.chunks)
	if n == 0 {
		return false
	}
	last := l.chunks[n-1]
	if !l.less(last[len(last)-1], x) {
		return false
	}
	l.n++
	if len(last) < chunkMax {
		l.chunks[n-1] = append(last, x)
	} else {
		l.chunks = append(l.chunks, l.newChunk(x))
	}
	return true
}

// newChunk is a chunk started after a full one, holding x. It gets a full
// chunk's room at once: in-order loading fills it, and growing it by
// doubling would leave as much garbage behind as the chunk itself.
func (l *sortedList[T]) newChunk(x T) []T {
	c := make([]T, 1, chunkMax)
	c[0] = x
	return c
}

// Delete removes the item equal to x and returns it.
func (l *sortedList[T]) Delete(x T) (T, bool) {
	var zero T
	ci, i := l.search(x)
	if ci == len(l.chunks) || i == len(l.chunks[ci]) || l.less(x, l.chunks[ci][i]) {
		return zero, false
	}
	c := l.chunks[ci]
	old := c[i]
	c = slices.Delete(c, i, i+1)
	l.n--
	// Two neighbours that fit in half a chunk merge, so any two adjacent
	// chunks hold more than half a chunk between them: deletes cannot
	// leave a long run of nearly empty chunks.
	switch {
	case len(c) == 0:
		l.chunks = slices.Delete(l.chunks, ci, ci+1)
	case ci > 0 && len(l.chunks[ci-1])+len(c) <= chunkMax/2:
		l.chunks[ci-1] = append(l.chunks[ci-1], c...)
		l.chunks = slices.Delete(l.chunks, ci, ci+1)
	case ci+1 < len(l.chunks) && len(c)+len(l.chunks[ci+1]) <= chunkMax/2:
		l.chunks[ci] = append(c, l.chunks[ci+1]...)
		l.chunks = slices.Delete(l.chunks, ci+1, ci+2)
	default:
		l.chunks[ci] = c
	}
	return old, true
}

// Ascend calls fn on every item in order until fn returns false.
func (l *sortedList[T]) Ascend(fn func(T) bool) {
	l.ascendFrom(0, 0, fn)
}

// AscendGreaterOrEqual calls fn on the items from the first one not less
// than x, in order, until fn returns false.
func (l *sortedList[T]) AscendGreaterOrEqual(x T, fn func(T) bool) {
	ci, i := l.search(x)
	l.ascendFrom(ci, i, fn)
}

func (l *sortedList[T]) ascendFrom(ci, i int, fn func(T) bool) {
	for ; ci < len(l.chunks); ci, i = ci+1, 0 {
		for _, it := range l.chunks[ci][i:] {
			if !fn(it) {
				return
			}
		}
	}
}

// search finds the first item not less than x: its chunk and place there,
// or len(chunks) when every item is less.
func (l *sortedList[T]) search(x T) (int, int) {
	ci := l.searchChunks(x)
	if ci == len(l.chunks) {
		return ci, 0
	}
	c := l.chunks[ci]
	return ci, sort.Search(len(c), func(k int) bool { return !l.less(c[k], x) })
}

// searchChunks finds the chunk of the first item not less than x. An item
// of the last chunk (a little out of order in a load) is found there with
// no search over the chunks, each step of which reads another chunk.
func (l *sortedList[T]) searchChunks(x T) int {
	n := len(l.chunks)
	if n > 1 {
		last, prev := l.chunks[n-1], l.chunks[n-2]
		if l.less(prev[len(prev)-1], x) {
			if l.less(last[len(last)-1], x) {
				return n
			}
			return n - 1
		}
	}
	return sort.Search(n, func(k int) bool {
		c := l.chunks[k]
		return !l.less(c[len(c)-1], x)
	})
}

// cursor walks a sortedList in order, for merging several lists lazily.
type cursor[T any] struct {
	l     *sortedList[T]
	ci, i int
}

// seek returns a cursor at the first item not less than x.
func (l *sortedList[T]) seek(x T) cursor[T] {
	ci, i := l.search(x)
	return cursor[T]{l: l, ci: ci, i: i}
}

func (c *cursor[T]) valid() bool { return c.ci < len(c.l.chunks) }

func (c *cursor[T]) item() T { return c.l.chunks[c.ci][c.i] }

func (c *cursor[T]) next() {
	if c.i++; c.i == len(c.l.chunks[c.ci]) {
		c.ci, c.i = c.ci+1, 0
	}
}
