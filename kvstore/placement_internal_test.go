package kvstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPlanMoves(t *testing.T) {
	all := []string{"n1", "n2", "n3"}
	for _, tc := range []struct {
		name    string
		streams []streamPeers
		want    map[int]string
	}{
		{"spread already", []streamPeers{{"n1", all}, {"n2", all}, {"n3", all}}, map[int]string{}},
		{"two on one", []streamPeers{{"n1", all}, {"n1", all}, {"n3", all}}, map[int]string{0: "n2"}},
		{"all on one", []streamPeers{{"n2", all}, {"n2", all}, {"n2", all}}, map[int]string{0: "n1", 1: "n3"}},
		// Four streams on three nodes: 2-1-1 is as spread as it gets.
		{"four streams", []streamPeers{{"n1", all}, {"n1", all}, {"n2", all}, {"n3", all}}, map[int]string{}},
		{"five on one", []streamPeers{{"n1", all}, {"n1", all}, {"n1", all}, {"n1", all}, {"n1", all}},
			map[int]string{0: "n2", 1: "n3", 2: "n2"}}, // 2-2-1
		// n3 is offline (not a peer): two on n1 move one to n2 only.
		{"a node down", []streamPeers{{"n1", []string{"n1", "n2"}}, {"n1", []string{"n1", "n2"}}, {"n2", []string{"n2", "n1"}}}, map[int]string{}},
		{"leaderless stream left alone", []streamPeers{{"", nil}, {"n1", all}, {"n1", all}}, map[int]string{1: "n2"}},
		// R1 streams have no one to hand over to.
		{"not replicated", []streamPeers{{"n1", []string{"n1"}}, {"n1", []string{"n1"}}}, map[int]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, planMoves(tc.streams)) })
	}
}
