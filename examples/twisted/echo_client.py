"""The Twisted book's echo client (chapter 2), used to test Torsion's
server against real Twisted.

    python echo_client.py [HOST] [PORT]
"""
import sys

from twisted.internet import protocol, reactor


class EchoClient(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"Hello, world!")

    def dataReceived(self, data):
        print("Server said:", data.decode(), flush=True)
        self.transport.loseConnection()


class EchoFactory(protocol.ClientFactory):
    def buildProtocol(self, addr):
        return EchoClient()

    def clientConnectionFailed(self, connector, reason):
        print("Connection failed.", flush=True)
        reactor.stop()

    def clientConnectionLost(self, connector, reason):
        print("Connection lost.", flush=True)
        reactor.stop()


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    reactor.connectTCP(host, port, EchoFactory())
    reactor.run()


if __name__ == "__main__":
    main()
