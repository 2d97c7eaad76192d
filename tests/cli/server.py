"""An HTTP server that is not Rust, run by `procactor` (tests/cli.rs).

It takes its listening socket from fd 3 (systemd's socket activation: LISTEN_FDS, LISTEN_PID),
says READY=1 on NOTIFY_SOCKET once it serves, answers every request with
`pid <pid> app <APP> greeting <GREETING>`, and on SIGTERM stops accepting, finishes the requests
it has, and exits 0. Standard library only.
"""

import http.server
import os
import signal
import socket
import sys
import threading

if os.environ.get("LISTEN_PID") != str(os.getpid()) or int(os.environ.get("LISTEN_FDS", "0")) < 1:
    sys.exit("no socket handed over (LISTEN_FDS / LISTEN_PID)")

listener = socket.socket(fileno=3)
listener.setblocking(True)

ANSWER = "pid {} app {} greeting {}\n".format(
    os.getpid(), os.environ.get("APP", "?"), os.environ.get("GREETING", "")
).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(ANSWER)))
        if stopping.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, fmt, *args):
        print("request " + (fmt % args), flush=True)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def server_bind(self):
        pass

    def server_activate(self):
        pass


stopping = threading.Event()
server = Server(listener.getsockname(), Handler, bind_and_activate=False)
server.socket = listener


def on_term(_signo, _frame):
    stopping.set()
    # shutdown() waits for serve_forever, which runs in this thread's caller: use a thread.
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, on_term)

notify = os.environ.get("NOTIFY_SOCKET")
if notify:
    if notify.startswith("@"):
        notify = "\0" + notify[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1", notify)
print("serving on fd 3 as pid {}".format(os.getpid()), flush=True)
server.serve_forever(poll_interval=0.05)
server.server_close()
print("stopped", flush=True)
