package procstat

import (
	"os"
	"runtime"
	"testing"
)

func TestParseStatus(t *testing.T) {
	m, err := parseStatus("Name:\tistiod\nVmPeak:\t 2000 kB\nVmHWM:\t  131072 kB\nVmRSS:\t   65536 kB\nThreads:\t9\n")
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 64<<20 || m.HWM != 128<<20 {
		t.Errorf("parsed %+v, want RSS 64 MiB and HWM 128 MiB", m)
	}
	if _, err := parseStatus("Name:\tx\nVmRSS:\t1 kB\n"); err == nil {
		t.Errorf("status without VmHWM parsed")
	}
}

func TestReadSelf(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc")
	}
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS {
		t.Errorf("own memory %+v", m)
	}
	if _, err := CPU(os.Getpid()); err != nil {
		t.Error(err)
	}
}
