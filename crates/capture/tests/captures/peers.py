"""A client and a server exchanging ISO 8583 frames on loopback, for making
real captures: the client sends each request frame of REQUESTS, the server
answers each with the next frame of RESPONSES. Both files hold frames back to
back (`switchboard encode --raw --framing F`); PREFIX is the framing's
length-prefix width and kind (ascii4 or binary2)."""
import socket, sys, threading, time

port, framing, requests, responses = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


def frames(data):
    out, at = [], 0
    while at < len(data):
        if framing == "ascii4":
            n, width = int(data[at:at + 4]), 4
        else:
            n, width = int.from_bytes(data[at:at + 2], "big"), 2
        out.append(data[at:at + width + n])
        at += width + n
    return out


def read_frame(conn):
    width = 4 if framing == "ascii4" else 2
    head = b""
    while len(head) < width:
        head += conn.recv(width - len(head))
    n = int(head) if framing == "ascii4" else int.from_bytes(head, "big")
    body = b""
    while len(body) < n:
        body += conn.recv(n - len(body))
    return head + body


reqs = frames(open(requests, "rb").read())
resps = frames(open(responses, "rb").read())
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(1)


def serve():
    conn, _ = listener.accept()
    for resp in resps:
        read_frame(conn)
        time.sleep(0.002)
        conn.sendall(resp)
    conn.close()


server = threading.Thread(target=serve)
server.start()
client = socket.create_connection(("127.0.0.1", port))
for req in reqs:
    client.sendall(req)
    read_frame(client)
client.close()
server.join()
