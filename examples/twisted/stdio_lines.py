"""A Twisted StandardIO program: answers each line of its standard input
with "got: LINE" on its standard output, writes "bye" on its standard
error once its input has ended and its answers are out, and exits 0.

It is half-closeable: at the end of its input it closes the connection
itself, which sends what is queued first. (A plain protocol was seen
to lose its queued answers when the input ended right after the data.)
"""

import sys

from twisted.internet import interfaces, reactor, stdio
from twisted.protocols import basic
from zope.interface import implementer


@implementer(interfaces.IHalfCloseableProtocol)
class Answer(basic.LineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line):
        self.sendLine(b"got: " + line)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        sys.stderr.write("bye\n")
        sys.stderr.flush()
        if reactor.running:
            reactor.stop()


stdio.StandardIO(Answer())
reactor.run()
