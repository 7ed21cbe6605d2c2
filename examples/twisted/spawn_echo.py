"""Runs a line-echo program with Twisted's spawnProcess and checks that
every line written to its standard input comes back on its standard
output, in order, and that it exits with status 0.

Usage: python spawn_echo.py PROGRAM [LINES]
Prints "ok: N lines" and exits 0 on success; exits 1 otherwise.
"""

import sys

from twisted.internet import protocol, reactor


class Checker(protocol.ProcessProtocol):
    def __init__(self, count):
        self.lines = [b"line %d %s" % (i, b"x" * (i % 50)) for i in range(count)]
        self.received = b""
        self.errors = b""
        self.status = None

    def connectionMade(self):
        self.transport.write(b"".join(line + b"\n" for line in self.lines))
        self.transport.closeStdin()

    def outReceived(self, data):
        self.received += data

    def errReceived(self, data):
        self.errors += data

    def processEnded(self, reason):
        self.status = reason.value.exitCode
        reactor.stop()


def main():
    program = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    checker = Checker(count)
    reactor.spawnProcess(checker, program, [program], env=None)
    reactor.run()
    expected = b"".join(line + b"\n" for line in checker.lines)
    if checker.status != 0:
        print("exit status %r; stderr %r" % (checker.status, checker.errors))
        sys.exit(1)
    if checker.received != expected:
        print("got %d bytes, expected %d" % (len(checker.received), len(expected)))
        sys.exit(1)
    print("ok: %d lines" % count)


main()
