"""The Twisted book's echo server (chapter 2), used to test Torsion's client
against real Twisted.

    python echo_server.py [PORT]

With PORT 0 the kernel picks a free port; the port in use is printed on
stdout as "listening on PORT" so a test can find it.
"""
import sys

from twisted.internet import protocol, reactor


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class EchoFactory(protocol.Factory):
    def buildProtocol(self, addr):
        return Echo()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    listening = reactor.listenTCP(port, EchoFactory(), interface="127.0.0.1")
    print("listening on %d" % listening.getHost().port, flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
