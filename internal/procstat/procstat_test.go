package procstat

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	// Burn CPU until the counter (in 10 ms ticks) shows some, within a
	// generous bound.
	deadline := time.Now().Add(10 * time.Second)
	for x := 0; CPUSeconds(pid) == 0 && time.Now().Before(deadline); {
		for i := range 1_000_000 {
			x += i
		}
	}
	if CPUSeconds(pid) <= 0 {
		t.Errorf("CPUSeconds(self) = %v", CPUSeconds(pid))
	}
	if StatusKiB(pid, "VmRSS") <= 0 || StatusKiB(pid, "VmHWM") < StatusKiB(pid, "VmRSS")/2 {
		t.Errorf("VmRSS %d VmHWM %d", StatusKiB(pid, "VmRSS"), StatusKiB(pid, "VmHWM"))
	}
	if StatusKiB(pid, "NoSuchField") != 0 || CPUSeconds(-1) != 0 || StatusKiB(-1, "VmRSS") != 0 {
		t.Error("missing values are not 0")
	}
	if f := strings.Fields(LoadAverage()); len(f) != 3 {
		t.Errorf("LoadAverage() = %q", LoadAverage())
	}
	if CPUModel() == "" {
		t.Error("CPUModel() is empty")
	}
}

func TestStatusField(t *testing.T) {
	s := "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 512 kB\nBroken:\n"
	for field, want := range map[string]int64{"VmRSS": 1024, "VmHWM": 2048, "RssAnon": 512, "Broken": 0, "Vm": 0} {
		if got := statusField(s, field); got != want {
			t.Errorf("%s = %d, want %d", field, got, want)
		}
	}
}
