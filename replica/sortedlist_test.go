package replica

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

type kv struct{ k, v int }

func lessKV(a, b kv) bool { return a.k < b.k }

// The list against a sorted slice, through random inserts, replaces and
// deletes that make chunks fill, split, empty and merge.
func TestSortedListMatchesSortedSlice(t *testing.T) {
	for _, keys := range []int{10, 700, 5000} {
		rng := rand.New(rand.NewPCG(uint64(keys), 7))
		l := newSortedList(lessKV)
		var ref []kv
		check := func(step int) {
			t.Helper()
			var got []kv
			l.Ascend(func(x kv) bool { got = append(got, x); return true })
			if !slices.Equal(got, ref) || l.Len() != len(ref) {
				t.Fatalf("keys %d step %d: list has %d items (Len %d), want %d", keys, step, len(got), l.Len(), len(ref))
			}
			for i, c := range l.chunks {
				if len(c) == 0 || len(c) > chunkMax {
					t.Fatalf("keys %d step %d: chunk of %d items", keys, step, len(c))
				}
				if i > 0 && len(l.chunks[i-1])+len(c) <= chunkMax/2 {
					t.Fatalf("keys %d step %d: neighbour chunks of %d and %d items", keys, step, len(l.chunks[i-1]), len(c))
				}
			}
			from := rng.IntN(keys + 2)
			i, _ := slices.BinarySearchFunc(ref, from, func(x kv, k int) int { return x.k - k })
			var tail []kv
			l.AscendGreaterOrEqual(kv{k: from}, func(x kv) bool { tail = append(tail, x); return len(tail) < 5 })
			want := ref[i:min(len(ref), i+5)]
			if !slices.Equal(tail, want) {
				t.Fatalf("keys %d step %d: from %d got %v want %v", keys, step, from, tail, want)
			}
		}
		for step := 0; step < 20000; step++ {
			k := rng.IntN(keys)
			if step < keys {
				k = step // an in-order load first
			}
			i, found := slices.BinarySearchFunc(ref, k, func(x kv, k int) int { return x.k - k })
			if rng.IntN(3) == 0 && step >= keys {
				got, ok := l.Delete(kv{k: k})
				if ok != found || (found && got != ref[i]) {
					t.Fatalf("keys %d step %d: Delete(%d) = %v, %v; want %v", keys, step, k, got, ok, found)
				}
				if found {
					ref = slices.Delete(ref, i, i+1)
				}
			} else {
				x := kv{k, step}
				l.ReplaceOrInsert(x)
				if found {
					ref[i] = x
				} else {
					ref = slices.Insert(ref, i, x)
				}
			}
			if step%97 == 0 || step < 50 {
				check(step)
			}
		}
		check(-1)
	}
}

// In-order loading, what a pool's indexes see, fills chunks: a 16-byte
// item costs little more than itself.
func TestSortedListInOrderFillsChunks(t *testing.T) {
	const n = 100000
	runtime.GC()
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	l := newSortedList(lessSeq)
	for i := 0; i < n; i++ {
		l.ReplaceOrInsert(seqItem{seq: uint64(i + 1)})
	}
	runtime.GC()
	runtime.ReadMemStats(&b)
	per := float64(b.HeapAlloc-a.HeapAlloc) / n
	t.Logf("%.1f bytes per 16-byte item, %d chunks", per, len(l.chunks))
	if per > 24 {
		t.Fatalf("%.1f bytes per item", per)
	}
	runtime.KeepAlive(l)
}

// Deleting nearly everything in order, chunk by chunk from the front,
// leaves a list whose adjacent chunks still hold more than half a chunk
// between them, not one chunk per surviving item.
func TestSortedListDeletesMergeChunks(t *testing.T) {
	l := newSortedList(lessSeq)
	const n = 100000
	for i := 0; i < n; i++ {
		l.ReplaceOrInsert(seqItem{seq: uint64(i)})
	}
	for i := 0; i < n; i++ {
		if i%chunkMax != chunkMax-1 {
			if _, ok := l.Delete(seqItem{seq: uint64(i)}); !ok {
				t.Fatalf("item %d not found", i)
			}
		}
	}
	for i := 1; i < len(l.chunks); i++ {
		if len(l.chunks[i-1])+len(l.chunks[i]) <= chunkMax/2 {
			t.Fatalf("chunks %d and %d hold %d and %d items", i-1, i, len(l.chunks[i-1]), len(l.chunks[i]))
		}
	}
	t.Logf("%d items left in %d chunks", l.Len(), len(l.chunks))
	if l.Len() != n/chunkMax {
		t.Fatalf("%d items left", l.Len())
	}
}
