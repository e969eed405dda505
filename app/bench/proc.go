package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; it is
// 100 on every Linux the service targets.
const clockTicks = 100

// ProcSample is a reading of one process.
type ProcSample struct {
	At       time.Time
	CPUTicks int64 // utime + stime
	RSS      int64 // bytes
}

// ReadProc reads /proc/<pid>/stat and /proc/<pid>/status.
func ReadProc(pid int) (ProcSample, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcSample{}, err
	}
	ticks, err := parseStatTicks(string(stat))
	if err != nil {
		return ProcSample{}, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcSample{}, err
	}
	return ProcSample{At: time.Now(), CPUTicks: ticks, RSS: parseRSS(string(status))}, nil
}

// parseStatTicks returns utime+stime from a /proc/<pid>/stat line. The
// command name (field 2) may contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatTicks(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command field")
	}
	f := strings.Fields(stat[i+1:])
	// After the command: state is field 3, utime 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q", f[11], f[12])
	}
	return u + s, nil
}

func parseRSS(status string) int64 {
	for _, line := range strings.Split(status, "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// Usage is a process's resource use over an interval.
type Usage struct {
	CPUCores float64 `json:"cpu_cores"` // CPU seconds per wall second
	// CPUSeconds is the CPU time used over the interval.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	RSSMiB     float64 `json:"rss_mib"` // at the end
	PeakMiB    float64 `json:"peak_rss_mib"`
}

// Between computes the usage from a to b; peak is the largest RSS seen.
func Between(a, b ProcSample, peak int64) Usage {
	wall := b.At.Sub(a.At).Seconds()
	u := Usage{RSSMiB: mib(b.RSS), PeakMiB: mib(max(peak, b.RSS))}
	if wall > 0 {
		u.CPUSeconds = float64(b.CPUTicks-a.CPUTicks) / clockTicks
		u.CPUCores = round3(u.CPUSeconds / wall)
	}
	return u
}

func mib(b int64) float64 { return round3(float64(b) / (1 << 20)) }

func round3(f float64) float64 {
	return float64(int64(f*1000+0.5)) / 1000
}

// FindProc returns the id of a process whose command name (comm) is name,
// or 0.
func FindProc(name string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.TrimSpace(string(b)) == name {
			return pid
		}
	}
	return 0
}

// ReadMachine returns the busy CPU ticks of the whole machine (all CPUs,
// from /proc/stat: everything but idle and iowait) as a ProcSample, so the
// CPU used by other processes during a run can be shown next to the
// service's.
func ReadMachine() (ProcSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return ProcSample{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	ticks, err := parseCPULine(line)
	if err != nil {
		return ProcSample{}, err
	}
	return ProcSample{At: time.Now(), CPUTicks: ticks}, nil
}

// parseCPULine returns the busy ticks of the aggregate "cpu" line of
// /proc/stat: user nice system idle iowait irq softirq steal ...
func parseCPULine(line string) (int64, error) {
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %q", line)
		}
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, nil
}
