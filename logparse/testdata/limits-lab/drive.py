#!/usr/bin/env python3
"""Drive the limits lab's Postfix (capture.sh): each scenario from its own
loopback address, so anvil counts each alone.

usage: drive.py DIR [table]
"""
import socket
import ssl
import sys
import time

SMTPD = ("127.0.0.1", 2625)
PSCREEN = ("127.0.0.1", 2626)


class Session:
    def __init__(self, src, dst=SMTPD):
        self.s = socket.create_connection(dst, timeout=10, source_address=(src, 0))
        self.f = self.s.makefile("rb")
        self.greeting = self.reply()

    def reply(self):
        lines = []
        while True:
            l = self.f.readline()
            if not l:
                return lines
            lines.append(l.decode(errors="replace").rstrip())
            if len(l) < 4 or l[3:4] != b"-":
                return lines

    def cmd(self, c):
        self.s.sendall(c.encode() + b"\r\n")
        return self.reply()

    def starttls(self):
        r = self.cmd("STARTTLS")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.s = ctx.wrap_socket(self.s, server_hostname="mx.limits.example")
        self.f = self.s.makefile("rb")
        return r

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def quit(s):
    try:
        s.cmd("QUIT")
    except OSError:
        pass
    s.close()


def good(src):
    s = Session(src)
    s.cmd("EHLO mx.sender.example")
    s.cmd("MAIL FROM:<old@sender.example>")
    s.cmd("RCPT TO:<alice@example.com>")
    s.cmd("DATA")
    s.cmd("Subject: hello\r\n\r\nhello\r\n.")
    quit(s)


def connection_rate(src):
    for _ in range(5):
        s = Session(src)
        quit(s)


def connection_count(src):
    held = [Session(src), Session(src)]
    third = Session(src)  # 421 too many connections
    third.close()
    for s in held:
        quit(s)


def message_rate(src):
    s = Session(src)
    s.cmd("EHLO mx.sender.example")
    for _ in range(3):
        s.cmd("MAIL FROM:<a@sender.example>")
        s.cmd("RSET")
    quit(s)


def recipient_rate(src):
    s = Session(src)
    s.cmd("EHLO mx.sender.example")
    s.cmd("MAIL FROM:<a@sender.example>")
    for _ in range(4):
        s.cmd("RCPT TO:<alice@example.com>")
    quit(s)


def new_tls_rate(src):
    for _ in range(3):
        s = Session(src)
        s.cmd("EHLO mx.sender.example")
        try:
            s.starttls()
            s.cmd("EHLO mx.sender.example")
            quit(s)
        except (OSError, ssl.SSLError):
            s.close()


def tls_garbage(src):
    s = Session(src)
    s.cmd("EHLO mx.sender.example")
    s.cmd("STARTTLS")
    s.s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    time.sleep(0.5)
    s.close()


def tls_drop(src):
    s = Session(src)
    s.cmd("EHLO mx.sender.example")
    s.cmd("STARTTLS")
    s.close()


def tls_old_protocol(src):
    s = Session(src)
    s.cmd("EHLO mx.sender.example")
    s.cmd("STARTTLS")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("NULL:@SECLEVEL=0")
    try:
        ctx.wrap_socket(s.s, server_hostname="mx.limits.example")
    except (OSError, ssl.SSLError):
        pass
    s.close()


def warn_if_reject(src):
    s = Session(src)
    s.cmd("EHLO friend")
    s.cmd("MAIL FROM:<>")
    s.cmd("RCPT TO:<nobody@example.com>")
    quit(s)


def empty_helo(src):
    s = Session(src)
    s.cmd("HELO <>")
    s.cmd("MAIL FROM:<a@sender.example>")
    s.cmd("RCPT TO:<alice@example.com>")
    quit(s)


def postscreen_tls(src):
    s = Session(src, PSCREEN)
    s.cmd("EHLO mx.sender.example")
    try:
        s.starttls()
        s.cmd("EHLO mx.sender.example")
        s.cmd("MAIL FROM:<a@sender.example>")
        s.cmd("RCPT TO:<alice@example.com>")
        quit(s)
    except (OSError, ssl.SSLError):
        s.close()


def main():
    if len(sys.argv) > 2 and sys.argv[2] == "table":
        good("127.0.0.161")
        return
    good("127.0.0.161")
    connection_rate("127.0.0.162")
    connection_count("127.0.0.163")
    message_rate("127.0.0.164")
    recipient_rate("127.0.0.165")
    new_tls_rate("127.0.0.166")
    tls_garbage("127.0.0.167")
    tls_drop("127.0.0.168")
    tls_old_protocol("127.0.0.172")
    warn_if_reject("127.0.0.169")
    empty_helo("127.0.0.170")
    postscreen_tls("127.0.0.171")
    time.sleep(1)


if __name__ == "__main__":
    main()
