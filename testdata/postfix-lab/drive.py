#!/usr/bin/env python3
"""Drive real SMTP traffic at the lab Postfix started by setup.sh.

Every client binds its own source address 127.0.0.x, so the log tells them
apart. Good clients use smtplib or swaks; bad clients speak raw SMTP over a
socket so that they can misbehave exactly (pipelining, pregreeting, junk).
Stdlib only (plus the swaks command).

usage: drive.py [--smtpd H:P] [--postscreen H:P] [--submission H:P]
                [--only IP,IP] [--clients-out FILE] [--transcript FILE]
                [--scenarios default|classes] [--limited H:P] [--policy H:P]

--clients-out writes the client table (lab address, documentation address,
role, what it did, which mxguard detectors must fire) as JSON; clients of the
"classes" set whose sessions belong elsewhere in log time also carry
session_offsets (see SESSION_BASE), which rewrite.py --sessions applies.
"""
import argparse
import concurrent.futures
import json
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time

DOMAIN = "example.com"
GOOD_USERS = ["alice", "bob", "carol"]
MSG = ("From: {frm}\r\nTo: {to}\r\nSubject: lab message {n}\r\n"
       "Message-ID: <lab-{n}@{host}>\r\n\r\nHello from the mxguard lab.\r\n")

_lock = threading.Lock()
_log = []  # transcript lines


def note(ip, text):
    with _lock:
        _log.append("%s %s %s" % (time.strftime("%H:%M:%S"), ip, text))


class Raw:
    """A hand-driven SMTP session from a fixed source address."""

    def __init__(self, ip, addr, timeout=30):
        self.ip = ip
        self.sock = socket.create_connection(addr, timeout, source_address=(ip, 0))
        self.rf = self.sock.makefile("rb")
        self.pending = None

    def reply(self):
        """Read one reply. A change of code also ends it: postscreen's
        "220-" greeting may be followed straight by the EHLO reply of a
        client that talked first."""
        lines = []
        while True:
            line, self.pending = self.pending or self.rf.readline(), None
            if not line:
                break
            if lines and line[:3] != lines[0][:3].encode():
                self.pending = line
                break
            lines.append(line.decode("latin-1").rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                break
        code = int(lines[-1][:3]) if lines and lines[-1][:3].isdigit() else None
        note(self.ip, "<- %s" % (" | ".join(lines) if lines else "(eof)"))
        return code

    def send(self, data):
        note(self.ip, "-> %r" % data)
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def cmd(self, line):
        try:
            self.send(line + "\r\n")
            return self.reply()
        except OSError as e:
            note(self.ip, "!! %s" % e)
            return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def quit(self):
        self.cmd("QUIT")
        self.close()


def smtplib_session(ip, addr, helo, frm, rcpts, n, esmtp=True):
    """A well-behaved client: smtplib waits for every reply (and pipelines
    nothing); returns the refused recipients."""
    s = smtplib.SMTP(addr[0], addr[1], local_hostname=helo, source_address=(ip, 0), timeout=30)
    try:
        if esmtp:
            s.ehlo()
        else:
            s.helo()
        msg = MSG.format(frm=frm, to=", ".join(rcpts), n=n, host=helo)
        try:
            refused = s.sendmail(frm, rcpts, msg)
        except smtplib.SMTPRecipientsRefused as e:
            refused = e.recipients
        note(ip, "smtplib %s -> %s refused=%s" % (frm, rcpts, refused))
        return refused
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            s.close()


def swaks(ip, addr, *args):
    cmd = ["swaks", "--server", addr[0], "--port", str(addr[1]), "--local-interface", ip,
           "--timeout", "30", "--hide-all"] + list(args)
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    note(ip, "swaks %s -> exit %d" % (" ".join(args), r.returncode))
    return r.returncode


class RemoteMX(threading.Thread):
    """The "remote" server for corp.example (see setup.sh transport map):
    a minimal SMTP server that refuses every recipient with 550 5.1.1, so the
    lab's smtp client bounces a message. It is a peer of Postfix, not a client."""

    def __init__(self, addr):
        super().__init__(daemon=True)
        self.srv = socket.create_server(addr, reuse_port=False)
        self.srv.settimeout(0.5)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self.session, args=(c,), daemon=True).start()
        self.srv.close()

    @staticmethod
    def session(c):
        c.settimeout(30)
        f = c.makefile("rb")
        try:
            c.sendall(b"220 mx.corp.example ESMTP\r\n")
            for line in f:
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    c.sendall(b"250 mx.corp.example\r\n")
                elif verb == b"RCPT":
                    rcpt = line[8:].strip().decode("latin-1")
                    c.sendall(("550 5.1.1 %s: Recipient address rejected: User unknown\r\n" % rcpt).encode())
                elif verb == b"QUIT":
                    c.sendall(b"221 2.0.0 Bye\r\n")
                    break
                elif verb == b"DATA":
                    c.sendall(b"554 5.5.1 Error: no valid recipients\r\n")
                else:
                    c.sendall(b"250 2.0.0 Ok\r\n")
        except OSError:
            pass
        finally:
            c.close()


# --- good clients ---------------------------------------------------------

def good_swaks_pipelining(ip, a):
    swaks(ip, a.smtpd, "--ehlo", "mail.partner.example", "--from", "bob@partner.example",
          "--to", "alice@example.com", "--pipeline", "--header", "Subject: weekly report")
    swaks(ip, a.smtpd, "--ehlo", "mail.partner.example", "--from", "jane@partner.example",
          "--to", "alice@example.com,bob@example.com", "--pipeline")


def good_smtplib(ip, a):
    for n in range(2):
        smtplib_session(ip, a.smtpd, "smtp.shop.example", "orders@shop.example",
                        ["carol@example.com", "alice@example.com"], "shop%d" % n)


def good_helo_waits(ip, a):
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("HELO relay.corp.example")
    r.cmd("MAIL FROM:<it@corp.example>")
    r.cmd("RCPT TO:<bob@example.com>")
    if r.cmd("DATA") == 354:
        r.send(MSG.format(frm="it@corp.example", to="bob@example.com", n="helo", host="corp")
               + ".\r\n")
        r.reply()
    r.quit()


def good_typo(ip, a):
    smtplib_session(ip, a.smtpd, "mta.news.example", "newsletter@news.example",
                    ["alice@example.com", "bob@example.com", "alcie@example.com",
                     "carol@example.com"], "news")


def good_submission(ip, a):
    s = smtplib.SMTP(a.submission[0], a.submission[1], local_hostname="laptop.corp.example",
                     source_address=(ip, 0), timeout=30)
    try:
        s.ehlo()
        s.user, s.password = "alice@example.com", "lab-alice-secrte"  # typo, once
        try:
            s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPAuthenticationError as e:
            note(ip, "auth failed as intended: %s" % e.smtp_code)
        s.user, s.password = "alice@example.com", "lab-alice-secret"
        s.auth("PLAIN", s.auth_plain)
        msg = MSG.format(frm="alice@example.com", to="bob@example.com", n="sub", host="laptop")
        s.sendmail("alice@example.com", ["bob@example.com"], msg)
        # outside recipients, relayed after AUTH: one is deferred (nothing
        # listens at its next hop), one bounces (the lab's fake remote MX
        # says 550); the bounce notice lands in alice's mailbox
        s.sendmail("alice@example.com", ["partner@partner.example"], msg)
        s.sendmail("alice@example.com", ["boss@corp.example"], msg)
        note(ip, "submission done")
    finally:
        s.quit()


def good_monitor(ip, a):
    for _ in range(4):
        r = Raw(ip, a.smtpd)
        r.reply()
        r.quit()
        time.sleep(0.3)
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO monitor.lab.example")
    r.quit()
    r = Raw(ip, a.smtpd)  # a TCP check: connect, read the banner, hang up
    r.reply()
    r.close()


def good_postscreen(ip, a):
    rcpt = ["carol@example.com"]
    # New client: postscreen runs its deep tests, answers 450 4.3.2 to RCPT
    # and remembers the PASS; the retry is handed to the real smtpd.
    refused = smtplib_session(ip, a.postscreen, "mail.friendly.example", "hello@partner.example",
                              rcpt, "ps1")
    note(ip, "first try refused: %s" % refused)
    time.sleep(1)
    smtplib_session(ip, a.postscreen, "mail.friendly.example", "hello@partner.example", rcpt, "ps2")


# --- bad clients ----------------------------------------------------------

def bad_denylisted(ip, a):
    for _ in range(2):
        r = Raw(ip, a.postscreen)
        r.reply()  # postscreen drops it: 521 and disconnect
        r.close()
        time.sleep(0.5)


def good_localhost(ip, a):
    # the host itself is in mynetworks: postscreen allowlists it
    smtplib_session(ip, a.postscreen, "mx.lab.example", "root@mx.lab.example",
                    ["postmaster@example.com"], "local")


def bad_dictionary(ip, a):
    names = ["admin", "info", "sales", "webmaster", "test", "john", "mary", "support",
             "office", "contact", "jobs", "hr"]
    for i in range(3):
        r = Raw(ip, a.smtpd)
        r.reply()
        r.cmd("EHLO mail.bank.example")
        r.cmd("MAIL FROM:<service@bank.example>")
        for name in names[i * 4:i * 4 + 4]:
            r.cmd("RCPT TO:<%s@%s>" % (name, DOMAIN))
        r.quit()


def bad_helo(helo, sessions=2):
    def run(ip, a):
        for _ in range(sessions):
            r = Raw(ip, a.smtpd)
            r.reply()
            r.cmd("EHLO " + helo)
            r.cmd("MAIL FROM:<offers@bank.example>")
            r.cmd("RCPT TO:<alice@example.com>")
            r.cmd("RCPT TO:<bob@example.com>")
            r.quit()
    return run


def bad_invalid_helo(ip, a):
    for helo in ["host..example", "[300.1.1.1]"]:
        r = Raw(ip, a.smtpd)
        r.reply()
        r.cmd("EHLO " + helo)
        r.cmd("MAIL FROM:<offers@bank.example>")
        r.cmd("RCPT TO:<alice@example.com>")
        r.cmd("RCPT TO:<carol@example.com>")
        r.quit()


def bad_unqualified_sender(ip, a):
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO mail.unq.example")
    r.cmd("MAIL FROM:<root>")
    for u in GOOD_USERS * 3:
        if r.cmd("RCPT TO:<%s@%s>" % (u, DOMAIN)) in (None, 421):
            break
    r.quit()


def bad_relay(ip, a):
    swaks(ip, a.smtpd, "--ehlo", "probe.relaytest.example", "--from", "check@bank.example",
          "--to", "relaytest@relay-check.example", "--quit-after", "RCPT")
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO probe.relaytest.example")
    r.cmd("MAIL FROM:<check@bank.example>")
    for rcpt in ["victim@mail.example.net", "spamtrap@freemail.example",
                 "user@relay-check.example", "abuse@example.org"]:
        r.cmd("RCPT TO:<%s>" % rcpt)
    r.quit()


def bad_multi_bounce(ip, a):
    for _ in range(2):
        r = Raw(ip, a.smtpd)
        r.reply()
        r.cmd("EHLO bounce.mailer.example")
        r.cmd("MAIL FROM:<>")
        r.cmd("RCPT TO:<alice@example.com>")
        r.cmd("RCPT TO:<bob@example.com>")
        r.cmd("DATA")
        r.quit()


def bad_pipeliner(ip, a):
    # HELO does not offer PIPELINING: send everything in one write anyway.
    r = Raw(ip, a.smtpd)
    r.reply()
    r.send("HELO pipe.spam.example\r\nMAIL FROM:<win@bank.example>\r\n"
           "RCPT TO:<alice@example.com>\r\nDATA\r\n")
    for _ in range(4):
        if r.reply() in (None, 421):
            break
    r.quit()
    # EHLO, then commands and the message body before the 354 arrives.
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO pipe.spam.example")
    r.send("MAIL FROM:<win@bank.example>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
           "Subject: you won\r\n\r\nclaim now\r\n.\r\n")
    for _ in range(4):
        if r.reply() in (None, 421):
            break
    r.quit()


def bad_pregreet(ip, a):
    for _ in range(2):
        r = Raw(ip, a.postscreen)
        r.send("EHLO pregreet.spam.example\r\n")  # before any greeting
        r.reply()
        r.reply()
        r.cmd("MAIL FROM:<win@bank.example>")
        r.cmd("RCPT TO:<alice@example.com>")
        r.quit()


def bad_ps_pipelining(ip, a):
    r = Raw(ip, a.postscreen)
    r.reply()
    r.send("EHLO pipe2.spam.example\r\nMAIL FROM:<win@bank.example>\r\nRCPT TO:<alice@example.com>\r\n")
    for _ in range(3):
        if r.reply() in (None, 421):
            break
    r.quit()


def bad_non_smtp(port_attr):
    def run(ip, a):
        for req in ["GET / HTTP/1.0", "POST /cgi-bin/login HTTP/1.1"]:
            r = Raw(ip, getattr(a, port_attr))
            r.reply()
            r.send(req + "\r\nHost: mx.lab.example\r\nUser-Agent: scanner/1.0\r\n\r\n")
            r.reply()
            r.reply()
            r.close()
    return run


def bad_bare_newline(ip, a):
    r = Raw(ip, a.postscreen)
    r.reply()
    for line in ["EHLO bare.spam.example", "MAIL FROM:<win@bank.example>", "RCPT TO:<alice@example.com>"]:
        r.send(line + "\n")
        r.reply()
    r.quit()


def bad_junk(ip, a):
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO junk.spam.example")
    for i in range(10):
        if r.cmd("XYZZY%d" % i) in (None, 421):
            break
    r.close()


def bad_vrfy(ip, a):
    names = ["root", "admin", "info", "sales", "postmaster", "test", "guest", "oracle", "backup",
             "www"]
    for chunk in (names[:5], names[5:]):
        r = Raw(ip, a.smtpd)
        r.reply()
        r.cmd("EHLO vrfy.scan.example")
        for n in chunk:
            if r.cmd("VRFY %s@%s" % (n, DOMAIN)) in (None, 421):
                break
        r.quit()


def bad_mail_before_helo(ip, a):
    r = Raw(ip, a.smtpd)
    r.reply()
    for _ in range(8):
        if r.cmd("MAIL FROM:<spam@bank.example>") in (None, 421):
            break
    r.close()


def bad_sasl(ip, a):
    import base64
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    guesses = [("admin@example.com", "admin"), ("alice@example.com", "123456"),
               ("alice@example.com", "password"), ("bob@example.com", "qwerty"),
               ("info@example.com", "info2024"), ("bob@example.com", "letmein"),
               ("test@example.com", "test"), ("alice@example.com", "alice1"),
               ("postmaster@example.com", "postmaster")]
    for s in range(3):
        r = Raw(ip, a.smtpd)
        r.reply()
        r.cmd("EHLO User")  # brute forcers rarely send a proper name
        for user, pw in guesses[s * 3:s * 3 + 3]:
            if s == 1:
                code = r.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (user, pw)))
            else:
                r.cmd("AUTH LOGIN")
                r.cmd(b64(user))
                code = r.cmd(b64(pw))
            if code in (None, 421):
                break
        r.quit()


def bad_lost_and_timeout(ip, a):
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO drop.spam.example")
    r.cmd("MAIL FROM:<win@bank.example>")
    r.cmd("RCPT TO:<alice@example.com>")
    r.close()  # hang up mid-transaction: "lost connection after RCPT"
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO drop.spam.example")
    r.cmd("MAIL FROM:<win@bank.example>")
    r.cmd("RCPT TO:<bob@example.com>")
    time.sleep(12)  # smtpd_timeout is 10s: "timeout after RCPT"
    r.reply()
    r.close()


def bad_dnsbl_postscreen(ip, a):
    for _ in range(2):
        r = Raw(ip, a.postscreen)
        r.reply()
        r.cmd("EHLO listed.spam.example")
        r.cmd("MAIL FROM:<win@bank.example>")
        r.cmd("RCPT TO:<alice@example.com>")
        r.quit()


def bad_dnsbl_smtpd(ip, a):
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO listed2.spam.example")
    r.cmd("MAIL FROM:<win@bank.example>")
    r.cmd("RCPT TO:<alice@example.com>")
    r.cmd("RCPT TO:<carol@example.com>")
    r.quit()


def bad_unknown_sender_domain(ip, a):
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO mail.no-such-domain.example")
    r.cmd("MAIL FROM:<promo@no-such-domain.example>")
    for u in GOOD_USERS * 3:
        if r.cmd("RCPT TO:<%s@%s>" % (u, DOMAIN)) in (None, 421):
            break
    r.quit()


# lab address, documentation address, role, what it did, expected detectors, function
CLIENTS = [
    ("127.0.0.11", "198.51.100.11", "good",
     "swaks with --pipeline (PIPELINING honoured), EHLO mail.partner.example (forward-confirmed PTR); 2 messages, 3 deliveries", [],
     good_swaks_pipelining),
    ("127.0.0.12", "198.51.100.12", "good",
     "python smtplib, EHLO smtp.shop.example (forward-confirmed PTR); 2 sessions, each 1 message to 2 users", [],
     good_smtplib),
    ("127.0.0.13", "198.51.100.13", "good",
     "plain SMTP: HELO relay.corp.example (not EHLO), waits for every reply; 1 message", [],
     good_helo_waits),
    ("127.0.0.17", "198.51.100.17", "good",
     "through postscreen: passes the greet, pipelining, non-SMTP and bare-newline tests, gets 450 4.3.2 at RCPT (PASS NEW), reconnects 1s later (PASS OLD) and is delivered", [],
     good_postscreen),
    ("127.0.0.14", "192.0.2.14", "good",
     "legit newsletter sender (forward-confirmed PTR): 1 message to 4 recipients, one mistyped (alcie@) gets 550 5.1.1; 3 delivered", [],
     good_typo),
    ("127.0.0.15", "192.0.2.15", "good",
     "submission port (postfix/submission/smtpd): AUTH PLAIN fails once (typo password), then succeeds; sends 1 local message and 2 outside messages: one deferred (connection refused), one bounced (remote 550 5.1.1)", [],
     good_submission),
    ("127.0.0.16", "192.0.2.16", "good",
     "monitoring probe: 4x connect+QUIT, 1x EHLO+QUIT, 1x connect and hang up after the banner (lost connection after CONNECT)", [],
     good_monitor),
    ("127.0.0.1", "127.0.0.1", "good",
     "the host itself (mynetworks): a local daily report through the postscreen port, ALLOWLISTED and handed to smtpd; 1 message to postmaster", [],
     good_localhost),
    ("127.0.0.31", "203.0.113.31", "bad",
     "dictionary attack: 12 distinct unknown recipients @example.com in 3 sessions (4 per session)", ["dictionary"],
     bad_dictionary),
    ("127.0.0.32", "203.0.113.32", "bad",
     "HELO friend (check_helo_access REJECT): 2 sessions x 2 RCPT rejected", ["bad_helo"],
     bad_helo("friend")),
    ("127.0.0.33", "203.0.113.33", "bad",
     "HELO localhost (check_helo_access REJECT): 2 sessions x 2 RCPT rejected", ["bad_helo"],
     bad_helo("localhost")),
    ("127.0.0.34", "203.0.113.34", "bad",
     "bare-word HELO desktop-pc (reject_non_fqdn_helo_hostname): 2 sessions x 2 RCPT rejected", ["bad_helo"],
     bad_helo("desktop-pc")),
    ("127.0.0.35", "203.0.113.35", "bad",
     "HELO mx.lab.example = our own hostname (check_helo_access REJECT): 2 sessions x 2 RCPT rejected", ["bad_helo"],
     bad_helo("mx.lab.example")),
    ("127.0.0.36", "203.0.113.36", "bad",
     "invalid HELO syntax (host..example, [300.1.1.1]; reject_invalid_helo_hostname): 2 sessions x 2 RCPT rejected", ["bad_helo"],
     bad_invalid_helo),
    ("127.0.0.37", "203.0.113.37", "bad",
     "unqualified sender MAIL FROM:<root>: every RCPT rejected (504 need fully-qualified address) until too many errors", ["error_burst"],
     bad_unqualified_sender),
    ("127.0.0.38", "203.0.113.38", "bad",
     "relay probes: 5 recipients at 4 foreign domains in 2 sessions (swaks + raw), PTR does not resolve forward", ["relay_probe"],
     bad_relay),
    ("127.0.0.39", "203.0.113.39", "bad",
     "multi-recipient bounce: MAIL FROM:<> with 2 RCPT, DATA rejected; 2 sessions", [],
     bad_multi_bounce),
    ("127.0.0.40", "203.0.113.40", "bad",
     "pipelining against smtpd: HELO+MAIL+RCPT+DATA in one write; then EHLO and MAIL+RCPT+DATA+body before 354", ["pipelining"],
     bad_pipeliner),
    ("127.0.0.41", "203.0.113.41", "bad",
     "pregreet against postscreen: EHLO before the greeting, then MAIL/RCPT (rejected 550 5.5.1); 2 sessions", ["pregreet"],
     bad_pregreet),
    ("127.0.0.42", "203.0.113.42", "bad",
     "COMMAND PIPELINING against postscreen: EHLO+MAIL+RCPT in one write after the greeting", ["pipelining"],
     bad_ps_pipelining),
    ("127.0.0.43", "203.0.113.43", "bad",
     "NON-SMTP against postscreen: GET / HTTP/1.0 and POST after the greeting; 2 sessions", ["pregreet"],
     bad_non_smtp("postscreen")),
    ("127.0.0.44", "203.0.113.44", "bad",
     "non-SMTP against smtpd: GET / HTTP/1.0 and POST after the greeting; 2 sessions", ["pregreet"],
     bad_non_smtp("smtpd")),
    ("127.0.0.45", "203.0.113.45", "bad",
     "BARE NEWLINE against postscreen: EHLO/MAIL/RCPT ended with LF only", ["pregreet"],
     bad_bare_newline),
    ("127.0.0.46", "203.0.113.46", "bad",
     "junk commands after EHLO until too many errors", ["error_burst"],
     bad_junk),
    ("127.0.0.47", "203.0.113.47", "bad",
     "VRFY prober: VRFY of 10 addresses @example.com in 2 sessions (disable_vrfy_command = no), the first session ends in too many errors", ["dictionary"],
     bad_vrfy),
    ("127.0.0.48", "203.0.113.48", "bad",
     "MAIL before HELO (smtpd_helo_required): 503 every time until too many errors", ["error_burst"],
     bad_mail_before_helo),
    ("127.0.0.49", "203.0.113.49", "bad",
     "SASL brute force on the smtpd port (the port-25 one): 9 failed AUTH (LOGIN, PLAIN, LOGIN) in 3 sessions", ["sasl_bruteforce"],
     bad_sasl),
    ("127.0.0.50", "203.0.113.50", "bad",
     "hangs up after RCPT (lost connection after RCPT), then idles after RCPT past smtpd_timeout (timeout after RCPT)", [],
     bad_lost_and_timeout),
    ("127.0.0.51", "203.0.113.51", "bad",
     "listed in the lab DNSBL, connects through postscreen (DNSBL rank 2, RCPT rejected 550 5.7.1); 2 sessions", ["dnsbl"],
     bad_dnsbl_postscreen),
    ("127.0.0.52", "203.0.113.52", "bad",
     "listed in the lab DNSBL, connects to smtpd (reject_rbl_client: 2 RCPT rejected 554 5.7.1 blocked using)", ["dnsbl"],
     bad_dnsbl_smtpd),
    ("127.0.0.54", "203.0.113.54", "bad",
     "denylisted by the admin in postscreen_access_list (cidr reject, postscreen_denylist_action = drop): 2 connections dropped at once with 521 5.3.2", [],
     bad_denylisted),
    ("127.0.0.53", "203.0.113.53", "bad",
     "sender domain does not exist (reject_unknown_sender_domain, 450 4.1.8 Domain not found) for every RCPT until too many errors", ["error_burst"],
     bad_unknown_sender_domain),
]



# --- scenario set "classes" -----------------------------------------------
# Detection classes beyond the default set, and hard negatives. Run with
# --scenarios classes against an instance set up with LAB_SCENARIOS=classes
# (setup.sh: TLS, anvil limits on the --limited port, access maps,
# header/body checks, greylisting through --policy, disable_vrfy_command).
#
# Slow clients run in real time, a fraction of a second between sessions,
# and say where each session belongs in log time: SESSION_BASE + the
# offsets in their plan (seconds after the first line of the log).
# rewrite.py --sessions moves each such session as a whole (every line of
# its smtpd process from connect to disconnect, and the lines of the queue
# ids it created) by a constant; nothing else in the lines changes.

SESSION_BASE = 300  # the real capture is over by then


def plan(*offsets):
    return [SESSION_BASE + o for o in offsets]


MONITOR_PLAN = plan(*[5 + 60 * k for k in range(120)])        # every minute, 2 hours
SLOW_SASL_PLAN = plan(*[20 + 420 * j for j in range(9)])      # every 7 minutes, 56 minutes
NORDNS_PLAN = plan(40, 40 + 300, 40 + 900, 40 + 2100)         # backoff 5, 10, 20 minutes
GREYLIST_PLAN = plan(50, 50 + 420)                            # retry after 7 minutes
GREYLISTED = "127.0.0.65"


class Greylist(threading.Thread):
    """A greylisting policy server (Postfix policy delegation protocol, the
    way postgrey answers): the first request of a (client, sender,
    recipient) triplet is deferred, one after `delay` seconds passes.
    Only the lab addresses in `clients` are greylisted (DUNNO for others)."""

    def __init__(self, addr, delay, clients):
        super().__init__(daemon=True)
        self.clients = set(clients)
        self.srv = socket.create_server(addr)
        self.srv.settimeout(0.5)
        self.delay = delay
        self.seen = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self.session, args=(c,), daemon=True).start()
        self.srv.close()

    def session(self, c):
        c.settimeout(120)
        attrs = {}
        try:
            for raw in c.makefile("rb"):
                line = raw.rstrip(b"\r\n").decode("latin-1")
                if line:
                    k, _, v = line.partition("=")
                    attrs[k] = v
                    continue
                key = (attrs.get("client_address"), attrs.get("sender"), attrs.get("recipient"))
                now = time.time()
                with self.lock:
                    first = self.seen.setdefault(key, now)
                if key[0] in self.clients and now - first < self.delay:
                    domain = attrs.get("recipient", "").rpartition("@")[2] or "unknown"
                    action = "DEFER_IF_PERMIT Greylisted, see http://postgrey.lab.example/help/%s.html" % domain
                else:
                    action = "DUNNO"
                c.sendall(("action=%s\n\n" % action).encode())
                attrs = {}
        except OSError:
            pass
        finally:
            c.close()


def raw_session(ip, addr, helo, frm, rcpts, n):
    """EHLO, one message, QUIT, waiting for every reply; returns the codes."""
    r = Raw(ip, addr)
    codes = [r.reply(), r.cmd("EHLO " + helo), r.cmd("MAIL FROM:<%s>" % frm)]
    for rcpt in rcpts:
        codes.append(r.cmd("RCPT TO:<%s>" % rcpt))
    if 250 in codes[3:] and r.cmd("DATA") == 354:  # an MTA sends DATA only for accepted recipients
        r.send(MSG.format(frm=frm, to=", ".join(rcpts), n=n, host=helo) + ".\r\n")
        codes.append(r.reply())
    r.quit()
    return codes


def auth_login(r, user, pw):
    import base64
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    if r.cmd("AUTH LOGIN") != 334:
        return None
    if r.cmd(b64(user)) != 334:
        return None
    return r.cmd(b64(pw))


# bad clients, one address each

def cls_flood(ip, a):
    # 18 sessions within seconds: half hang up after the banner, half after EHLO
    for i in range(18):
        r = Raw(ip, a.smtpd)
        r.reply()
        if i % 2:
            r.cmd("EHLO flood.spam.example")
        r.close()
        time.sleep(0.1)


def cls_anvil_connections(ip, a):
    # concurrency: 4 at once against a count limit of 2 (the last two get 421)
    held = []
    for _ in range(4):
        r = Raw(ip, a.limited)
        r.reply()
        held.append(r)
    for r in held:
        r.quit()
    time.sleep(2)
    # rate: 8 more connect+QUIT one after the other against a rate limit of
    # 5/60s (the connections above count too)
    for _ in range(8):
        r = Raw(ip, a.limited)
        if r.reply() == 220:
            r.quit()
        else:
            r.close()
        time.sleep(0.3)


def cls_anvil_messages(ip, a):
    # messages of 3 recipients against a recipient rate limit of 6/60s and a
    # message rate limit of 3/60s
    r = Raw(ip, a.limited)
    r.reply()
    r.cmd("EHLO bulk.spam.example")
    for n in range(5):
        if r.cmd("MAIL FROM:<deals@bank.example>") != 250:
            r.cmd("RSET")
            continue
        ok = 0
        for u in GOOD_USERS:
            ok += r.cmd("RCPT TO:<%s@%s>" % (u, DOMAIN)) == 250
        if ok and r.cmd("DATA") == 354:
            r.send(MSG.format(frm="deals@bank.example", to="you", n="anvil%d" % n, host="bulk") + ".\r\n")
            r.reply()
        else:
            r.cmd("RSET")
    r.quit()


def cls_starttls_abuse(ip, a):
    # STARTTLS, then garbage instead of a handshake, or a hang-up; 8 times
    for i in range(8):
        r = Raw(ip, a.smtpd)
        r.reply()
        r.cmd("EHLO tls.spam.example")
        if r.cmd("STARTTLS") != 220:
            r.quit()
            continue
        if i % 2 == 0:
            r.send("GET / HTTP/1.0\r\nHost: mx.lab.example\r\n\r\n")
            r.sock.settimeout(5)
            try:
                r.sock.recv(4096)
            except OSError:
                pass
        r.close()
        time.sleep(0.2)


def cls_client_access(ip, a):
    # rejected by check_client_access (the admin's cidr map); keeps trying
    for n in range(4):
        r = Raw(ip, a.smtpd)
        r.reply()
        r.cmd("EHLO mail.blocked.example")
        r.cmd("MAIL FROM:<sales@bank.example>")
        r.cmd("RCPT TO:<alice@example.com>")
        r.quit()
        time.sleep(0.5)


def cls_postscreen_denylist(ip, a):
    for _ in range(3):
        r = Raw(ip, a.postscreen)
        r.reply()
        r.close()
        time.sleep(0.5)


def cls_content(ip, a):
    # header_checks and body_checks REJECT; 2 sessions x 2 messages
    for s in range(2):
        r = Raw(ip, a.smtpd)
        r.reply()
        r.cmd("EHLO mail.pharma.example")
        for m in range(2):
            r.cmd("MAIL FROM:<offers@bank.example>")
            r.cmd("RCPT TO:<%s@%s>" % (GOOD_USERS[m], DOMAIN))
            if r.cmd("DATA") == 354:
                msg = MSG.format(frm="offers@bank.example", to="you", n="content%d%d" % (s, m), host="pharma")
                if m == 0:
                    msg = msg.replace("Subject: lab message", "Subject: cheap pills lab message")
                else:
                    msg = msg.replace("Hello from the mxguard lab.", "Claim your casino bonus now.")
                r.send(msg + ".\r\n")
                r.reply()
        r.quit()


def cls_slow_sasl(ip, a):
    # one failed AUTH LOGIN per session; in log time one every 7 minutes
    users = ["alice@example.com", "bob@example.com", "admin@example.com"]
    for j in range(len(SLOW_SASL_PLAN)):
        r = Raw(ip, a.submission)
        r.reply()
        r.cmd("EHLO slow.spam.example")
        auth_login(r, users[j % 3], "Winter%d!" % (2020 + j))
        r.quit()
        time.sleep(0.1)


def cls_spray(ip, a):
    # one password, four user names, one try each, in one session
    r = Raw(ip, a.submission)
    r.reply()
    r.cmd("EHLO spray.spam.example")
    for user in ["alice@example.com", "bob@example.com", "carol@example.com", "info@example.com"]:
        if auth_login(r, user, "Summer2026!") in (None, 421):
            break
    r.quit()


def cls_dictionary_part(names):
    def run(ip, a):
        r = Raw(ip, a.smtpd)
        r.reply()
        r.cmd("EHLO mail.subnet.example")
        r.cmd("MAIL FROM:<service@bank.example>")
        for name in names:
            r.cmd("RCPT TO:<%s@%s>" % (name, DOMAIN))
        r.quit()
    return run


def cls_weak_signals(ip, a):
    # MAIL without HELO
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("MAIL FROM:<news@bank.example>")
    r.quit()
    time.sleep(2)
    # VRFY probing (disabled: 502)
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO mail.weak.example")
    r.cmd("VRFY alice@example.com")
    r.cmd("VRFY admin@example.com")
    r.quit()
    time.sleep(2)
    # an unqualified sender
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO mail.weak.example")
    r.cmd("MAIL FROM:<webmaster>")
    r.cmd("RCPT TO:<alice@example.com>")
    r.quit()
    time.sleep(2)
    # a bounce to two recipients
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO mail.weak.example")
    r.cmd("MAIL FROM:<>")
    r.cmd("RCPT TO:<alice@example.com>")
    r.cmd("RCPT TO:<bob@example.com>")
    r.cmd("DATA")
    r.quit()


# good clients (hard negatives)

def cls_big_mta(ip, a):
    # 30 messages in 3 sessions, 3 of them with one stale address among the
    # recipients (550 5.1.1 for it, the others delivered)
    stale = {7: "jsmith", 15: "old.account", 23: "m.mueller"}
    n = 0
    for _ in range(3):
        s = smtplib.SMTP(a.smtpd[0], a.smtpd[1], local_hostname="mx1.bigmail.example",
                         source_address=(ip, 0), timeout=30)
        try:
            s.ehlo()
            # opportunistic TLS, as MTAs do (the lab certificate is self-signed)
            s.starttls(context=ssl._create_unverified_context())
            s.ehlo()
            for _ in range(10):
                rcpts = [GOOD_USERS[n % 3] + "@" + DOMAIN]
                if n in stale:
                    rcpts.append(stale[n] + "@" + DOMAIN)
                msg = MSG.format(frm="list@bigmail.example", to=", ".join(rcpts), n="big%d" % n,
                                 host="mx1.bigmail.example")
                refused = s.sendmail("list@bigmail.example", rcpts, msg)
                if refused:
                    note(ip, "refused %s" % refused)
                n += 1
        finally:
            s.quit()


def submit(ip, a, helo, user, pw, rcpts, n, tries=()):
    """A mail client on the submission port: wrong passwords first (each in
    its own connection, the way a client asks the user again), then the
    right one and one message."""
    for bad in tries:
        s = smtplib.SMTP(a.submission[0], a.submission[1], local_hostname=helo,
                         source_address=(ip, 0), timeout=30)
        try:
            s.ehlo()
            s.user, s.password = user, bad
            s.auth("PLAIN", s.auth_plain)  # one mechanism, as mail clients do
        except smtplib.SMTPAuthenticationError as e:
            note(ip, "auth failed as intended: %s" % e.smtp_code)
        finally:
            s.quit()
        time.sleep(1)
    s = smtplib.SMTP(a.submission[0], a.submission[1], local_hostname=helo,
                     source_address=(ip, 0), timeout=30)
    try:
        s.ehlo()
        s.user, s.password = user, pw
        s.auth("PLAIN", s.auth_plain)
        s.sendmail(user, rcpts, MSG.format(frm=user, to=", ".join(rcpts), n=n, host=helo))
    finally:
        s.quit()


def cls_office_nat(ip, a):
    submit(ip, a, "pc-alice.office.example", "alice@example.com", "lab-alice-secret",
           ["bob@example.com"], "nat1")
    submit(ip, a, "pc-bob.office.example", "bob@example.com", "lab-bob-secret",
           ["carol@example.com", "partner@partner.example"], "nat2")
    submit(ip, a, "pc-carol.office.example", "carol@example.com", "lab-carol-secret",
           ["alice@example.com"], "nat3",
           tries=["lab-carol-secert", "lab-Carol-secret", "lab-carol-secret ", "lab-carol-secre"])
    submit(ip, a, "pc-alice.office.example", "alice@example.com", "lab-alice-secret",
           ["carol@example.com"], "nat4")


def cls_monitor(ip, a):
    # connect, every third time EHLO, QUIT; in log time once a minute
    for k in range(len(MONITOR_PLAN)):
        r = Raw(ip, a.smtpd)
        r.reply()
        if k % 3 == 0:
            r.cmd("EHLO nagios.ops.example")
        r.quit()
        time.sleep(0.1)


def cls_no_rdns(ip, a):
    # no PTR: 450 4.7.25 cannot find your hostname; retries with backoff
    for k in range(len(NORDNS_PLAN)):
        raw_session(ip, a.smtpd, "mail.nordns.example", "billing@nordns.example",
                    ["alice@example.com"], "nordns%d" % k)
        time.sleep(0.5)


def cls_greylisted(ip, a, delay=3):
    # greylisted (450 4.7.1) at the first try, accepted at the retry
    for k in range(len(GREYLIST_PLAN)):
        codes = raw_session(ip, a.smtpd, "smtp.grey.example", "orders@grey.example",
                            ["alice@example.com", "bob@example.com"], "grey%d" % k)
        note(ip, "try %d: %s" % (k, codes))
        time.sleep(delay + 1)


def cls_webapp(ip, a):
    # one connection, 8 messages, each MAIL/RCPT/DATA as one pipelined
    # group after EHLO offered PIPELINING (RFC 2920)
    r = Raw(ip, a.smtpd)
    r.reply()
    r.cmd("EHLO app1.shop.example")
    for n in range(8):
        rcpt = "%s@%s" % (GOOD_USERS[n % 3], DOMAIN)
        r.send("MAIL FROM:<noreply@shop.example>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt)
        codes = [r.reply(), r.reply(), r.reply()]
        if codes[2] == 354:
            r.send(MSG.format(frm="noreply@shop.example", to=rcpt, n="app%d" % n, host="app1") + ".\r\n")
            r.reply()
        else:
            r.cmd("RSET")
    r.quit()


def cls_laptop(ip, a):
    for n in range(2):
        submit(ip, a, "DESKTOP-7F3K2Q", "bob@example.com", "lab-bob-secret",
               ["alice@example.com"], "laptop%d" % n)


DICT_NAMES = ["admin", "info", "sales", "webmaster", "test", "john", "mary", "support",
              "office", "contact", "jobs", "hr", "billing", "noc", "abuse2", "press", "web"]

# lab address, documentation address, role, what it did, expected
# detectors, function, session plan (log-time offsets, see SESSION_BASE)
CLASSES = [
    ("127.0.0.61", "192.0.2.61", "good",
     "high-volume MTA (forward-confirmed PTR mx1.bigmail.example, STARTTLS): 30 messages in 3 sessions, 3 of them with one stale recipient among valid ones (550 5.1.1 User unknown), the rest delivered", [],
     cls_big_mta, None),
    ("127.0.0.62", "192.0.2.62", "good",
     "office NAT on the submission port: alice, bob and carol authenticate and send; carol mistypes her password 4 times (4 connections, AUTH PLAIN) before succeeding", [],
     cls_office_nat, None),
    ("127.0.0.63", "192.0.2.63", "good",
     "monitoring probe: 120 sessions, connect, every third EHLO, QUIT; in log time once a minute for 2 hours (sessions moved, see README)", [],
     cls_monitor, MONITOR_PLAN),
    ("127.0.0.64", "192.0.2.64", "good",
     "MTA without reverse DNS (reject_unknown_client_hostname for it): 450 4.7.25 cannot find your hostname, 4 tries with backoff 5, 10, 20 minutes in log time (sessions moved)", [],
     cls_no_rdns, NORDNS_PLAN),
    ("127.0.0.65", "192.0.2.65", "good",
     "greylisted MTA (policy service answers DEFER_IF_PERMIT Greylisted): 450 4.7.1 for 2 recipients, retries 7 minutes later in log time and is delivered (sessions moved)", [],
     cls_greylisted, GREYLIST_PLAN),
    ("127.0.0.66", "192.0.2.66", "good",
     "bulk web app: one session, 8 messages, MAIL/RCPT/DATA pipelined after EHLO offered PIPELINING", [],
     cls_webapp, None),
    ("127.0.0.67", "192.0.2.67", "good",
     "laptop with non-FQDN HELO DESKTOP-7F3K2Q authenticating on the submission port; 2 messages", [],
     cls_laptop, None),
    ("127.0.0.71", "203.0.113.71", "bad",
     "connection flood: 18 connections within seconds, 9 hang up after the banner (lost connection after CONNECT), 9 after EHLO", ["flood"],
     cls_flood, None),
    ("127.0.0.72", "203.0.113.72", "bad",
     "anvil on the limited smtpd port (connection count limit 2, rate limit 5/60s): 4 concurrent connections, then 8 connect+QUIT one after the other; Connection concurrency/rate limit exceeded, 421 4.7.0", ["flood"],
     cls_anvil_connections, None),
    ("127.0.0.73", "203.0.113.73", "bad",
     "anvil on the limited smtpd port (message rate 3/60s, recipient rate 6/60s): 5 messages of 3 recipients in one session; Recipient address / Message delivery request rate limit exceeded", [],
     cls_anvil_messages, None),
    ("127.0.0.74", "203.0.113.74", "bad",
     "STARTTLS abuse: 8 sessions EHLO, STARTTLS, then HTTP garbage instead of a handshake (SSL_accept error) or a hang-up", ["flood", "error_burst"],
     cls_starttls_abuse, None),
    ("127.0.0.75", "203.0.113.75", "bad",
     "denied by the admin in check_client_access (cidr REJECT): 4 sessions, RCPT rejected 554 5.7.1 Client host rejected: Access denied", ["admin_reject"],
     cls_client_access, None),
    ("127.0.0.76", "203.0.113.76", "bad",
     "denylisted by the admin in postscreen_access_list (cidr reject, postscreen_denylist_action = drop): 3 connections dropped at once (DENYLISTED, 521 5.3.2)", ["admin_reject"],
     cls_postscreen_denylist, None),
    ("127.0.0.77", "203.0.113.77", "bad",
     "content rejects: 4 messages in 2 sessions, 2 rejected by header_checks (Subject), 2 by body_checks (cleanup: reject: header/body ... 5.7.1)", ["content_reject"],
     cls_content, None),
    ("127.0.0.78", "203.0.113.78", "bad",
     "low and slow SASL guessing on the submission port: 9 failed AUTH LOGIN, one per session, one every 7 minutes in log time (sessions moved)", ["sasl_bruteforce"],
     cls_slow_sasl, SLOW_SASL_PLAN),
    ("127.0.0.79", "203.0.113.79", "bad",
     "password spraying on the submission port: one password, 4 distinct user names, one AUTH LOGIN each, one session", ["sasl_spray"],
     cls_spray, None),
    ("127.0.0.80", "203.0.113.80", "bad",
     "weak signals, each once: MAIL without HELO (503), 2x VRFY (disable_vrfy_command = yes: 502), unqualified sender MAIL FROM:<webmaster> (504), multi-recipient bounce (550 5.5.3); 4 sessions", ["score"],
     cls_weak_signals, None),
    ("127.0.0.81", "198.51.100.81", "bad",
     "distributed dictionary, 1 of 5 addresses of 198.51.100.0/24: 3 unknown recipients (17 in the /24)", ["dictionary"],
     cls_dictionary_part(DICT_NAMES[0:3]), None),
    ("127.0.0.82", "198.51.100.82", "bad",
     "distributed dictionary, 2 of 5 addresses of 198.51.100.0/24: 4 unknown recipients (17 in the /24)", ["dictionary"],
     cls_dictionary_part(DICT_NAMES[3:7]), None),
    ("127.0.0.83", "198.51.100.83", "bad",
     "distributed dictionary, 3 of 5 addresses of 198.51.100.0/24: 3 unknown recipients (17 in the /24)", ["dictionary"],
     cls_dictionary_part(DICT_NAMES[7:10]), None),
    ("127.0.0.84", "198.51.100.84", "bad",
     "distributed dictionary, 4 of 5 addresses of 198.51.100.0/24: 4 unknown recipients (17 in the /24)", ["dictionary"],
     cls_dictionary_part(DICT_NAMES[10:14]), None),
    ("127.0.0.85", "198.51.100.85", "bad",
     "distributed dictionary, 5 of 5 addresses of 198.51.100.0/24: 3 unknown recipients (17 in the /24)", ["dictionary"],
     cls_dictionary_part(DICT_NAMES[14:17]), None),
]

SCENARIOS = {"default": CLIENTS, "classes": CLASSES}


def hostport(s):
    h, p = s.rsplit(":", 1)
    return (h, int(p))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smtpd", type=hostport, default=hostport("127.0.0.1:2525"))
    ap.add_argument("--postscreen", type=hostport, default=hostport("127.0.0.1:2526"))
    ap.add_argument("--submission", type=hostport, default=hostport("127.0.0.1:2587"))
    ap.add_argument("--only", default="", help="comma-separated lab addresses to run")
    ap.add_argument("--clients-out", default="")
    ap.add_argument("--transcript", default="")
    ap.add_argument("--remote-mx", type=hostport, default=hostport("127.0.0.1:2598"),
                    help="where the fake remote MX for corp.example listens")
    ap.add_argument("--workers", type=int, default=0, help="parallel clients (default: 12; all for classes)")
    ap.add_argument("--scenarios", choices=sorted(SCENARIOS), default="default")
    ap.add_argument("--limited", type=hostport, default=hostport("127.0.0.1:2527"),
                    help="classes: the smtpd port with low anvil limits")
    ap.add_argument("--policy", type=hostport, default=hostport("127.0.0.1:2597"),
                    help="classes: where the greylisting policy server listens")
    a = ap.parse_args()

    clients = SCENARIOS[a.scenarios]
    only = set(filter(None, a.only.split(",")))
    todo = [c for c in clients if not only or c[0] in only]
    remote = RemoteMX(a.remote_mx)
    remote.start()
    greylist = None
    if a.scenarios == "classes":
        greylist = Greylist(a.policy, 3, [GREYLISTED])
        greylist.start()
    workers = a.workers or (12 if a.scenarios == "default" else len(todo))
    start = time.time()
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
        futs = {ex.submit(c[5], c[0], a): c for c in todo}
        for f in concurrent.futures.as_completed(futs):
            c = futs[f]
            try:
                f.result()
            except Exception as e:  # report, keep the others going
                failed.append((c[0], repr(e)))
                note(c[0], "!! client failed: %r" % e)
    took = time.time() - start
    time.sleep(2)  # let the lab's smtp client reach the remote MX
    remote.stop.set()
    if greylist:
        greylist.stop.set()

    if a.clients_out:
        table = []
        for c in clients:
            row = {"ip": c[1], "lab_ip": c[0], "role": c[2], "did": c[3], "expect": c[4]}
            if len(c) > 6 and c[6]:
                row["session_offsets"] = c[6]
            table.append(row)
        with open(a.clients_out, "w") as out:
            json.dump(table, out, indent=2)
            out.write("\n")
    if a.transcript:
        with open(a.transcript, "w") as out:
            out.write("\n".join(sorted(_log, key=lambda l: l.split(" ", 2)[1:2])) + "\n")
    print("drive.py: %d clients in %.1fs, %d failed" % (len(todo), took, len(failed)))
    for ip, err in failed:
        print("drive.py: client %s failed: %s" % (ip, err), file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
