// An HTTP server that is not Rust, run by `procactor` (tests/cli.rs): it listens on the socket
// handed over at fd 3 (`listen({ fd: 3 })`), answers `pid <pid> app <APP> greeting <GREETING>`,
// and on SIGTERM drains: for a grace period it answers every request with `Connection: close`
// (so each keep-alive client is told to reconnect on its next request), then stops accepting
// (`server.close()`, which in Node >= 19 also closes connections that are idle — by then only
// those whose client was told) and exits 0 once open requests are done. Closing idle
// keep-alive connections at once would race with a client's next request on them.
'use strict';
const http = require('http');

if (process.env.LISTEN_PID !== String(process.pid) || !(Number(process.env.LISTEN_FDS) >= 1)) {
  console.error('no socket handed over (LISTEN_FDS / LISTEN_PID)');
  process.exit(1);
}

const answer = `pid ${process.pid} app ${process.env.APP || '?'} greeting ${process.env.GREETING || ''}\n`;
let stopping = false;
const server = http.createServer((req, res) => {
  console.log(`request ${req.method} ${req.url}`);
  const headers = { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(answer) };
  if (stopping) headers.Connection = 'close';
  res.writeHead(200, headers);
  res.end(answer);
});
server.keepAliveTimeout = 5000;

const GRACE_MS = 1000;
process.on('SIGTERM', () => {
  stopping = true;
  setTimeout(() => {
    server.close(() => { console.log('stopped'); process.exit(0); });
  }, GRACE_MS);
});

server.listen({ fd: 3 }, () => console.log(`serving on fd 3 as pid ${process.pid}`));
