package record

import "sync"

// strTable shares the string values that most proxy records repeat (pool
// id and name, protocol, status, source, country, city, isp, consumer) as
// a codec decodes them, so that decoding a large pool allocates for what
// differs between its proxies, not for what repeats: a million records
// decoded while a worker loads would otherwise leave a million copies of
// the same few strings behind as garbage. It keeps at most strTableMax
// values; past that, new values are not shared. A nil table shares
// nothing. Safe for concurrent use (one watch per shard decodes).
type strTable struct {
	mu   sync.Mutex
	strs map[string]*string
}

const strTableMax = 1 << 16

func newStrTable() *strTable { return &strTable{strs: map[string]*string{}} }

// ptr returns a shared pointer to the string b spells. Records are never
// changed in place once decoded (see Proxy), so sharing is safe.
func (t *strTable) ptr(b []byte) *string {
	if t == nil {
		s := string(b)
		return &s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// The lookup by string(b) does not allocate.
	if p, ok := t.strs[string(b)]; ok {
		return p
	}
	s := string(b)
	if len(t.strs) < strTableMax {
		t.strs[s] = &s
	}
	return &s
}

// str returns the shared copy of the string b spells.
func (t *strTable) str(b []byte) string {
	if t == nil {
		return string(b)
	}
	return *t.ptr(b)
}
