package iptables

import (
	"strings"
	"testing"
)

// FuzzParsePorts checks that whatever ParsePorts accepts is a valid range
// list that renders back to the same ranges, since it ends up verbatim in
// iptables rules.
func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"", "80", "25,8000-8100", " 1 , 65535 ", "0", "5-4", "1-2-3", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ranges, err := ParsePorts(s)
		if err != nil {
			return
		}
		var parts []string
		for _, r := range ranges {
			if r.Lo == 0 || r.Hi < r.Lo {
				t.Fatalf("ParsePorts(%q) accepted invalid range %+v", s, r)
			}
			parts = append(parts, r.String())
		}
		again, err := ParsePorts(strings.Join(parts, ","))
		if err != nil || len(again) != len(ranges) {
			t.Fatalf("round trip of %q via %q: %v, %v", s, parts, again, err)
		}
		for i := range again {
			if again[i] != ranges[i] {
				t.Fatalf("round trip of %q changed %v to %v", s, ranges, again)
			}
		}
	})
}
