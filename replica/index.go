package replica

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/pharox/pharox-nats/model"
	"github.com/pharox/pharox-nats/record"
)

// poolIndex holds a pool's available proxies (active, below their limit and
// not cooling down as of the replica's counts time) in the orders selectors
// need, so that a pick looks at candidates, not at the whole pool:
//   - bySeq: added order (first_available, round_robin, filtered scans);
//   - byUse: fewest active leases, then added order (least_used);
//   - byLat: the measured proxies by lowest latency_ms, then added order
//     (lowest_latency; the never measured come after them in added order,
//     which is bySeq's);
//   - byAttr: per exact-match attribute value (protocol, source, country,
//     city, isp, asn), in added order;
//   - byCell: by 1° latitude/longitude cell, then added order, for
//     coordinate filters (one tree: most cells hold a proxy or two, and a
//     tree per cell would cost more than its proxies);
//   - list: an array for uniform random picks (an entry's slot is its
//     place in it).
type poolIndex struct {
	bySeq  *sortedList[seqItem]
	byUse  *sortedList[useItem]
	byLat  *sortedList[latItem]
	byAttr map[string]*sortedList[seqItem]
	byCell *sortedList[cellItem]
	list   []*proxyEntry
}

type seqItem struct {
	seq uint64
	e   *proxyEntry
}

// useItem and cellItem, like latItem, take the added order from the entry
// (read only to break ties): 16 bytes each instead of 24, one per
// available proxy.
type useItem struct {
	leases int32
	e      *proxyEntry
}

// latItem orders by latency; the added order comes from the entry, which
// keeps the item small (one per measured proxy).
type latItem struct {
	ms float64
	e  *proxyEntry
}

type cell struct{ lat, lon int16 }

type cellItem struct {
	c cell
	e *proxyEntry
}

func lessSeq(a, b seqItem) bool { return a.seq < b.seq }

func lessUse(a, b useItem) bool {
	if a.leases != b.leases {
		return a.leases < b.leases
	}
	return a.e.rec.Seq < b.e.rec.Seq
}

func lessLat(a, b latItem) bool {
	if a.ms != b.ms {
		return a.ms < b.ms
	}
	return a.e.rec.Seq < b.e.rec.Seq
}

// latOf is e's place in byLat; ok is false for a proxy never measured.
func latOf(e *proxyEntry) (latItem, bool) {
	ms, ok := e.rec.Latency()
	return latItem{ms, e}, ok
}

func lessCell(a, b cellItem) bool {
	if a.c != b.c {
		return a.c.lat < b.c.lat || (a.c.lat == b.c.lat && a.c.lon < b.c.lon)
	}
	return a.e.rec.Seq < b.e.rec.Seq
}

func newPoolIndex() *poolIndex {
	return &poolIndex{
		bySeq:  newSortedList(lessSeq),
		byUse:  newSortedList(lessUse),
		byLat:  newSortedList(lessLat),
		byAttr: map[string]*sortedList[seqItem]{},
		byCell: newSortedList(lessCell),
	}
}

// attrKeys are the exact-match keys a record is indexed under.
func attrKeys(r *record.Proxy, fn func(string)) {
	fn(protocolKey(r.Protocol))
	if r.Source != nil {
		fn("s\x00" + *r.Source)
	}
	if r.Country != nil {
		fn("c\x00" + *r.Country)
	}
	if r.City != nil {
		fn("t\x00" + *r.City)
	}
	if r.ISP != nil {
		fn("i\x00" + *r.ISP)
	}
	if r.ASN != nil {
		fn("a\x00" + strconv.FormatInt(*r.ASN, 10))
	}
}

// protocolKey is the attribute key of a protocol; the four of the contract
// are constants, so that indexing a proxy allocates nothing for it.
func protocolKey(p model.Protocol) string {
	switch p {
	case model.ProtocolHTTP:
		return "p\x00http"
	case model.ProtocolHTTPS:
		return "p\x00https"
	case model.ProtocolSOCKS4:
		return "p\x00socks4"
	case model.ProtocolSOCKS5:
		return "p\x00socks5"
	}
	return "p\x00" + string(p)
}

func cellOf(lat, lon float64) cell {
	a, o := math.Floor(lat), math.Floor(lon)
	if a >= 90 {
		a = 89 // the pole's row joins the one below it
	}
	if o >= 180 {
		o = 179
	}
	return cell{int16(a), int16(o)}
}

func (ix *poolIndex) insert(e *proxyEntry) {
	it := seqItem{e.rec.Seq, e}
	ix.bySeq.ReplaceOrInsert(it)
	ix.byUse.ReplaceOrInsert(useItem{e.counted.leases, e})
	if it, ok := latOf(e); ok {
		ix.byLat.ReplaceOrInsert(it)
	}
	attrKeys(e.rec, func(k string) {
		t := ix.byAttr[k]
		if t == nil {
			t = newSortedList(lessSeq)
			ix.byAttr[k] = t
		}
		t.ReplaceOrInsert(it)
	})
	if e.rec.Latitude != nil && e.rec.Longitude != nil {
		ix.byCell.ReplaceOrInsert(cellItem{cellOf(*e.rec.Latitude, *e.rec.Longitude), e})
	}
	e.slot = int32(len(ix.list))
	ix.list = append(ix.list, e)
}

// remove takes out e as it was indexed (its counted leases at insert time).
func (ix *poolIndex) remove(e *proxyEntry) {
	it := seqItem{seq: e.rec.Seq}
	if _, ok := ix.bySeq.Delete(it); !ok {
		return
	}
	ix.byUse.Delete(useItem{leases: e.counted.leases, e: e})
	if it, ok := latOf(e); ok {
		ix.byLat.Delete(it)
	}
	attrKeys(e.rec, func(k string) {
		if t := ix.byAttr[k]; t != nil {
			t.Delete(it)
			if t.Len() == 0 {
				delete(ix.byAttr, k)
			}
		}
	})
	if e.rec.Latitude != nil && e.rec.Longitude != nil {
		ix.byCell.Delete(cellItem{c: cellOf(*e.rec.Latitude, *e.rec.Longitude), e: e})
	}
	i, last := e.slot, int32(len(ix.list)-1)
	ix.list[i] = ix.list[last]
	ix.list[i].slot = i
	ix.list[last] = nil
	ix.list = ix.list[:last]
}

// Pick chooses among the pool's available proxies by the selector. ok
// reports whether a candidate passes; after is the round-robin position;
// excluded proxies are passed over. It is called under the replica's read
// lock.
func (ix *poolIndex) pick(sel model.Selector, f *model.ProxyFilters, after uint64, exclude map[string]struct{}, ok func(*record.Proxy) bool) *record.Proxy {
	match := func(e *proxyEntry) bool {
		if _, out := exclude[e.rec.ID]; out {
			return false
		}
		return f.Matches(e.rec.Attrs()) && ok(e.rec)
	}
	switch sel {
	case model.SelectorLowestLatency:
		var found *record.Proxy
		ix.byLat.Ascend(func(it latItem) bool {
			if match(it.e) {
				found = it.e.rec
				return false
			}
			return true
		})
		if found != nil {
			return found
		}
		// No measured proxy passes: the never measured, in added order.
		ix.scan(f, 0, func(e *proxyEntry) bool {
			if _, measured := e.rec.Latency(); !measured && match(e) {
				found = e.rec
				return false
			}
			return true
		})
		return found
	case model.SelectorLeastUsed:
		var found *record.Proxy
		ix.byUse.Ascend(func(it useItem) bool {
			if match(it.e) {
				found = it.e.rec
				return false
			}
			return true
		})
		return found
	case model.SelectorRandom:
		// Rejection sampling is uniform among the candidates that pass;
		// when few pass, a full pass with reservoir sampling decides.
		for try := 0; try < 16 && len(ix.list) > 0; try++ {
			if e := ix.list[rand.IntN(len(ix.list))]; match(e) {
				return e.rec
			}
		}
		var found *record.Proxy
		n := 0
		ix.scan(f, 0, func(e *proxyEntry) bool {
			if match(e) {
				n++
				if rand.IntN(n) == 0 {
					found = e.rec
				}
			}
			return true
		})
		return found
	case model.SelectorRoundRobin:
		var found *record.Proxy
		ix.scan(f, after+1, func(e *proxyEntry) bool {
			if match(e) {
				found = e.rec
				return false
			}
			return true
		})
		if found == nil && after > 0 {
			ix.scan(f, 0, func(e *proxyEntry) bool {
				if e.rec.Seq > after {
					return false
				}
				if match(e) {
					found = e.rec
					return false
				}
				return true
			})
		}
		return found
	default:
		var found *record.Proxy
		ix.scan(f, 0, func(e *proxyEntry) bool {
			if match(e) {
				found = e.rec
				return false
			}
			return true
		})
		return found
	}
}

// scan visits, in added order from seq from, a superset of the available
// proxies that can match f: the narrowest index the filter's top level
// allows. A protocol list is the union of its protocols' lists, merged in
// added order as it goes.
func (ix *poolIndex) scan(f *model.ProxyFilters, from uint64, fn func(*proxyEntry) bool) {
	start := seqItem{seq: from}
	if f != nil {
		var best []*sortedList[seqItem]
		narrowest := ix.bySeq.Len() + 1
		for _, k := range filterKeys(f) {
			t := ix.byAttr[k]
			if t == nil {
				return // nothing available has that value
			}
			if t.Len() < narrowest {
				best, narrowest = []*sortedList[seqItem]{t}, t.Len()
			}
		}
		if f.Protocol != nil {
			var lists []*sortedList[seqItem]
			n := 0
			for _, p := range f.Protocol {
				if t := ix.byAttr[protocolKey(p)]; t != nil && !slices.Contains(lists, t) {
					lists, n = append(lists, t), n+t.Len()
				}
			}
			if len(lists) == 0 {
				return // nothing available speaks those protocols
			}
			if n < narrowest {
				best, narrowest = lists, n
			}
		}
		if cells, ok := filterCells(f); ok && len(cells) < narrowest {
			ix.scanCells(cells, from, fn)
			return
		}
		if best != nil {
			ascendUnion(best, start, fn)
			return
		}
	}
	ix.bySeq.AscendGreaterOrEqual(start, func(it seqItem) bool { return fn(it.e) })
}

// ascendUnion visits the items of several lists of disjoint proxies from
// start, in added order.
func ascendUnion(lists []*sortedList[seqItem], start seqItem, fn func(*proxyEntry) bool) {
	if len(lists) == 1 {
		lists[0].AscendGreaterOrEqual(start, func(it seqItem) bool { return fn(it.e) })
		return
	}
	curs := make([]cursor[seqItem], len(lists))
	for i, l := range lists {
		curs[i] = l.seek(start)
	}
	for {
		min := -1
		for i := range curs {
			if curs[i].valid() && (min < 0 || curs[i].item().seq < curs[min].item().seq) {
				min = i
			}
		}
		if min < 0 {
			return
		}
		it := curs[min].item()
		curs[min].next()
		if !fn(it.e) {
			return
		}
	}
}

// scanCells visits the proxies of the given cells in added order.
func (ix *poolIndex) scanCells(cells []cell, from uint64, fn func(*proxyEntry) bool) {
	var items []seqItem
	start := seqProbe(from) // sorts as added order from in every cell
	for _, c := range cells {
		ix.byCell.AscendGreaterOrEqual(cellItem{c: c, e: start}, func(it cellItem) bool {
			if it.c != c {
				return false
			}
			items = append(items, seqItem{it.e.rec.Seq, it.e})
			return true
		})
	}
	if len(items) > 1 {
		sortItems(items)
	}
	for _, it := range items {
		if !fn(it.e) {
			return
		}
	}
}

// filterKeys are the exact-match keys the top level of f requires.
func filterKeys(f *model.ProxyFilters) []string {
	var keys []string
	if f.Source != nil {
		keys = append(keys, "s\x00"+*f.Source)
	}
	if f.Country != nil {
		keys = append(keys, "c\x00"+*f.Country)
	}
	if f.City != nil {
		keys = append(keys, "t\x00"+*f.City)
	}
	if f.ISP != nil {
		keys = append(keys, "i\x00"+*f.ISP)
	}
	if f.ASN != nil {
		keys = append(keys, "a\x00"+strconv.FormatInt(*f.ASN, 10))
	}
	return keys
}

// maxCells bounds a coordinate filter's cell list; wider areas scan the
// available set instead.
const maxCells = 2048

// filterCells lists the 1° cells that can hold a proxy matching the top
// level coordinates of f.
func filterCells(f *model.ProxyFilters) ([]cell, bool) {
	if f.Latitude == nil || f.Longitude == nil {
		return nil, false
	}
	lat, lon := *f.Latitude, *f.Longitude
	dLat, dLon := 1e-6, 1e-6
	if f.RadiusKm != nil {
		dLat = *f.RadiusKm / 111.19 // km per degree of latitude on a 6371 km sphere
		minCos := math.Min(math.Cos((math.Min(90, math.Abs(lat)+dLat))*math.Pi/180), math.Cos(math.Abs(lat)*math.Pi/180))
		if minCos < 1e-3 || dLat >= 90 {
			return nil, false // reaches a pole: every longitude
		}
		dLon = dLat / minCos
		if dLon >= 180 {
			return nil, false
		}
	}
	lat0, lat1 := int(math.Floor(math.Max(-90, lat-dLat))), int(math.Floor(math.Min(89.999999, lat+dLat)))
	lon0, lon1 := int(math.Floor(lon-dLon)), int(math.Floor(lon+dLon))
	if (lat1-lat0+1)*(lon1-lon0+1) > maxCells {
		return nil, false
	}
	var cells []cell
	for a := lat0; a <= lat1; a++ {
		for o := lon0; o <= lon1; o++ {
			wrapped := ((o+180)%360+360)%360 - 180 // across the antimeridian
			cells = append(cells, cell{int16(a), int16(wrapped)})
		}
	}
	return cells, true
}

func sortItems(items []seqItem) {
	slices.SortFunc(items, func(a, b seqItem) int { return cmp.Compare(a.seq, b.seq) })
}
