package detectors_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/mxguard/mxguard/detectors"
	"github.com/mxguard/mxguard/internal/event"
)

// A client probes five mailboxes that do not exist within ten minutes.
func Example() {
	e, err := detectors.New(detectors.DefaultConfig(), nil)
	if err != nil {
		panic(err)
	}
	start := time.Date(2025, 11, 25, 10, 49, 0, 0, time.UTC)
	client := netip.MustParseAddr("203.0.113.7")
	for i, user := range []string{"admin", "info", "sales", "test", "webmaster"} {
		ev := event.Event{
			Time:   start.Add(time.Duration(i) * 30 * time.Second),
			Kind:   event.KindReject,
			Stage:  "RCPT",
			Client: client,
			To:     user + "@example.org",
			Code:   550,
			Reason: event.ReasonUnknownRecipient,
			Abuse:  true,
			Raw: "Nov 25 10:49:00 mx postfix/smtpd[4711]: NOQUEUE: reject: RCPT from unknown[203.0.113.7]: 550 5.1.1 <" +
				user + "@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
		}
		for _, d := range e.Observe(ev) {
			fmt.Printf("%s %s %q evidence=%d lines=%d at %s warn=%v\n",
				d.Detector, d.Prefix, d.Reason, d.Evidence, len(d.Lines), d.Time.Format(time.TimeOnly), d.Warn)
		}
	}
	fmt.Println("dictionary decisions:", e.Stats().Decisions["dictionary"])
	// Output:
	// dictionary 203.0.113.7/32 "5 unknown recipients within 10m" evidence=5 lines=5 at 10:51:00 warn=false
	// dictionary decisions: 1
}
