package main

import (
	"os"
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
	m, err := readMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS {
		t.Errorf("own memory %+v", m)
	}
	if _, err := readCPU(os.Getpid()); err != nil {
		t.Error(err)
	}
}
