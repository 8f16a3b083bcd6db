package main

import "testing"

func TestOptionsKeepTheLoadLocal(t *testing.T) {
	ok := options{target: "127.0.0.1:2525", botNet: "127.1", goodNet: "127.2", pregreet: 500, slowloris: 500, dictionary: 500, flood: 500}
	if err := ok.check(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*options)
	}{
		{"remote target", func(o *options) { o.target = "198.51.100.1:25" }},
		{"target by name", func(o *options) { o.target = "mx.example.com:25" }},
		{"bots from a public range", func(o *options) { o.botNet = "203.0" }},
		{"good senders from a public range", func(o *options) { o.goodNet = "8.8" }},
		{"too many bots", func(o *options) { o.flood = maxBots + 1 }},
	} {
		o := ok
		tc.edit(&o)
		if err := o.check(); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	ns := ok
	ns.target, ns.botNet, ns.goodNet = "192.0.2.1:2525", "198.18", "198.19"
	if err := ns.check(); err != nil {
		t.Errorf("the namespace set-up: %v", err)
	}
}
