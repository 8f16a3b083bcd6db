// Command attackbench drives an SMTP server on loopback with bots and good
// senders at once and measures what the good senders get: delivered
// messages per second and their latency, and what the defence costs: CPU
// and memory of the defending processes (a private Postfix instance and,
// optionally, the mxguard guard in front of it) per delivered message.
//
// scripts/attack-bench starts the three set-ups (bare smtpd, postscreen,
// mxguard guard + smtpd) and runs this once against each.
//
// Bots (each from its own address in 127.1.0.0/16, so that per-client
// limits see many clients; loopback is allowlisted by the ban manager, so
// the defences measured are the per-connection and per-session ones):
//   - pregreet: talks before the banner, reconnects;
//   - slowloris: waits for the banner, then dribbles one byte per second;
//   - dictionary: EHLO, MAIL, then RCPT to unknown users until cut off;
//   - flood: connects, holds the connection silent for up to 2 s, closes.
//
// Good senders (addresses in 127.2.0.0/16) arrive at a fixed rate, each a
// whole session with one 1 KiB message, step by step as an MTA does.
// Everything is bounded: a run lasts -duration, every socket has a
// deadline at the end of the run (good sessions: -good-timeout).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	target      string
	label       string
	duration    time.Duration
	pregreet    int
	slowloris   int
	dictionary  int
	flood       int
	goodRate    float64
	goodAddrs   int
	goodMax     int
	goodTimeout time.Duration
	warmup      bool
	botNet      string
	goodNet     string
	good16      [2]byte // goodNet parsed
	postfixDir  string
	pids        string
	jsonOut     bool
}

func main() {
	var o options
	flag.StringVar(&o.target, "target", "127.0.0.1:25", "SMTP server under test")
	flag.StringVar(&o.label, "label", "", "name of the set-up in the report")
	flag.DurationVar(&o.duration, "duration", 40*time.Second, "measured run time")
	flag.IntVar(&o.pregreet, "pregreet", 500, "pregreeting bots")
	flag.IntVar(&o.slowloris, "slowloris", 500, "slowloris bots (one byte per second after the banner)")
	flag.IntVar(&o.dictionary, "dictionary", 500, "dictionary attackers (RCPT to unknown users)")
	flag.IntVar(&o.flood, "flood", 500, "connection flooders (connect, hold silent up to 2 s, close)")
	flag.Float64Var(&o.goodRate, "good-rate", 50, "good sessions started per second")
	flag.IntVar(&o.goodAddrs, "good-addrs", 256, "distinct good sender addresses (127.2.x.y)")
	flag.IntVar(&o.goodMax, "good-max", 1000, "good sessions in flight at most (more are counted as not started)")
	flag.DurationVar(&o.goodTimeout, "good-timeout", 60*time.Second, "bound of one good session")
	flag.BoolVar(&o.warmup, "warmup", true, "one session per good address before the attack (postscreen's pass cache)")
	flag.StringVar(&o.botNet, "bot-net", "127.1", "first two octets of the bots' addresses (a /16 that is local here)")
	flag.StringVar(&o.goodNet, "good-net", "127.2", "first two octets of the good senders' addresses")
	flag.StringVar(&o.postfixDir, "postfix-dir", "", "Postfix instance (postfix-up.sh DIR) whose processes are measured")
	flag.StringVar(&o.pids, "pids", "", "more defending process ids (comma-separated), e.g. the guard")
	flag.BoolVar(&o.jsonOut, "json", false, "print the result as one JSON line")
	flag.Parse()
	if err := o.check(); err != nil {
		fmt.Fprintln(os.Stderr, "attackbench:", err)
		os.Exit(2)
	}
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(os.Stderr, "attackbench:", err)
		os.Exit(1)
	}
	res, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attackbench:", err)
		os.Exit(1)
	}
	if o.jsonOut {
		json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	res.print(os.Stdout)
}

// maxBots bounds each kind of bot: the load stays a test's, never a
// weapon.
const maxBots = 10000

// check keeps the load on this machine: the target on loopback or in the
// test network the benchmark's own namespaces use (192.0.2.0/24), sources
// on loopback or in the benchmarking range 198.18.0.0/15.
func (o options) check() error {
	host, _, err := net.SplitHostPort(o.target)
	if err != nil {
		return fmt.Errorf("-target %q: %w", o.target, err)
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !(a.IsLoopback() || netip.MustParsePrefix("192.0.2.0/24").Contains(a)) {
		return fmt.Errorf("-target %q: want an address on loopback or in 192.0.2.0/24", o.target)
	}
	for _, n := range []struct{ flag, v string }{{"-bot-net", o.botNet}, {"-good-net", o.goodNet}} {
		if !strings.HasPrefix(n.v, "127.") && n.v != "198.18" && n.v != "198.19" {
			return fmt.Errorf("%s %q: want 127.x or 198.18/198.19 (the benchmarking range)", n.flag, n.v)
		}
	}
	for _, n := range []struct {
		flag string
		v    int
	}{{"-pregreet", o.pregreet}, {"-slowloris", o.slowloris}, {"-dictionary", o.dictionary}, {"-flood", o.flood}} {
		if n.v < 0 || n.v > maxBots {
			return fmt.Errorf("%s %d: want 0 to %d", n.flag, n.v, maxBots)
		}
	}
	return nil
}

// raiseFileLimit sets the soft RLIMIT_NOFILE to the hard one: every bot
// and good sender holds a socket.
func raiseFileLimit() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	l.Cur = l.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return fmt.Errorf("setrlimit: %w", err)
	}
	return nil
}

// result is one run's outcome.
type result struct {
	Label           string  `json:"label"`
	Seconds         float64 `json:"seconds"`
	Bots            int     `json:"bots"`
	GoodStarted     int64   `json:"good_started"`
	GoodDelivered   int64   `json:"good_delivered"`
	GoodDeferred    int64   `json:"good_deferred"` // 4xx anywhere
	GoodRefused     int64   `json:"good_refused"`  // 5xx anywhere
	GoodFailed      int64   `json:"good_failed"`   // I/O error or timeout
	GoodNotStarted  int64   `json:"good_not_started"`
	GoodUnfinished  int64   `json:"good_unfinished"`
	DeliveredPerSec float64 `json:"delivered_per_s"`
	P50ms           float64 `json:"p50_ms"`
	P99ms           float64 `json:"p99_ms"`
	BotConnects     int64   `json:"bot_connects"`
	BotRcpts        int64   `json:"bot_rcpts_accepted_replies"`
	DefenderCPUs    float64 `json:"defender_cpu_s"`
	ExtraCPUs       float64 `json:"extra_cpu_s"` // of DefenderCPUs: the -pids processes (the guard)
	CPUmsPerMsg     float64 `json:"cpu_ms_per_msg"`
	PeakPSSMB       float64 `json:"peak_pss_mb"`
	PeakProcs       int     `json:"peak_procs"`
	GeneratorCPUs   float64 `json:"generator_cpu_s"`
	Load1           string  `json:"load1"`
}

func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "%s: %.0fs, %d bots, good started %d: delivered %d (%.1f/s), deferred %d, refused %d, failed %d, not started %d, unfinished %d\n",
		r.Label, r.Seconds, r.Bots, r.GoodStarted, r.GoodDelivered, r.DeliveredPerSec, r.GoodDeferred, r.GoodRefused, r.GoodFailed, r.GoodNotStarted, r.GoodUnfinished)
	fmt.Fprintf(w, "  good latency p50 %.0f ms p99 %.0f ms; defenders CPU %.2f s (of it -pids %.2f s; %.2f ms/msg), peak PSS %.1f MB in %d processes; bot connects %d; generator CPU %.1f s; load %s\n",
		r.P50ms, r.P99ms, r.DefenderCPUs, r.ExtraCPUs, r.CPUmsPerMsg, r.PeakPSSMB, r.PeakProcs, r.BotConnects, r.GeneratorCPUs, r.Load1)
}

func run(o options) (*result, error) {
	bots := o.pregreet + o.slowloris + o.dictionary + o.flood
	if bots > 250*250 || o.goodAddrs > 250*250 || o.goodAddrs < 1 {
		return nil, fmt.Errorf("at most %d bots and good addresses, at least one good address", 250*250)
	}
	botNet, err := parseNet16(o.botNet)
	if err != nil {
		return nil, err
	}
	if o.good16, err = parseNet16(o.goodNet); err != nil {
		return nil, err
	}
	if o.warmup {
		warm(o)
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	end := time.Now().Add(o.duration)
	var a attackStats
	var wg sync.WaitGroup
	kinds := []struct {
		n   int
		bot func(context.Context, *net.Dialer, string, time.Time, *attackStats, int)
	}{{o.pregreet, pregreetBot}, {o.slowloris, slowlorisBot}, {o.dictionary, dictionaryBot}, {o.flood, floodBot}}
	i := 0
	// Bots start spread over the first two seconds, like a botnet that
	// is already there, not one burst of SYNs.
	spread := 2 * time.Second / time.Duration(max(bots, 1))
	for _, k := range kinds {
		for range k.n {
			d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(botNet[0], botNet[1], byte(i/250), byte(i%250+1))}, Timeout: 10 * time.Second}
			delay := time.Duration(i) * spread
			id := i
			wg.Go(func() {
				if !sleepCtx(ctx, delay) {
					return
				}
				k.bot(ctx, d, o.target, end, &a, id)
			})
			i++
		}
	}
	if !sleepCtx(ctx, 2*time.Second) { // the bots are in place
		return nil, fmt.Errorf("run shorter than the bots' start")
	}

	meter := newDefenderMeter(o.postfixDir, o.pids)
	cpu0, err := meter.cpu()
	if err != nil {
		return nil, err
	}
	extra0 := meter.extraCPU()
	var self0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
	load := loadavg()
	start := time.Now()
	var peakPSS float64
	var peakProcs int
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if pss, n := meter.pss(); pss > peakPSS {
				peakPSS, peakProcs = pss, n
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()

	g := goodSenders(ctx, o, end)
	<-ctx.Done()
	el := time.Since(start)
	cpu1, err := meter.cpu()
	if err != nil {
		return nil, err
	}
	extra1 := meter.extraCPU()
	var self1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self1)
	<-sampled
	wg.Wait()
	good := g.wait()

	r := &result{Label: o.label, Seconds: el.Seconds(), Bots: bots,
		GoodStarted: good.started, GoodDelivered: int64(len(good.latencies)), GoodDeferred: good.deferred,
		GoodRefused: good.refused, GoodFailed: good.failed, GoodNotStarted: good.notStarted, GoodUnfinished: good.unfinished,
		BotConnects: a.connects.Load(), BotRcpts: a.rcptOK.Load(),
		DefenderCPUs: cpu1 - cpu0, ExtraCPUs: extra1 - extra0, PeakPSSMB: peakPSS, PeakProcs: peakProcs,
		GeneratorCPUs: rusageSeconds(&self1) - rusageSeconds(&self0), Load1: load}
	r.DeliveredPerSec = float64(r.GoodDelivered) / el.Seconds()
	if r.GoodDelivered > 0 {
		r.CPUmsPerMsg = r.DefenderCPUs * 1e3 / float64(r.GoodDelivered)
	}
	r.P50ms, r.P99ms = percentile(good.latencies, 0.50), percentile(good.latencies, 0.99)
	return r, nil
}

// parseNet16 parses "A.B", the first two octets of a /16.
func parseNet16(s string) ([2]byte, error) {
	a, b, ok := strings.Cut(s, ".")
	x, err1 := strconv.ParseUint(a, 10, 8)
	y, err2 := strconv.ParseUint(b, 10, 8)
	if !ok || err1 != nil || err2 != nil {
		return [2]byte{}, fmt.Errorf("want the first two octets of a /16 (like 127.1), got %q", s)
	}
	return [2]byte{byte(x), byte(y)}, nil
}

func rusageSeconds(u *syscall.Rusage) float64 {
	return float64(u.Utime.Sec+u.Stime.Sec) + float64(u.Utime.Usec+u.Stime.Usec)/1e6
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// percentile of the latencies in ms (nearest rank); 0 when there are none.
func percentile(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i]) / float64(time.Millisecond)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// --- good senders ---

type goodStats struct {
	mu                                                         sync.Mutex
	latencies                                                  []time.Duration
	started, deferred, refused, failed, notStarted, unfinished int64
	wg                                                         sync.WaitGroup
}

func (g *goodStats) wait() *goodStats {
	g.wg.Wait()
	return g
}

// outcome of one good session
type outcome int

const (
	delivered outcome = iota
	deferred
	refused
	failed
)

// goodSenders starts good sessions at o.goodRate until ctx ends. Only
// deliveries completed before end count; sessions still running then are
// unfinished.
func goodSenders(ctx context.Context, o options, end time.Time) *goodStats {
	g := &goodStats{}
	var inFlight atomic.Int64
	g.wg.Go(func() {
		interval := time.Duration(float64(time.Second) / o.goodRate)
		next := time.Now()
		for n := 0; ; n++ {
			if !sleepCtx(ctx, time.Until(next)) {
				return
			}
			next = next.Add(interval)
			if inFlight.Load() >= int64(o.goodMax) {
				g.mu.Lock()
				g.notStarted++
				g.mu.Unlock()
				continue
			}
			inFlight.Add(1)
			g.mu.Lock()
			g.started++
			g.mu.Unlock()
			a := n % o.goodAddrs
			g.wg.Go(func() {
				defer inFlight.Add(-1)
				t0 := time.Now()
				out := goodSession(o.target, o.good16, a, t0.Add(o.goodTimeout))
				el := time.Since(t0)
				g.mu.Lock()
				defer g.mu.Unlock()
				switch {
				case time.Now().After(end) && out != refused && out != deferred:
					g.unfinished++
				case out == delivered:
					g.latencies = append(g.latencies, el)
				case out == deferred:
					g.deferred++
				case out == refused:
					g.refused++
				default:
					g.failed++
				}
			})
		}
	})
	return g
}

// warm delivers one message from every good address before the attack,
// a few at a time: postscreen's pass cache then knows them, as it would
// know the regular senders of a live server. Postscreen answers the
// first session of a new client 4xx after its deep tests, so each
// address tries up to three times. Outcomes are not counted.
func warm(o options) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // below postscreen's screening limit (default_process_limit)
	for a := range o.goodAddrs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for range 3 {
				if goodSession(o.target, o.good16, a, time.Now().Add(30*time.Second)) == delivered {
					return
				}
			}
		})
	}
	wg.Wait()
}

var goodMessage = func() string {
	var b strings.Builder
	b.WriteString("From: <sender@example.net>\r\nTo: <alice@example.com>\r\nSubject: attack bench\r\n\r\n")
	for b.Len() < 1024 {
		b.WriteString("The quick brown fox jumps over the lazy dog; a good message among bots.\r\n")
	}
	return b.String()
}()

// goodSession sends one message from good address number a in net16.
func goodSession(target string, net16 [2]byte, a int, deadline time.Time) outcome {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(net16[0], net16[1], byte(a/250), byte(a%250+1))}, Deadline: deadline}
	c, err := d.Dial("tcp", target)
	if err != nil {
		return failed
	}
	defer c.Close()
	c.SetDeadline(deadline)
	r := bufio.NewReader(c)
	steps := []struct {
		send string
		want byte // first digit of the expected reply
	}{
		{"", '2'},
		{"EHLO good" + strconv.Itoa(a) + ".example.net\r\n", '2'},
		{"MAIL FROM:<sender@example.net>\r\n", '2'},
		{"RCPT TO:<alice@example.com>\r\n", '2'},
		{"DATA\r\n", '3'},
		{goodMessage + ".\r\n", '2'},
	}
	for _, s := range steps {
		if s.send != "" {
			if _, err := io.WriteString(c, s.send); err != nil {
				return failed
			}
		}
		code, err := readReply(r)
		if err != nil {
			return failed
		}
		if code != s.want {
			if code == '4' {
				return deferred
			}
			if code == '5' {
				return refused
			}
			return failed
		}
	}
	io.WriteString(c, "QUIT\r\n")
	readReply(r)
	return delivered
}

// readReply reads one whole (possibly multi-line) reply and returns the
// first digit of its code.
func readReply(r *bufio.Reader) (byte, error) {
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		if len(l) < 4 {
			return 0, fmt.Errorf("short reply %q", l)
		}
		if l[3] != '-' {
			return l[0], nil
		}
	}
}

// --- bots ---

type attackStats struct {
	connects atomic.Int64
	rcptOK   atomic.Int64 // RCPT replies that were not errors (should stay 0)
}

// botConn dials with a deadline at the end of the run.
func botConn(d *net.Dialer, target string, end time.Time, a *attackStats) (net.Conn, error) {
	c, err := d.Dial("tcp", target)
	if err != nil {
		return nil, err
	}
	a.connects.Add(1)
	c.SetDeadline(end)
	return c, nil
}

// retry pauses after a connection ends (or fails), as bots do.
func retry(ctx context.Context, d time.Duration) bool { return sleepCtx(ctx, d) }

func pregreetBot(ctx context.Context, d *net.Dialer, target string, end time.Time, a *attackStats, _ int) {
	for ctx.Err() == nil {
		c, err := botConn(d, target, end, a)
		if err == nil {
			io.WriteString(c, "EHLO bot.example\r\n")
			c.SetReadDeadline(earlier(end, time.Now().Add(20*time.Second)))
			io.Copy(io.Discard, c)
			c.Close()
		}
		if !retry(ctx, 500*time.Millisecond) {
			return
		}
	}
}

func slowlorisBot(ctx context.Context, d *net.Dialer, target string, end time.Time, a *attackStats, id int) {
	const dribble = "EHLO slow.example\r\nMAIL FROM:<slow@example.org>\r\nRCPT TO:<alice@example.com>\r\n"
	for ctx.Err() == nil {
		c, err := botConn(d, target, end, a)
		if err == nil {
			r := bufio.NewReader(c)
			if _, err := readReply(r); err == nil {
				go io.Copy(io.Discard, r) // keep the receive window open; ends with c
				for i := 0; ctx.Err() == nil; i++ {
					if _, err := c.Write([]byte{dribble[i%len(dribble)]}); err != nil {
						break
					}
					if !sleepCtx(ctx, time.Second) {
						break
					}
				}
			}
			c.Close()
		}
		if !retry(ctx, time.Second) {
			return
		}
	}
}

func dictionaryBot(ctx context.Context, d *net.Dialer, target string, end time.Time, a *attackStats, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	for ctx.Err() == nil {
		c, err := botConn(d, target, end, a)
		if err == nil {
			dictionarySession(ctx, c, rng, a)
			c.Close()
		}
		if !retry(ctx, 500*time.Millisecond) {
			return
		}
	}
}

func dictionarySession(ctx context.Context, c net.Conn, rng *rand.Rand, a *attackStats) {
	r := bufio.NewReader(c)
	say := func(s string) (byte, error) {
		if s != "" {
			if _, err := io.WriteString(c, s); err != nil {
				return 0, err
			}
		}
		return readReply(r)
	}
	for _, s := range []string{"", "EHLO mail.bot.example\r\n", "MAIL FROM:<info@bot.example>\r\n"} {
		if code, err := say(s); err != nil || code != '2' {
			return
		}
	}
	for ctx.Err() == nil {
		code, err := say("RCPT TO:<" + strconv.Itoa(rng.IntN(1e6)) + "user@example.com>\r\n")
		if err != nil {
			return // cut off (421, close or the run's deadline)
		}
		if code == '2' {
			a.rcptOK.Add(1)
		}
	}
}

func floodBot(ctx context.Context, d *net.Dialer, target string, end time.Time, a *attackStats, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), 11))
	for ctx.Err() == nil {
		c, err := botConn(d, target, end, a)
		if err == nil {
			sleepCtx(ctx, time.Duration(rng.Int64N(int64(2*time.Second))))
			c.Close()
		}
		if !retry(ctx, 200*time.Millisecond) {
			return
		}
	}
}

// --- defending processes ---

// defenderMeter finds the defending processes: every process of the
// Postfix instance (its master and the master's children) and the extra
// pids.
type defenderMeter struct {
	postfixDir string
	pids       []int
}

func newDefenderMeter(dir, pids string) *defenderMeter {
	m := &defenderMeter{postfixDir: dir}
	for _, f := range strings.Split(pids, ",") {
		if p, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
			m.pids = append(m.pids, p)
		}
	}
	return m
}

const clockTicks = 100 // USER_HZ on Linux

// procStat returns utime+stime and cutime+cstime in ticks and the ppid.
func procStat(pid int) (own, children int64, ppid int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	return n(14) + n(15), n(16) + n(17), int(n(4)), nil
}

// processes returns the pids to measure and the Postfix master's pid (0
// without Postfix).
func (m *defenderMeter) processes() (pids []int, master int) {
	pids = slices.Clone(m.pids)
	if m.postfixDir == "" {
		return pids, 0
	}
	b, err := os.ReadFile(m.postfixDir + "/spool/pid/master.pid")
	if err != nil {
		return pids, 0
	}
	master, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	pids = append(pids, master)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == master {
			continue
		}
		if _, _, pp, err := procStat(p); err == nil && pp == master {
			pids = append(pids, p)
		}
	}
	return pids, master
}

// cpu is the CPU seconds used so far by the defending processes. The
// master's children that exited were reaped by it, so their time is in
// its cutime/cstime.
func (m *defenderMeter) cpu() (float64, error) {
	pids, master := m.processes()
	if m.postfixDir != "" && master == 0 {
		return 0, fmt.Errorf("no Postfix master in %s", m.postfixDir)
	}
	var ticks int64
	for _, p := range pids {
		own, ch, _, err := procStat(p)
		if err != nil {
			continue // exited meanwhile: counted in its parent's cutime if reaped
		}
		ticks += own
		if p == master || slices.Contains(m.pids, p) {
			ticks += ch
		}
	}
	return float64(ticks) / clockTicks, nil
}

// extraCPU is the CPU seconds of the -pids processes alone.
func (m *defenderMeter) extraCPU() float64 {
	var ticks int64
	for _, p := range m.pids {
		if own, ch, _, err := procStat(p); err == nil {
			ticks += own + ch
		}
	}
	return float64(ticks) / clockTicks
}

// pss is the proportional set size of the defending processes in MB and
// their number.
func (m *defenderMeter) pss() (float64, int) {
	pids, _ := m.processes()
	var kb int64
	for _, p := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/smaps_rollup")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				kb += v
			}
		}
	}
	return float64(kb) / 1024, len(pids)
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
