package logparse

import (
	"bufio"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/event"
)

// Lines about the mail system, not a client: recognised (ErrContext),
// never counted as unrecognised, never an event.
func TestParseContext(t *testing.T) {
	const d = "Dec 01 17:11:47 mx "
	context := []string{
		d + "postfix/smtpd[5136]: Anonymous TLS connection established from unknown[203.0.113.66]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
		d + "postfix/smtpd[5136]: Trusted TLS connection established from mail.example.net[198.51.100.7]: TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
		d + "postfix/smtpd[5136]: Verified TLS connection established from mail.example.net[198.51.100.7]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
		d + "postfix/smtpd[5136]: Untrusted TLS connection reused from mail.example.net[198.51.100.7]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
		d + "postfix/tlsproxy[5139]: CONNECT from [203.0.113.71]:58747",
		d + "postfix/tlsproxy[5139]: Anonymous TLS connection established from [203.0.113.71]:58747: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256",
		d + "postfix/tlsproxy[5139]: DISCONNECT [203.0.113.71]:58747",
		d + "postfix/postscreen[5138]: cache btree:/var/lib/postfix/postscreen_cache full cleanup: retained=1 dropped=0 entries",
		d + "postfix/verify[5140]: cache btree:/var/lib/postfix/verify_cache full cleanup: retained=12 dropped=3 entries",
		d + "postfix/scache[5141]: statistics: start interval Dec  1 17:11:47",
		d + "postfix/smtpd[5122]: table hash:/etc/postfix/canonical(0,lock|fold_fix|utf8_request) has changed -- restarting",
		d + "postfix/cleanup[5134]: table hash:/etc/postfix/canonical(0,lock|fold_fix|utf8_request) has changed -- restarting",
		d + "postfix/qmgr[5134]: table hash:/etc/postfix/transport(0,lock|fold_fix) has changed -- restarting",
		d + "postfix/postfix-script[5065]: starting the Postfix mail system",
		d + "postfix/postfix-script[5584]: stopping the Postfix mail system",
		d + "postfix/postfix-script[4964]: warning: /var/spool/postfix/etc/hosts and /etc/hosts differ",
		d + "postfix/master[5067]: daemon started -- version 3.7.11, configuration /etc/postfix",
		d + "postfix/master[5067]: reload -- version 3.7.11, configuration /etc/postfix",
		d + "postfix/master[5067]: terminating on signal 15",
		d + "postfix/anvil[5132]: statistics: max connection rate 5/60s for (smtp:203.0.113.62) at Dec  1 17:11:47",
	}
	for _, l := range context {
		p := NewParser(time.UTC, refTime)
		if _, err := p.Parse(l); err != ErrContext {
			t.Errorf("%q: err = %v, want ErrContext", l, err)
		}
	}
	unrecognised := []string{
		d + "postfix/cleanup[3]: 4F2A31C0B2: message-id=<x@y>",
		d + "postfix/smtpd[5136]: Bogus TLS connection established from unknown[203.0.113.66]: TLSv1.3",
		d + "postfix/postscreen[5138]: cache btree:/x scanned",
		d + "postfix/tlsproxy[5139]: warning: deadlock on plaintext stream for [203.0.113.71]:58747",
		d + "postfix/smtpd[5122]: table hash:/etc/postfix/x has changed",
	}
	for _, l := range unrecognised {
		p := NewParser(time.UTC, refTime)
		if _, err := p.Parse(l); err != ErrUnrecognized {
			t.Errorf("%q: err = %v, want ErrUnrecognized", l, err)
		}
	}
}

// "TLS library problem" names no client: it gets the client of its smtpd
// process, and none when the process's session is unknown or over, or the
// line comes from another host or instance with the same pid.
func TestTLSProblemAttribution(t *testing.T) {
	const d = "Dec 01 17:11:47 mx "
	const problem = "warning: TLS library problem: error:0A00009C:SSL routines::http request:../ssl/record/ssl3_record.c:341:"
	type step struct {
		line   string
		client string // of the TLS problem; "" none
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"current client", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix/smtpd[5136]: " + problem, "203.0.113.67"},
		}},
		{"the process's latest client", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.1]", ""},
			{d + "postfix/smtpd[5136]: disconnect from unknown[203.0.113.1] ehlo=1 quit=1 commands=2", ""},
			{d + "postfix/smtpd[5136]: connect from unknown[2001:db8::2]", ""},
			{d + "postfix/smtpd[5137]: connect from unknown[203.0.113.3]", ""},
			{d + "postfix/smtpd[5136]: " + problem, "2001:db8::2"},
		}},
		{"after disconnect", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix/smtpd[5136]: disconnect from unknown[203.0.113.67] ehlo=1 quit=1 commands=2", ""},
			{d + "postfix/smtpd[5136]: " + problem, ""},
		}},
		{"other host, same pid", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{"Dec 01 17:11:47 mx2 postfix/smtpd[5136]: " + problem, ""},
		}},
		{"other instance, same pid", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix-out/smtpd[5136]: " + problem, ""},
		}},
		{"pid sharing the slot", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix/smtpd[6160]: connect from unknown[203.0.113.68]", ""}, // 6160 = 5136 + 1024
			{d + "postfix/smtpd[5136]: " + problem, ""},
			{d + "postfix/smtpd[6160]: " + problem, "203.0.113.68"},
		}},
		{"smtpd killed, no disconnect logged", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix/master[812]: warning: process /usr/lib/postfix/sbin/smtpd pid 5136 killed by signal 9", ""},
			{d + "postfix/smtpd[5136]: " + problem, ""},
		}},
		{"smtpd exited with an error", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix/smtpd[5137]: connect from unknown[203.0.113.68]", ""},
			{d + "postfix/master[812]: warning: process /usr/lib/postfix/sbin/smtpd pid 5136 exit status 1", ""},
			{d + "postfix/smtpd[5136]: " + problem, ""},
			{d + "postfix/smtpd[5137]: " + problem, "203.0.113.68"},
		}},
		{"master restarted", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix/master[9001]: daemon started -- version 3.8.6, configuration /etc/postfix", ""},
			{d + "postfix/smtpd[5136]: " + problem, ""},
		}},
		{"another host's smtpd with the same pid exited", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{"Dec 01 17:11:47 mx2 postfix/master[812]: warning: process /usr/lib/postfix/sbin/smtpd pid 5136 exit status 1", ""},
			{d + "postfix/smtpd[5136]: " + problem, "203.0.113.67"},
		}},
		{"another instance's smtpd with the same pid exited", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix-out/master[812]: warning: process /usr/lib/postfix/sbin/smtpd pid 5136 exit status 1", ""},
			{d + "postfix/smtpd[5136]: " + problem, "203.0.113.67"},
		}},
		{"submission smtpd (syslog_name postfix/submission) killed", []step{
			{d + "postfix/submission/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix/master[812]: warning: process /usr/lib/postfix/sbin/smtpd pid 5136 killed by signal 9", ""},
			{d + "postfix/submission/smtpd[5136]: " + problem, ""},
		}},
		{"another host's master restarted", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix/smtpd[5137]: connect from unknown[203.0.113.68]", ""},
			{"Dec 01 17:11:47 mx2 postfix/master[9001]: daemon started -- version 3.8.6, configuration /etc/postfix", ""},
			{d + "postfix-out/master[9002]: daemon started -- version 3.8.6, configuration /etc/postfix-out", ""},
			{d + "postfix/smtpd[5136]: " + problem, "203.0.113.67"},
			{d + "postfix/smtpd[5137]: " + problem, "203.0.113.68"},
		}},
		{"another process's exit", []step{
			{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
			{d + "postfix/master[812]: warning: process /usr/lib/postfix/sbin/smtpd pid 5137 exit status 1", ""},
			{d + "postfix/smtpd[5136]: " + problem, "203.0.113.67"},
		}},
		{"tlsproxy serves many clients", []step{
			{d + "postfix/tlsproxy[5139]: CONNECT from [203.0.113.71]:58747", ""},
			{d + "postfix/tlsproxy[5139]: " + problem, ""},
		}},
	}
	tests = append(tests, struct {
		name  string
		steps []step
	}{"forgotten", []step{
		{d + "postfix/smtpd[5136]: connect from unknown[203.0.113.67]", ""},
		{"forget", ""},
		{d + "postfix/smtpd[5136]: " + problem, ""},
	}})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewParser(time.UTC, refTime)
			for _, s := range tc.steps {
				if s.line == "forget" {
					p.ForgetSessions()
					continue
				}
				ev, err := p.Parse(s.line)
				if err != nil && err != ErrContext {
					t.Fatalf("%q: %v", s.line, err)
				}
				if ev.Kind != event.KindTLSError {
					continue
				}
				var want netip.Addr
				if s.client != "" {
					want = netip.MustParseAddr(s.client)
				}
				if ev.Client != want || ev.Abuse || ev.Stage != "STARTTLS" {
					t.Errorf("%q: client %v abuse %v stage %q, want %v, false, STARTTLS", s.line, ev.Client, ev.Abuse, ev.Stage, want)
				}
			}
		})
	}
}

// Every line of the capture from a real Postfix (testdata/limits-lab) is
// read: as the event its scenario caused, as context, or as a line
// mxguard does not need (cleanup's message-id, qmgr's removed).
func TestLimitsLab(t *testing.T) {
	f, err := os.Open("testdata/limits-lab/limits.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := NewParser(time.UTC, time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
	kinds := map[string]int{}
	limits := map[string]string{} // client -> limit
	var unrecognised []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ev, err := p.Parse(sc.Text())
		switch err {
		case nil:
			kinds[ev.Kind.String()]++
			if ev.Kind == event.KindRateLimit {
				limits[ev.Client.String()] = ev.Detail
			}
			if ev.Kind == event.KindRejectWarning && ev.Abuse {
				t.Errorf("reject_warning is abuse: %s", sc.Text())
			}
			if (ev.Kind == event.KindTLSError || ev.Kind == event.KindRateLimit) && !ev.Client.IsValid() {
				t.Errorf("no client: %s", sc.Text())
			}
		case ErrContext:
			kinds["context"]++
		default:
			unrecognised = append(unrecognised, sc.Text())
		}
	}
	want := map[string]int{"rate_limit": 5, "tls_error": 3, "reject_warning": 5, "reject": 3, "lost_connection": 3, "context": 30}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%s: %d lines, want %d", k, kinds[k], n)
		}
	}
	wantLimits := map[string]string{
		"203.0.113.62": event.LimitConnectionRate, "203.0.113.63": event.LimitConnectionCount,
		"203.0.113.64": event.LimitMessageRate, "203.0.113.65": event.LimitRecipientRate, "203.0.113.66": event.LimitNewTLSRate,
	}
	for c, l := range wantLimits {
		if limits[c] != l {
			t.Errorf("client %s: limit %q, want %q", c, limits[c], l)
		}
	}
	// what remains are cleanup's message-id and qmgr's removed lines
	if len(unrecognised) != 4 {
		t.Errorf("%d unrecognised lines, want 4:\n%q", len(unrecognised), unrecognised)
	}
}
