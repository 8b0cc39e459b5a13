package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ambient-mesh/mesh/tests/procstat"
)

// loadSample is the machine's busy CPU time and this process tree's share
// of it at one moment. Two samples tell how much CPU other work took while
// the benchmark ran: on a shared machine that skews every figure, so the
// report says how much there was.
type loadSample struct {
	at   time.Time
	busy time.Duration // all CPUs: user, nice, system, steal
	own  time.Duration // this process and its reaped children
}

func sampleLoad() (loadSample, error) {
	s := loadSample{at: time.Now()}
	f, err := os.Open("/proc/stat")
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return s, fmt.Errorf("/proc/stat: empty")
	}
	// cpu user nice system idle iowait irq softirq steal ...; guest time is
	// already in user. Interrupt time is left out: the packets of our own
	// veth traffic are processed there and no task is charged for them.
	// Steal counts as busy: the hypervisor gave that time to someone else.
	fields := strings.Fields(sc.Text())
	if len(fields) < 9 || fields[0] != "cpu" {
		return s, fmt.Errorf("/proc/stat: unexpected first line %q", sc.Text())
	}
	var ticks int64
	for _, v := range []string{fields[1], fields[2], fields[3], fields[8]} {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += n
	}
	s.busy = time.Duration(ticks) * time.Second / procstat.UserHZ

	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if err := unix.Getrusage(who, &ru); err != nil {
			return s, fmt.Errorf("getrusage: %w", err)
		}
		s.own += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return s, nil
}

// otherCPUs returns how many CPUs, on average between a and b, were busy
// with work that was not this process tree.
func otherCPUs(a, b loadSample) float64 {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return 0
	}
	return max(0, ((b.busy-a.busy)-(b.own-a.own)).Seconds()/wall)
}
